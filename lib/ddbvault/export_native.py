"""An export built from DynamoDB's own full export to S3 instead of a scan: no read capacity used, and a
consistent snapshot of the table at the export's ``exportTime``.

``export_table --from-export s3://b/p/AWSDynamoDB/<id>/`` ingests an export that exists; ``--export-bucket B``
(the job's ``--start-export``) asks DynamoDB for one first (ExportTableToPointInTime, which needs point-in-time
recovery on the table), waits for it and ingests it. Either way the data files named by the export's
manifest-files.json are read on the executors (a few files a task), each checked against its manifest line (item
count, MD5) and every record against the table's key schema, staged part by part exactly as a scan's segments
are (``vault.staging``: a rerun of the same export reads only the files not yet staged), and committed as one
items version through the scan export's own commit path (``export.commit_staged``, ``export.record_commit``).

The commit records ``scan_started`` = the export's ``exportTime``: the items are exact as of that moment, so the
next merge replays the stream (and the change log) from there. The table's description (keys, indexes, TTL,
tags, stream) still comes from DescribeTable; when the table's region cannot be reached, a vault that already
protects the table lends its last capture (``_ddbvault/table.json``), and an empty vault is refused.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, Optional, Tuple

from ddbvault import codec
from ddbvault import export_commit as scan_export
from ddbvault.changes import native_export
from ddbvault.dynamo import budget as budget_service
from ddbvault.dynamo import table as tables
from ddbvault.errors import ExportError, TableError, raising_executor_errors
from ddbvault.progress import ProgressSender, ProgressServer
from ddbvault.vault import integrity, layout, lock, metadata, staging, store

log = logging.getLogger(__name__)

SOURCE = "dynamodb_export"
FILES_PER_TASK = 4
STREAM_HOLDS = timedelta(hours=20)  # the stream keeps 24 hours; merges need every record since exportTime


@dataclass(frozen=True)
class FilePlan:
    """What every ingest task needs (pickled to executors)."""

    table: str
    export_arn: str
    region: Optional[str]            # the export bucket's S3 client region
    hash_key: Tuple[str, str]        # (name, S|N|B)
    range_key: Optional[Tuple[str, str]]
    files: Tuple[native_export.DataFile, ...]
    progress: Optional[Tuple[str, int]]


def key_types(meta: Dict[str, Any]) -> Tuple[Tuple[str, str], Optional[Tuple[str, str]]]:
    """((hash name, type), (range name, type) or None) from the captured description."""
    hash_key, range_key = tables.key_names(meta)
    types = {d["AttributeName"]: d["AttributeType"] for d in meta["table"].get("AttributeDefinitions", [])}
    return (hash_key, types.get(hash_key, "")), (None if range_key is None else (range_key, types.get(range_key, "")))


def item_record(plan: FilePlan, file: native_export.DataFile, number: int,
                record: Dict[str, Any]) -> Tuple[str, Optional[str], str, int]:
    """A full export's data line ``{"Item": {...}}`` as ``codec.to_vault_record`` gives it, after checking that the
    item carries the table's key attributes with their types (a record of another table does not)."""
    item = record.get("Item")
    if not isinstance(item, dict):
        raise ExportError(f"data file {file.uri} record {number} has no Item ({', '.join(sorted(record))[:80]}): it "
                          f"is not a full export's item line; pass a FULL_EXPORT of table {plan.table}")
    for name, kind in (plan.hash_key, plan.range_key or (None, None)):
        if name is None:
            continue
        value = item.get(name)
        if not isinstance(value, dict) or (kind and list(value) != [kind]):
            found = "missing" if value is None else "/".join(value) if isinstance(value, dict) else type(value).__name__
            raise ExportError(f"data file {file.uri} record {number} has no {kind} key attribute {name!r} ({found}): "
                              f"it is a record of another table, not of {plan.table}; pass an export of "
                              f"{plan.table}")
    try:
        return codec.to_vault_record(item, plan.hash_key[0], plan.range_key[0] if plan.range_key else None)
    except codec.ItemCodecError as exc:
        # from None: the driver rebuilds the first ddbvault error of the task's traceback, which must be this one
        raise ExportError(f"data file {file.uri} record {number} is not a valid DynamoDB item ({exc}): the export "
                          f"is damaged; take a new export") from None


def stage_files(plan: FilePlan, staged_at: str, vault_region: Optional[str],
                indexes: Iterator[int]) -> Iterator[Dict[str, Any]]:
    """One Spark task: each of its data files read whole and checked, then staged as part ``index`` of the export
    (one small dict per file). Files a previous attempt already staged are skipped."""
    already = staging.finished(staged_at, vault_region)
    sender = ProgressSender(plan.progress)
    try:
        for index in indexes:
            if index in already:
                continue
            file = plan.files[index]
            out = staging.SegmentFile(staged_at, index, vault_region)
            try:
                for number, record in enumerate(native_export.iter_data_file(file, plan.region), 1):
                    pk, sk, text, size = item_record(plan, file, number, record)
                    out.add(pk, sk, text, size, integrity.item_hash(text))
                done = out.finish()
            finally:
                out.discard()
            sender.add(items=done.items, parts_done=1)
            yield {"file": index, "items": done.items}
    finally:
        sender.close()


def _table_meta(opts, run, vault_region: Optional[str]) -> Dict[str, Any]:
    """The table's capture from DescribeTable & co; when the table cannot be described (its region is down, or it
    is gone) and the vault already protects it, the vault's last capture."""
    try:
        meta = tables.capture(opts.table, opts.region)
        run.summary["table_description"] = "DescribeTable"
        return meta
    except TableError as exc:
        kept = store.read_json(layout.join(opts.vault, layout.META_DIR, "table.json"), vault_region)
        if opts.from_export and kept and kept.get("table_name") == opts.table:
            log.warning("%s; using the table description the vault captured at %s (keys, indexes, TTL and tags as "
                        "they were then)", exc, kept.get("captured_at"))
            run.summary["table_description"] = f"the vault's capture of {kept.get('captured_at')}"
            return kept
        raise TableError(f"{exc} (an export is ingested with the table's description from DescribeTable, or from "
                         f"the vault's last capture when the vault already protects the table)") from exc


def _start(opts, meta: Dict[str, Any], run) -> str:
    """--start-export: check PITR, ask DynamoDB for a full export, wait; the export's folder."""
    description = meta["table"]
    pitr = ((meta.get("continuous_backups") or {}).get("PointInTimeRecoveryDescription") or {}) \
        .get("PointInTimeRecoveryStatus")
    if pitr != "ENABLED":
        raise ExportError(f"table {opts.table} in {opts.region} has point-in-time recovery "
                          f"{(pitr or 'unknown').lower()}; DynamoDB exports need it: enable it (aws dynamodb "
                          f"update-continuous-backups --table-name {opts.table} --point-in-time-recovery-specification "
                          f"PointInTimeRecoveryEnabled=true) or export with a scan (drop --start-export)")
    prefix = opts.export_prefix if opts.export_prefix is not None else f"ddbvault-exports/{opts.table}"
    arn = native_export.start_export(description["TableArn"], opts.export_bucket, prefix, opts.region,
                                     bucket_owner=opts.export_bucket_owner)
    run.summary["export_arn"] = arn
    started = time.time()
    done = native_export.wait_export(arn, opts.region, timeout_s=opts.export_wait_s,
                                     poll_s=min(10.0, max(0.2, opts.export_wait_s / 100)))
    folder = native_export.export_folder(done)
    run.summary["export_wait_s"] = round(time.time() - started, 1)
    log.info("export %s of %s completed: %s", arn, opts.table, folder)
    return folder


def check_export(manifest: native_export.ExportManifest, meta: Dict[str, Any], table: str,
                 region: Optional[str]) -> None:
    """Refuse an export that is not a whole full export of this very table, before anything is written."""
    if manifest.export_type != native_export.FULL_EXPORT:
        raise ExportError(f"{manifest.uri} is an {manifest.export_type}, not a full export: --from-export builds the "
                          f"vault from a FULL_EXPORT (merges read incremental exports)")
    arn = meta["table"].get("TableArn")
    if arn and manifest.table_arn != arn:
        raise ExportError(f"{manifest.uri} is an export of {manifest.table_arn}, not of table {table} ({arn}): pass "
                          f"an export of {table}")
    missing = native_export.missing_files(manifest, region)
    if missing:
        raise ExportError(f"data file {missing[0]}, which the manifest of {manifest.uri} lists, does not exist"
                          f"{f' ({len(missing) - 1} more missing)' if len(missing) > 1 else ''}: the export is "
                          f"incomplete; take a new export")


def stream_began(stream_arn: Optional[str]) -> Optional[datetime]:
    """When a stream began: its ARN's label (``.../stream/2015-06-27T00:48:05.899``) is its creation time, UTC."""
    label = (stream_arn or "").rsplit("/stream/", 1)[-1] if "/stream/" in (stream_arn or "") else ""
    try:
        return datetime.fromisoformat(label[:23]).replace(tzinfo=timezone.utc) if label else None
    except ValueError:
        return None


def ingest(opts, run, spark=None) -> Dict[str, Any]:
    """Build (or refresh) ``opts.vault`` from a DynamoDB full export; returns the run's figures."""
    from ddbvault.session import build_session, set_vault_region

    meta = _table_meta(opts, run, opts.vault_region)
    description = meta["table"]
    key_hash, key_range = key_types(meta)
    folder = opts.from_export or _start(opts, meta, run)
    manifest = native_export.read_manifest(folder, opts.region)
    check_export(manifest, meta, opts.table, opts.region)
    export_time = manifest.export_time
    assert export_time is not None  # read_manifest requires it of a full export
    view = scan_export.check_stream(description, opts.require_stream)
    stream_arn = description.get("LatestStreamArn")
    began = stream_began(stream_arn)
    if view and began is not None and began > export_time:
        raise ExportError(f"the stream of table {opts.table} began {began.isoformat()}, after the export's moment "
                          f"({export_time.isoformat()}): changes made in between are in neither, so a merge could "
                          f"not bring this export up to date; take a new export (--start-export)")
    age = datetime.now(timezone.utc) - export_time
    if stream_arn and age > STREAM_HOLDS:
        log.warning("export %s holds the table as of %s, %s ago: the stream keeps 24 hours, so a merge cannot bring "
                    "this version up to date unless the vault's change log holds the changes since then",
                    manifest.export_arn, export_time.isoformat(), str(age).split(".")[0])
    metadata.claim(opts.vault, meta, opts.vault_region, table_recreated=opts.table_recreated)
    run.finalizers.append(lambda summary: metadata.record_run(opts.vault, summary, opts.vault_region))

    spark = set_vault_region(spark or build_session(f"ddbvault-{run.job}-{opts.table}"), opts.vault, opts.vault_region)
    slots = spark.sparkContext.defaultParallelism
    total = len(manifest.files)
    staged_at = staging.root(opts.vault)
    started = time.time()
    run.summary.update({"table": opts.table, "region": opts.region, "vault": opts.vault, "source": SOURCE,
                        "export_arn": manifest.export_arn, "export": manifest.uri,
                        "export_time": export_time.isoformat(), "export_files": total, "stream_view": view})
    with lock.WriterLock(opts.vault, run.job, run.run_id, opts.vault_region, wait_s=opts.lock_wait_s) as writer:
        staged = staging.resume_or_start(opts.vault, opts.vault_region, {
            "run_id": run.run_id, "table_arn": description.get("TableArn"),
            "table_created": str(description.get("CreationDateTime")), "consistent_read": None,
            "stream_arn": stream_arn, "total_segments": total, "source": manifest.export_arn,
            "scan_started": export_time.isoformat()}, datetime.now(timezone.utc))
        kept = staging.finished(staged_at, opts.vault_region)
        per_task = max(1, min(FILES_PER_TASK, math.ceil(total / max(1, 2 * slots))))
        groups = scan_export.deal(sorted(set(range(total)) - set(kept)), per_task)
        run.summary.update({"files_reused": len(kept), "tasks": len(groups)})
        log.info("export %s from DynamoDB export %s (%s, %d items in %d files, %d kept from run %s) -> %s in %d tasks",
                 opts.table, manifest.export_arn, export_time.isoformat(), manifest.item_count, total, len(kept),
                 staged["run_id"], opts.vault, len(groups))
        driver_host = budget_service.driver_host(spark)
        with ProgressServer(f"export {opts.table} from {manifest.export_arn}",
                            expected_items=manifest.item_count or None, budget=None, parts=total,
                            part_name="files", advertise=driver_host) as progress:
            plan = FilePlan(opts.table, manifest.export_arn, opts.region, key_hash, key_range, manifest.files,
                            progress.address)
            if groups:
                try:
                    with raising_executor_errors():
                        spark.sparkContext.parallelize(groups, len(groups)).flatMap(lambda group: group) \
                            .mapPartitions(lambda files: stage_files(plan, staged_at, opts.vault_region, files)) \
                            .collect()  # one small dict per file, never items
                except ExportError:
                    # The export itself is bad: nothing staged from it is worth keeping for a rerun.
                    store.delete_tree(staged_at, opts.vault_region)
                    raise
        items, digest = scan_export.commit_staged(
            spark, opts, run, meta, writer=writer, total=total, change_time=export_time, stream_arn=stream_arn,
            stream_view=view, source=SOURCE, export_arn=manifest.export_arn, export_time=export_time.isoformat())
    elapsed = time.time() - started
    version, written = scan_export.record_commit(spark, opts, run, meta, manifest=staged, scanned=items,
                                                   digest=digest, change_time=export_time)
    run.summary.update({
        "items": written, "vault_version": version, "consumed_rcu": 0.0, "ingest_s": round(elapsed, 3),
        "items_per_s": round(written / elapsed, 1) if elapsed else None,
        "scan_started": export_time.isoformat(), "stream_arn": stream_arn,
    })
    log.info("export %s from %s done: %d items, vault version %d, no read capacity used, %.1fs", opts.table,
             manifest.export_arn, written, version, elapsed)
    return run.summary

