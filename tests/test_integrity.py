"""A damaged vault version is refused by restore and verify, and found by the vault-only check: a lost ``add``
line, a newest commit truncated to nothing, a missing data file."""
from __future__ import annotations

import glob
import os

import boto3
import pytest
from jobs_helpers import create_table, every_type, name, put_items

from ddbvault.errors import VaultError
from ddbvault.export import ExportOptions, export_table
from ddbvault.restore import RestoreOptions, restore_table
from ddbvault.runner import Run
from ddbvault.vault import integrity, items, layout
from ddbvault.verify import VerifyOptions, verify_vault
from servers import REGION_A, REGION_B


@pytest.fixture
def two_versions(spark, ddb, tmp_path):
    """A local vault with version 0 (20 items) and version 1 (35 items), both recorded."""
    client, made = ddb
    table = name("int")
    create_table(client, table, [("pk", "S")])
    made.append(table)
    put_items(client, table, [dict(every_type(i), pk={"S": f"k{i}"}) for i in range(20)])
    vault = str(tmp_path / "vault")
    for _ in range(2):
        export_table(ExportOptions(table=table, vault=vault, region=REGION_A, segments=4, readers_per_task=1),
                     Run(job="export_table"), spark)
        put_items(client, table, [dict(every_type(i), pk={"S": f"k{i}"}) for i in range(20, 35)])
    return vault


def commit_file(vault, version):
    return os.path.join(items.path(vault), "_delta_log", f"{version:020d}.json")


def drop_local_checksums(vault):
    """Hadoop's local filesystem keeps a hidden .crc beside each file and would catch the edit itself; S3 keeps
    none, so the damage has to be caught by the vault's own record."""
    for found in glob.glob(os.path.join(items.path(vault), "**", ".*.crc"), recursive=True):
        os.remove(found)


def check_vault(spark, vault):
    run = Run(job="verify_replica")
    try:
        verify_vault(VerifyOptions(vault=vault, table=None, region=REGION_B), run, spark)
        return None, run.summary
    except VaultError as exc:
        return str(exc), run.summary


def restore_refused(spark, vault, match):
    replica = name("int-rep")
    with pytest.raises(VaultError, match=match):
        restore_table(RestoreOptions(vault=vault, table=replica, region=REGION_B, max_write_units=1000),
                      Run(job="restore_table"), spark)
    tables = boto3.client("dynamodb", region_name=REGION_B).list_tables()["TableNames"]
    assert replica not in tables  # nothing created


def test_every_version_is_recorded_and_checks_whole(spark, two_versions):
    vault = two_versions
    assert [(r["version"], r["items"]) for r in (integrity.recorded(vault, v) for v in (0, 1))] == [(0, 20), (1, 35)]
    error, summary = check_vault(spark, vault)
    assert error is None
    assert [(c["version"], c["status"], c["items"]) for c in summary["checks"]] == [(0, "ok", 20), (1, "ok", 35)]


def test_a_commit_that_lost_an_add_line_is_refused(spark, two_versions):
    vault = two_versions
    path = commit_file(vault, 1)
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    adds = [i for i, line in enumerate(lines) if line.startswith('{"add"')]
    assert len(adds) >= 2
    del lines[adds[0]]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    drop_local_checksums(vault)

    restore_refused(spark, vault, r"version 1 is damaged: it holds \d+ items .* but was written with 35")
    error, summary = check_vault(spark, vault)
    assert error is not None and "versions [1] are damaged" in error
    assert [(c["version"], c["status"]) for c in summary["checks"]] == [(0, "ok"), (1, "damaged")]


def test_a_missing_data_file_is_refused(spark, two_versions):
    vault = two_versions
    with open(commit_file(vault, 1), encoding="utf-8") as handle:
        added = [line for line in handle if line.startswith('{"add"')]
    victim = added[0].split('"path":"', 1)[1].split('"', 1)[0]
    os.remove(os.path.join(items.path(vault), victim))
    drop_local_checksums(vault)
    restore_refused(spark, vault, "version 1 cannot be read whole")


def test_a_newest_commit_truncated_to_nothing_is_refused(spark, two_versions):
    vault = two_versions
    open(commit_file(vault, 1), "w").close()
    drop_local_checksums(vault)
    with pytest.raises(VaultError, match=r"version 1 is damaged|cannot be read whole|is damaged"):
        restore_table(RestoreOptions(vault=vault, table=name("int-rep"), region=REGION_B, max_write_units=1000),
                      Run(job="restore_table"), spark)
    assert layout.ITEMS_DIR in os.listdir(vault)


def test_a_malformed_stamp_and_a_garbled_commit_say_what_to_do(spark, two_versions):
    vault = two_versions
    stamp = os.path.join(vault, layout.META_DIR, "format.json")
    with open(stamp, encoding="utf-8") as handle:
        good = handle.read()
    with open(stamp, "w", encoding="utf-8") as handle:
        handle.write(good[: len(good) // 2])
    restore_refused(spark, vault, r"format.json is damaged: it is not valid JSON .* put back an earlier copy")
    with open(stamp, "w", encoding="utf-8") as handle:
        handle.write(good)

    with open(commit_file(vault, 1), "w", encoding="utf-8") as handle:
        handle.write("this is not a Delta commit\n")
    drop_local_checksums(vault)
    restore_refused(spark, vault, r"(the Delta log of .* cannot be read|version 1 is damaged|cannot be read whole)")
