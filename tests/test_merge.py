"""merge_increments against moto's stream (one shard), real Spark and Delta: the vault follows the table exactly,
exactly once, and answers for any second it holds."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import boto3
import deltalake
import pytest
from jobs_helpers import create_table, every_type, name, put_items, scan_all, texts

from ddbvault import codec
from ddbvault import merge as merge_module
from ddbvault.errors import StreamGapError, VaultBusyError, VaultError, VerifyMismatch
from ddbvault.export import ExportOptions, export_table
from ddbvault.merge import MergeOptions, merge_increments
from ddbvault.restore import RestoreOptions, restore_table
from ddbvault.runner import Run
from ddbvault.vault import changelog, integrity, items, layout, lock, maintenance, pointintime
from ddbvault.verify import VerifyOptions, verify_replica
from servers import REGION_A, REGION_B

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STREAM = "NEW_AND_OLD_IMAGES"


def make_table(client, made, prefix, stream=STREAM, n=12):
    table = name(prefix)
    create_table(client, table, [("pk", "S"), ("sk", "N")], stream=stream)
    made.append(table)
    put_items(client, table, [dict(every_type(i), pk={"S": f"p{i % 3}"}, sk={"N": str(i)}) for i in range(n)])
    return table


def exported(spark, ddb, tmp_path, prefix, **kwargs):
    """(client, table, vault): a new table with a stream, exported into a new local vault."""
    client, made = ddb
    table = make_table(client, made, prefix, **kwargs)
    vault = str(tmp_path / "vault")
    export(spark, table, vault)
    return client, table, vault


def export(spark, table, vault, **kwargs):
    return export_table(ExportOptions(table=table, vault=vault, region=REGION_A, segments=2, **kwargs),
                        Run(job="export_table"), spark)


def merge(spark, table, vault, **kwargs):
    """One merge, started in a later second than the writes before it: a merge reads up to the whole second it
    starts in, and leaves that second's records for the next merge."""
    _next_second()
    run = Run(job="merge_increments")
    merge_increments(MergeOptions(table=table, vault=vault, region=REGION_A, **kwargs), run, spark)
    return run.summary


def assert_same(got, want):
    """Two sorted lists of item texts, equal; the message names what differs."""
    assert got == want, {"only in vault": sorted(set(got) - set(want))[:3],
                         "only in table": sorted(set(want) - set(got))[:3], "sizes": (len(got), len(want))}


def vault_item_texts(spark, vault):
    return sorted(r[layout.ITEM] for r in items.read(spark, vault).select(layout.ITEM).collect())


def _next_second():
    time.sleep(1.15 - (time.time() % 1.0))


def key(pk, sk):
    return {"pk": {"S": pk}, "sk": {"N": str(sk)}}


def write_changes(client, table):
    """Every kind of change: type changes, nested edits, deletes, inserts of every type, one key written many
    times, one key deleted and inserted again."""
    client.put_item(TableName=table, Item=dict(key("p0", 0), n={"S": "now a string"}, l={"N": "7"}))
    client.update_item(TableName=table, Key=key("p1", 1), UpdateExpression="SET m.deep.l[1] = :v, m.#d = :w",
                       ExpressionAttributeNames={"#d": "new.key"},
                       ExpressionAttributeValues={":v": {"N": "-1E-130"}, ":w": {"BS": [b"\x00", b"\x01"]}})
    client.delete_item(TableName=table, Key=key("p2", 2))
    client.delete_item(TableName=table, Key=key("p0", 3))
    for i in range(100, 104):
        client.put_item(TableName=table, Item=dict(every_type(i), **key(f"new-{i}", i)))
    for round_ in range(7):
        client.put_item(TableName=table, Item=dict(key("p1", 4), round={"N": str(round_)}, e={"S": ""}))
    client.delete_item(TableName=table, Key=key("p2", 5))
    client.put_item(TableName=table, Item=dict(key("p2", 5), back={"BOOL": True}, b={"B": b""}))


@pytest.mark.smoke
def test_merge_follows_every_kind_of_change_exactly(spark, ddb, tmp_path):
    client, table, vault = exported(spark, ddb, tmp_path, "mrg-all")
    write_changes(client, table)

    first = merge(spark, table, vault)
    assert_same(vault_item_texts(spark, vault), texts(scan_all(client, table)))
    # The first merge replays the stream from its start (the 12 puts before the export too): newest wins.
    assert (first["records_read"], first["records_new"]) == (12 + 17, 12 + 17)
    assert (first["inserts"], first["modifies"], first["removes"]) == (12 + 5, 9, 3)
    assert (first["batch"], first["shards_read"], first["replayed_since_export"]) == (1, 1, True)
    log = changelog.read(spark, vault)
    assert log.count() == 29 and log.select("event_id").distinct().count() == 29
    removes = sorted((r.pk, r.sk, r.item) for r in log.where("event_name = 'REMOVE'").collect())
    assert removes == [("p0", "3", None), ("p2", "2", None), ("p2", "5", None)]
    assert log.where("ttl_delete").count() == 0
    version = items.newest_state(spark, vault)["version"]

    # Nothing new: items keeps its version and content; the log only moves its checkpoint.
    second = merge(spark, table, vault)
    assert (second["records_read"], second["records_new"], second["batch"]) == (0, 0, 2)
    assert second["vault_version"] == version == items.newest_state(spark, vault)["version"]
    assert_same(vault_item_texts(spark, vault), texts(scan_all(client, table)))
    assert changelog.read(spark, vault).count() == 29

    # More changes, merged on top: only the new records are read.
    client.delete_item(TableName=table, Key=key("p1", 4))
    client.put_item(TableName=table, Item=dict(key("p0", 6), s={"S": "third"}))
    third = merge(spark, table, vault)
    assert (third["records_read"], third["records_new"], third["replayed_since_export"]) == (2, 2, False)
    # Every merge version's integrity record, kept up to date from the changes alone, matches its content.
    for version in (first["vault_version"], third["vault_version"]):
        assert integrity.check(vault, version, items.read(spark, vault, version))["status"] == "ok"
    assert_same(vault_item_texts(spark, vault), texts(scan_all(client, table)))
    summary = verify_replica(VerifyOptions(vault=vault, table=table, region=REGION_A, segments=2), Run(
        job="verify_replica"), spark)
    assert (summary["same"], summary["missing"], summary["extra"], summary["different"]) == \
        (len(scan_all(client, table)), 0, 0, 0)


def _fail(*_args, **_kwargs):
    raise RuntimeError("killed here")


@pytest.mark.parametrize("where", ["before the log commit", "between the log and the items commits"])
def test_a_killed_merge_rerun_gives_the_exact_vault(spark, ddb, tmp_path, monkeypatch, where):
    client, table, vault = exported(spark, ddb, tmp_path, "mrg-kill")
    merge(spark, table, vault)
    write_changes(client, table)
    before_items = vault_item_texts(spark, vault)

    target = (changelog, "append") if where == "before the log commit" else (items, "merge_changes")
    with monkeypatch.context() as patched:
        patched.setattr(*target, _fail)
        with pytest.raises(RuntimeError, match="killed here"):
            merge(spark, table, vault)
    assert vault_item_texts(spark, vault) == before_items  # items untouched either way
    assert not os.path.exists(os.path.join(vault, layout.META_DIR, lock.LOCK_NAME))  # the lease was released
    logged_after_kill = changelog.read(spark, vault).count()
    assert logged_after_kill == (12 if where == "before the log commit" else 29)

    rerun = merge(spark, table, vault)
    assert_same(vault_item_texts(spark, vault), texts(scan_all(client, table)))
    log = changelog.read(spark, vault)
    assert log.count() == 29 and log.select("event_id").distinct().count() == 29
    # The batch the killed run logged was applied from the log; the rerun itself found nothing new.
    assert rerun["records_new"] == (17 if where == "before the log commit" else 0)


@pytest.mark.smoke
def test_as_of_time_answers_three_instants_exactly(spark, ddb, tmp_path):
    client, table, vault = exported(spark, ddb, tmp_path, "mrg-pitr")
    _next_second()
    snapshots = []
    for step in range(3):
        client.put_item(TableName=table, Item=dict(key("p0", 0), step={"N": str(step)}))
        client.delete_item(TableName=table, Key=key("p1", step + 1))
        client.put_item(TableName=table, Item=dict(every_type(step), **key(f"s{step}", step)))
        snapshots.append((datetime.now(timezone.utc), texts(scan_all(client, table))))
        _next_second()
        if step == 0:
            merge(spark, table, vault)  # the instants span two merges
    merge(spark, table, vault)

    for moment, expected in snapshots:
        got = pointintime.view(spark, vault, as_of_time=moment)
        assert sorted(r[layout.ITEM] for r in got.frame.select(layout.ITEM).collect()) == expected, moment
    assert vault_item_texts(spark, vault) == snapshots[-1][1]

    newest = changelog.newest_checkpoint(spark, vault)
    with pytest.raises(VaultError, match=r"outside what .* can answer; it can answer"):
        pointintime.view(spark, vault, as_of_time=datetime.fromisoformat(newest["cut"]) + timedelta(seconds=5))
    with pytest.raises(VaultError, match="outside what"):
        pointintime.view(spark, vault, as_of_time=snapshots[0][0] - timedelta(hours=1))


def test_a_re_enabled_stream_is_refused_and_items_untouched(spark, ddb, tmp_path):
    client, table, vault = exported(spark, ddb, tmp_path, "mrg-gap")
    # The table is deleted and created again under its name: its stream is a new one, and whatever was written
    # between the two is in neither. (moto 5.2.5 cannot re-enable a disabled stream, nor write to a table whose
    # stream is disabled, so re-creating the table is how the test gets a new stream ARN.)
    client.delete_table(TableName=table)
    client.get_waiter("table_not_exists").wait(TableName=table)
    create_table(client, table, [("pk", "S"), ("sk", "N")], stream=STREAM)
    client.put_item(TableName=table, Item=dict(key("new-life", 1), s={"S": "written to the new table"}))
    before = vault_item_texts(spark, vault)
    with pytest.raises(StreamGapError, match=r"stream was disabled or re-created .* run export_table"):
        merge(spark, table, vault)
    assert vault_item_texts(spark, vault) == before
    assert not changelog.exists(spark, vault)
    # The remedy works: a new export of the re-created table records the new stream, and merges follow it.
    with pytest.raises(VaultError, match="was deleted and created again; pass --table-recreated"):
        export(spark, table, vault)
    export(spark, table, vault, table_recreated=True)
    client.put_item(TableName=table, Item=dict(key("after", 2), s={"S": "x"}))
    merge(spark, table, vault)
    assert_same(vault_item_texts(spark, vault), texts(scan_all(client, table)))


def test_a_first_merge_too_long_after_the_export_is_refused(spark, ddb, tmp_path, monkeypatch):
    _, table, vault = exported(spark, ddb, tmp_path, "mrg-old", n=3)
    # The stream keeps 24 hours; here it "keeps" one second, and the export is older than that.
    monkeypatch.setattr(merge_module, "STREAM_RETENTION", timedelta(seconds=1))
    monkeypatch.setattr(merge_module, "RETENTION_MARGIN", timedelta(0))
    time.sleep(1.5)
    with pytest.raises(StreamGapError, match=r"scan started .* the stream keeps records for 24 hours, so changes "
                                             r"made since may be trimmed: run export_table"):
        merge(spark, table, vault)
    assert not changelog.exists(spark, vault)


def test_a_stream_without_new_images_is_refused(spark, ddb, tmp_path):
    _, table, vault = exported(spark, ddb, tmp_path, "mrg-keys", stream="KEYS_ONLY", n=3)
    with pytest.raises(StreamGapError, match=r"view type KEYS_ONLY, which carries no new item images"):
        merge(spark, table, vault)


def test_a_second_writer_is_refused_while_the_first_holds_the_vault(spark, ddb, tmp_path):
    client, table, vault = exported(spark, ddb, tmp_path, "mrg-lock", n=3)
    client.put_item(TableName=table, Item=dict(key("x", 1)))
    with lock.WriterLock(vault, "export_table", "other-run"):
        with pytest.raises(VaultBusyError, match="is being written by export_table run other-run"):
            merge(spark, table, vault)
        assert not changelog.exists(spark, vault)
    merge(spark, table, vault)
    assert_same(vault_item_texts(spark, vault), texts(scan_all(client, table)))


def test_delta_rs_reads_items_and_changes(spark, ddb, tmp_path):
    client, table, vault = exported(spark, ddb, tmp_path, "mrg-rs", n=6)
    write_changes(client, table)
    merge(spark, table, vault)

    found = deltalake.QueryBuilder().register("items", deltalake.DeltaTable(items.path(vault))) \
        .execute("SELECT item FROM items").read_all()
    assert sorted(found.column("item").to_pylist()) == texts(scan_all(client, table))
    log = deltalake.DeltaTable(changelog.path(vault)).to_pyarrow_table()
    assert sorted(log.column("event_id").to_pylist()) == sorted(
        r.event_id for r in changelog.read(spark, vault).select("event_id").collect())
    assert codec.decode_item(found.column("item").to_pylist()[0])


def test_restore_and_verify_as_of_a_moment_before_a_bad_deploy_also_after_compaction(spark, ddb, tmp_path):
    client, table, vault = exported(spark, ddb, tmp_path, "mrg-undo")
    _next_second()
    client.put_item(TableName=table, Item=dict(key("good", 1), s={"S": "before the deploy"}))
    good_moment, good = datetime.now(timezone.utc), texts(scan_all(client, table))
    _next_second()
    for i in range(6):  # the bad deploy: overwrites and deletes
        client.put_item(TableName=table, Item=dict(key(f"p{i % 3}", i), s={"S": "corrupted"}))
    client.delete_item(TableName=table, Key=key("good", 1))
    merge(spark, table, vault)

    replica = name("mrg-undo-rep")
    ddb_b = boto3.client("dynamodb", region_name=REGION_B)
    summary = restore_table(RestoreOptions(vault=vault, table=replica, region=REGION_B, as_of_time=good_moment),
                            Run(job="restore_table"), spark)
    try:
        assert texts(scan_all(ddb_b, replica)) == good
        assert summary["as_of_time"] == good_moment.isoformat() and summary["items"] == len(good)
        checked = verify_replica(VerifyOptions(vault=vault, table=replica, region=REGION_B, as_of_time=good_moment,
                                               segments=2), Run(job="verify_replica"), spark)
        assert (checked["same"], checked["missing"], checked["extra"], checked["different"]) == (len(good), 0, 0, 0)
        with pytest.raises(VerifyMismatch):  # the newest vault state is not what the replica holds
            verify_replica(VerifyOptions(vault=vault, table=replica, region=REGION_B, segments=2),
                           Run(job="verify_replica"), spark)
    finally:
        ddb_b.delete_table(TableName=replica)

    # Compaction, deletion-vector purge and vacuum keep both the newest state and the moment.
    files = maintenance.maintain(spark, vault, retention_days=7, compact_files=0)
    assert files["compacted"] is True and files["items_files"] == 1
    newest = items.newest_state(spark, vault)["version"]
    assert integrity.check(vault, newest, items.read(spark, vault, newest))["status"] == "ok"
    assert_same(vault_item_texts(spark, vault), texts(scan_all(client, table)))
    view = pointintime.view(spark, vault, as_of_time=good_moment)
    assert sorted(r[layout.ITEM] for r in view.frame.select(layout.ITEM).collect()) == good


def test_merge_job_follows_and_stops_cleanly_on_sigterm(spark, ddb, tmp_path):
    client, table, vault = exported(spark, ddb, tmp_path, "mrg-follow", n=4)
    env = dict(os.environ, DDBVAULT_SPARK_MASTER="local[1]", PYTHONUNBUFFERED="1")
    job = subprocess.Popen([sys.executable, os.path.join(REPO, "jobs", "merge_increments.py"), "--table", table,
                            "--vault", vault, "--region", REGION_A, "--follow", "1"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not changelog.exists(spark, vault):
            time.sleep(1)
        deadline = time.time() + 60
        client.put_item(TableName=table, Item=dict(key("followed", 1), s={"S": "merged by the running job"}))
        want = texts(scan_all(client, table))
        while time.time() < deadline and vault_item_texts(spark, vault) != want:
            time.sleep(1)
        job.send_signal(signal.SIGTERM)
        out, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "ok" and summary["merges"] >= 2 and summary["batch"] == summary["merges"]
    assert vault_item_texts(spark, vault) == want, err[-3000:]
    assert not os.path.exists(os.path.join(vault, layout.META_DIR, lock.LOCK_NAME))
