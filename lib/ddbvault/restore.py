"""Restore: rebuild a table from its vault (schema, indexes, settings, then items) in the recovery region.

The load runs on the executors with paced BatchWriteItem calls. It is resumable: the vault's items are hashed
by key into a fixed number of partitions, and each finished partition leaves a marker under
``_ddbvault/restores/<restore id>/``. The restore id names the vault version and the target table's own
creation time, so a rerun into the same table skips what finished, and a table created anew starts afresh.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ddbvault import codec, repair
from ddbvault.dynamo import budget as budget_service
from ddbvault.dynamo import importer, retry, wire
from ddbvault.dynamo import table as tables
from ddbvault.errors import TableError, UsageError, VaultError, raising_executor_errors
from ddbvault.progress import ProgressSender, ProgressServer
from ddbvault.vault import layout, metadata, pointintime, store

log = logging.getLogger(__name__)

ON_DEMAND_DEFAULT_WCU = budget_service.KINDS["write"].on_demand_default
ITEMS_PER_PARTITION = 50_000


@dataclass
class RestoreOptions:
    vault: str
    table: str
    region: str
    vault_region: Optional[str] = None
    as_of_version: Optional[int] = None
    as_of_time: Optional[datetime] = None
    max_write_units: Optional[float] = None
    write_percent: Optional[float] = None
    existing_table: bool = False
    rollback_source: bool = False
    allow_other_indexes: bool = False
    kms_key: Optional[str] = None
    billing_mode: Optional[str] = None
    writers_per_task: int = 4
    max_attempts: int = 12
    throttle_s: float = retry.RetryPolicy.throttle_s
    wire: bool = True  # the load sends the vault's item text as it is (see dynamo.wire); False: botocore's way
    method: str = "auto"                   # auto | import | batch-write (see dynamo.importer.choose)
    import_staging: Optional[str] = None   # s3://bucket/prefix in the recovery region for the import's files
    import_timeout_s: float = 12 * 3600.0
    import_poll_s: float = 15.0


def write_budget(description: Dict[str, Any], max_write_units: Optional[float],
                 write_percent: Optional[float]) -> Tuple[float, str]:
    """The load's write budget in WCU/s, from the replica table as created, and how it was chosen."""
    return budget_service.table_budget(description, "write", max_write_units, write_percent)


def restore_id(label: str, target: Dict[str, Any]) -> str:
    """Names one restore: what is restored (``v<version>`` or ``t<epoch>``) and the target table (ARN and
    creation time)."""
    basis = f"{label}|{target.get('TableArn')}|{target.get('CreationDateTime')}"
    return f"{label}-" + hashlib.sha256(basis.encode()).hexdigest()[:16]


def write_cost_multiplier(description: Dict[str, Any]) -> float:
    """An upper bound of the WCU a put costs per KB: the table and each index it may land in (GSIs and LSIs).
    Settled with what DynamoDB reports."""
    return 1.0 + len(description.get("GlobalSecondaryIndexes", [])) + len(description.get("LocalSecondaryIndexes", []))


def partitions_for(items: int, slots: int) -> int:
    return max(2 * slots, math.ceil(items / ITEMS_PER_PARTITION), 1)


@dataclass(frozen=True)
class LoadPlan:
    """What every load task needs to know (pickled to executors)."""

    table: str
    region: str
    key_names: Tuple[str, ...]
    markers: str
    vault_region: Optional[str]
    budget: Optional[budget_service.Endpoint]
    writers: int
    wcu_multiplier: float
    max_attempts: int
    progress: Optional[Tuple[str, int]]
    throttle_s: float = retry.RetryPolicy.throttle_s
    key_types: Tuple[str, ...] = ()   # the key attributes' types (S, N, B), hash then range
    wire: bool = True                 # send the stored item text as it is (dynamo.wire); False: decode, botocore


def load_records(plan: LoadPlan, rows: Iterator[Any]) -> Iterator[tuple]:
    """The writer's records for rows of (item text, item size, pk, sk): with ``plan.wire`` the text itself with
    its key taken from the vault's key columns (no item is parsed), else the decoded item for botocore."""
    if plan.wire:
        ranged = len(plan.key_types) > 1
        for row in rows:
            key = wire.key_tuple(plan.key_types, (row[2], row[3]) if ranged else (row[2],))
            yield wire.WireItem(row[0], key), int(row[1])
    else:
        for row in rows:
            yield codec.decode_item(row[0]), int(row[1])


def load_partition(plan: LoadPlan, index: int, rows: Iterator[Any]) -> Iterator[Dict[str, Any]]:
    """One Spark task: write its partition's items, then leave its marker; skip a partition already marked."""
    marker = layout.join(plan.markers, f"part-{index:05d}.json")
    done = store.read_json(marker, plan.vault_region)
    if done is not None:
        yield dict(done, skipped=True)
        return
    sender = ProgressSender(plan.progress)

    def records():
        for record in load_records(plan, rows):
            sender.add(items=1)
            yield record

    try:
        stats = repair.write_paced(plan, records())
        sender.add(units=stats.wcu, parts_done=1)
    finally:
        sender.close()
    result = dict(asdict(stats), partition=index, finished_at=datetime.now(timezone.utc).isoformat())
    store.write_json(marker, result, plan.vault_region)
    yield dict(result, skipped=False)


def prepare_table(meta: Dict[str, Any], opts: RestoreOptions, existing: Optional[Dict[str, Any]],
                  manifest: Optional[Dict[str, Any]], notes: List[str]) -> Tuple[Dict[str, Any], bool]:
    """The target table, created from the vault's capture unless it may be reused; (description, created)."""
    if existing is not None:
        source = existing.get("TableArn") == meta["table"].get("TableArn") and opts.region == meta["region"]
        if source and not opts.rollback_source:
            raise TableError(f"table {opts.table} in region {opts.region} is the table this vault protects: loading "
                             f"the vault into it would roll its items back while items written since stay, a mix "
                             f"of two points in time; restore into another --table (or --region), or pass "
                             f"--rollback-source if rolling the live table back is what you mean")
        if source:
            notes.append(f"rolled the source table {opts.table} back: it was made equal to the vault (items "
                         f"changed since were put back, items created since were deleted)")
        if not tables.key_schema_matches(meta, existing):
            raise TableError(f"table {opts.table} in region {opts.region} exists with another key schema "
                             f"({existing['KeySchema']}); it was left untouched: pick another --table")
        resuming = manifest is not None and manifest.get("table_arn") == existing.get("TableArn")
        if not (resuming or opts.existing_table or source):
            raise TableError(f"table {opts.table} already exists in region {opts.region}: pass --existing-table "
                             f"to load into it, or pick another --table")
        differences = tables.settings_differences(meta, tables.capture(opts.table, opts.region))
        indexes = tables.index_differences(differences)
        if indexes and not opts.allow_other_indexes:
            raise TableError(f"table {opts.table} in region {opts.region} has other indexes than the vault's table "
                             f"({'; '.join(indexes)}); it was left untouched: restore into a new table, or pass "
                             f"--allow-other-indexes to load it as it is")
        notes.extend(f"the existing table differs from the vault's: {d}" for d in differences)
        return tables.wait_active(opts.table, opts.region), False
    request, create_notes = tables.create_request(meta, opts.table, mode=opts.billing_mode, kms_key=opts.kms_key)
    notes.extend(create_notes)
    log.info("creating %s in %s (%s, %d GSIs, %d LSIs)", opts.table, opts.region, request["BillingMode"],
             len(request.get("GlobalSecondaryIndexes", [])), len(request.get("LocalSecondaryIndexes", [])))
    return tables.create(request, opts.region), True


def restore_table(opts: RestoreOptions, run, spark=None) -> Dict[str, Any]:
    """Rebuild ``opts.table`` in ``opts.region`` from ``opts.vault``; returns the run's figures."""

    from ddbvault.session import build_session, set_vault_region

    metadata.read_stamp(opts.vault, opts.vault_region)
    run.finalizers.append(lambda summary: metadata.record_run(opts.vault, summary, opts.vault_region))
    spark = set_vault_region(spark or build_session(f"ddbvault-{run.job}-{opts.table}"), opts.vault, opts.vault_region)
    view = pointintime.view(spark, opts.vault, opts.as_of_version, opts.as_of_time, opts.vault_region)
    version, meta = view.version, view.meta
    hash_key, range_key = tables.key_names(meta)
    notes: List[str] = []
    run.summary.update({"table": opts.table, "region": opts.region, "vault": opts.vault, "vault_version": version,
                        "as_of_time": view.as_of_time, "vault_check": view.integrity,
                        "source_table": meta["table_name"],
                        "source_region": meta["region"]})

    manifests = layout.join(opts.vault, layout.META_DIR, "restores")
    existing = tables.describe(opts.table, opts.region)
    method, why = choose_method(opts, meta, existing, view.frame)
    run.summary.update(method=method, method_reason=why)
    log.info("restore %s: method %s (%s)", opts.table, method, why)
    if method == "import":
        noted = len(notes)
        try:
            return restore_by_import(spark, opts, view, meta=meta, notes=notes, run=run)
        except importer.ImportNotAllowed as exc:
            if opts.method != "auto":
                raise
            # Nothing was created and the staging files are gone: the same restore, with BatchWriteItem.
            del notes[noted:]
            notes.append(f"ImportTable was not allowed, so the items were written with BatchWriteItem ({exc})")
            run.summary.update(method="batch-write", method_reason=f"{why}; but ImportTable was denied")
            log.warning("restore %s: %s; loading with BatchWriteItem", opts.table, exc)
    manifest = None
    if existing is not None:
        manifest_uri = layout.join(manifests, restore_id(view.label, existing), "manifest.json")
        manifest = store.read_json(manifest_uri, opts.vault_region)
    else:  # the budget flags must fit the table about to be created, or nothing is created
        request, _ = tables.create_request(meta, opts.table, mode=opts.billing_mode, kms_key=opts.kms_key)
        write_budget(dict(request, BillingModeSummary={"BillingMode": request["BillingMode"]}),
                     opts.max_write_units, opts.write_percent)
    target, created = prepare_table(meta, opts, existing, manifest, notes)
    if existing is not None and (manifest is None or manifest.get("status") == "done"):
        # Not the resumption of an unfinished load: make the table equal the vault, writing only what differs.
        budget, budget_source = write_budget(target, opts.max_write_units, opts.write_percent)
        log.info("repairing %s (%s) from %s %s: budget %.0f WCU/s (%s)", opts.table, opts.region, opts.vault,
                 view.label, budget, budget_source)
        run.summary.update(repair.repair_table(spark, opts, view.frame, meta=meta, target=target, budget=budget,
                                               wcu_multiplier=write_cost_multiplier(target), run_id=run.run_id),
                           table_created=False, write_budget_wcu=budget, mode="repair")
        return _finish(meta, opts, notes, run)
    rid = restore_id(view.label, target)
    markers = layout.join(manifests, rid)
    manifest_uri = layout.join(markers, "manifest.json")

    items = view.frame
    if manifest is None:
        checked = view.integrity or {}
        # The integrity check already counted this very version (not so a point in time: base plus changes).
        count = checked["items"] if checked.get("status") == "ok" and view.as_of_time is None else items.count()
        manifest = {"restore_id": rid, "table": opts.table, "region": opts.region, "table_arn": target["TableArn"],
                    "vault_version": version, "as_of_time": view.as_of_time, "items": count,
                    "partitions": partitions_for(count, spark.sparkContext.defaultParallelism),
                    "started_at": datetime.now(timezone.utc).isoformat(), "status": "loading"}
        store.write_json(manifest_uri, manifest, opts.vault_region)
    else:
        log.info("resuming restore %s: partitions with a marker are skipped", rid)
    partitions = int(manifest["partitions"])

    budget, budget_source = write_budget(target, opts.max_write_units, opts.write_percent)
    multiplier = write_cost_multiplier(target)
    run.summary.update({"restore_id": rid, "table_created": created, "partitions": partitions,
                        "write_budget_wcu": budget, "items_expected": manifest["items"]})
    log.info("restore %s v%d -> %s (%s): %d items in %d partitions; budget %.0f WCU/s (%s) for the whole job",
             opts.vault, version, opts.table, opts.region, manifest["items"], partitions, budget, budget_source)

    started = time.time()
    driver_host = budget_service.driver_host(spark)
    slots = spark.sparkContext.defaultParallelism
    with budget_service.BudgetService(budget, host=driver_host, unit_name="WCU",
                                      callers=min(partitions, slots) * opts.writers_per_task) as writes, \
            ProgressServer(f"restore {opts.table}", expected_items=manifest["items"], budget=budget, parts=partitions,
                           unit_name="WCU", part_name="partitions", advertise=driver_host) as progress:
        plan = LoadPlan(opts.table, opts.region, (hash_key,) + ((range_key,) if range_key else ()), markers,
                        opts.vault_region, writes.endpoint, opts.writers_per_task, multiplier, opts.max_attempts,
                        progress.address, opts.throttle_s, repair.key_types(meta), opts.wire)
        with raising_executor_errors():
            results = (repair.spread(items.select(layout.ITEM, layout.ITEM_SIZE, layout.PK, layout.SK), partitions)
                       .select(layout.ITEM, layout.ITEM_SIZE, layout.PK, layout.SK)
                       .rdd.mapPartitionsWithIndex(lambda index, rows: load_partition(plan, index, rows))
                       .collect())  # one small stats dict per partition, never items
    elapsed = time.time() - started
    run.summary["write_capacity"] = writes.summary()
    log.info("restore %s, its pace: %s", opts.table, run.summary["write_capacity"]["advice"])
    written = sum(r["items"] for r in results if not r["skipped"])
    skipped = sum(r["items"] for r in results if r["skipped"])
    if written + skipped != manifest["items"]:
        # Never report success on a count that does not add up: the manifest stays "loading" for a rerun.
        raise VaultError(f"the load of {opts.table} put {written + skipped} items but vault {view.label} holds "
                         f"{manifest['items']}: run verify_replica to see which, then rerun this restore")

    manifest.update(status="done", finished_at=datetime.now(timezone.utc).isoformat())
    run.summary.update({
        "items": written + skipped, "items_written": written, "items_skipped_resumed": skipped,
        "partitions_skipped": sum(1 for r in results if r["skipped"]),
        "consumed_wcu": round(writes.consumed, 1),
        "unprocessed_retries": sum(r["unprocessed_retries"] for r in results if not r["skipped"]),
        "throttle_retries": sum(r["retries"] for r in results if not r["skipped"]),
        "load_s": round(elapsed, 3), "items_per_s": round(written / elapsed, 1) if elapsed else None,
        "mode": "load",
    })
    log.info("restore %s loaded: %d items (%d written now, %d already done), %.1fs", opts.table,
             written + skipped, written, skipped, elapsed)
    _finish(meta, opts, notes, run)
    store.write_json(manifest_uri, manifest, opts.vault_region)
    return run.summary


def import_staging(opts: RestoreOptions) -> Optional[str]:
    """Where an import's files go: ``--import-staging``, else ``<vault>/_ddbvault/import-staging`` when the vault
    is on S3 in the recovery region (ImportTable reads a bucket of the table's region), else nowhere."""
    if opts.import_staging:
        return opts.import_staging.rstrip("/")
    if store.split_s3(opts.vault) and (opts.vault_region or opts.region) == opts.region:
        return layout.join(opts.vault, layout.META_DIR, "import-staging")
    return None


def choose_method(opts: RestoreOptions, meta: Dict[str, Any], existing: Optional[Dict[str, Any]],
                  frame) -> Tuple[str, str]:
    """``import`` or ``batch-write`` for this restore, and why (see ``dynamo.importer.choose``). An explicit
    ``--method import`` that cannot work is refused here, before anything is created or written."""
    lsis = len(meta["table"].get("LocalSecondaryIndexes", []))
    staging = import_staging(opts)
    if opts.method == "import":
        if opts.existing_table or existing is not None:
            raise UsageError(f"--method import creates a new table, and table {opts.table} "
                             f"{'exists' if existing is not None else 'is to be loaded (--existing-table)'} in "
                             f"region {opts.region}: use --method batch-write, or restore into another --table")
        if lsis:
            raise UsageError(f"table {meta['table_name']} has {lsis} local secondary index(es), which ImportTable "
                             f"cannot create: use --method batch-write (or auto)")
        if staging is None:
            raise UsageError(f"--method import needs S3 files in region {opts.region}, and vault {opts.vault} is not "
                             f"on S3 there: pass --import-staging s3://bucket/prefix (a bucket of {opts.region})")
    size = None
    if opts.method == "auto" and existing is None and not opts.existing_table and not lsis and staging:
        size = int(frame.agg({layout.ITEM_SIZE: "sum"}).collect()[0][0] or 0)
    return importer.choose(opts.method, existing_table=opts.existing_table or existing is not None, lsis=lsis,
                           vault_bytes=size, staging=staging)


def restore_by_import(spark, opts: RestoreOptions, view, *, meta: Dict[str, Any], notes: List[str],
                      run) -> Dict[str, Any]:
    """A new table made by ImportTable from the view's items staged as gzip DynamoDB JSON in the recovery region;
    then what ImportTable cannot set, then TTL and PITR (``_finish``). A failed import leaves no table behind."""
    request, create_notes = tables.create_request(meta, opts.table, mode=opts.billing_mode, kms_key=opts.kms_key)
    notes.extend(create_notes)
    staging = layout.join(import_staging(opts) or "", f"{opts.table}-{view.label}-{run.run_id}")
    bucket, prefix = store.split_s3(staging) or ("", "")
    region = opts.region
    importer.check_staging(bucket, prefix, region)
    params, after = importer.import_request(request, bucket, prefix, client_token=hashlib.sha256(
        f"{run.run_id}|{opts.table}|{region}".encode()).hexdigest()[:32])
    started = time.time()
    try:
        with raising_executor_errors():
            staged = (view.frame.select(layout.ITEM).rdd
                      .mapPartitionsWithIndex(lambda index, rows: [importer.stage_lines(
                          (row[0] for row in rows), bucket, f"{prefix}/part-{index:05d}{importer.STAGED_SUFFIX}",
                          region)])
                      .collect())
    except BaseException:
        store.delete_tree(staging, region)
        raise
    items = sum(s["items"] for s in staged)
    figures = {"staging": staging, "staged_items": items, "staged_bytes": sum(s["staged_bytes"] for s in staged),
               "source_bytes": sum(s["source_bytes"] for s in staged), "stage_s": round(time.time() - started, 3)}
    run.summary.update(figures)
    log.info("restore %s: %d items staged at %s (%d bytes gzip, %d source), %.1fs", opts.table, items, staging,
             figures["staged_bytes"], figures["source_bytes"], figures["stage_s"])
    imported_at = time.time()
    try:
        arn = importer.start(params, region)["ImportArn"]
    except BaseException:
        store.delete_tree(staging, region)
        raise
    run.summary["import_arn"] = arn
    try:
        final = importer.wait(arn, region, timeout_s=opts.import_timeout_s, poll_s=opts.import_poll_s)
    except TimeoutError as exc:
        raise TableError(f"ImportTable {arn} of table {opts.table} is still running after "
                         f"{opts.import_timeout_s / 60:.0f} minutes; it was left to finish and its files kept at "
                         f"{staging}: when DescribeImport says COMPLETED run verify_replica, if it FAILED delete table "
                         f"{opts.table}; or raise --import-timeout-minutes") from exc
    status = final.get("ImportStatus")
    imported = final.get("ImportedItemCount")
    errors = final.get("ErrorCount") or 0
    run.summary.update(import_status=status, imported_items=imported, import_errors=errors,
                       import_s=round(time.time() - imported_at, 3))
    if status != "COMPLETED" or errors or imported != items:
        deleted = importer.discard(opts.table, region, final.get("TableArn"))
        store.delete_tree(staging, region)
        cause = ": ".join(str(x) for x in (final.get("FailureCode"), final.get("FailureMessage")) if x) \
            or "no cause given"
        left = "the table it made was deleted" if deleted else "no table was left behind"
        raise TableError(f"ImportTable {arn} of table {opts.table} ended {status} ({cause}; {imported} of {items} "
                         f"items imported, {errors} errors): {left} and the staging files removed; check that "
                         f"DynamoDB may read {staging}, or rerun with --method batch-write")
    tables.wait_active(opts.table, region)
    notes.extend(importer.apply_after(opts.table, region, after))
    store.delete_tree(staging, region)
    elapsed = time.time() - started
    run.summary.update({
        "items": items, "items_written": items, "items_skipped_resumed": 0, "table_created": True,
        "consumed_wcu": 0.0, "load_s": round(elapsed, 3), "items_per_s": round(items / elapsed, 1) if elapsed else None,
        "mode": "import",
    })
    log.info("restore %s imported: %d items by %s, %.1fs", opts.table, items, arn, elapsed)
    return _finish(meta, opts, notes, run)


def _finish(meta: Dict[str, Any], opts: RestoreOptions, notes: List[str], run) -> Dict[str, Any]:
    """What every successful restore ends with, once the items are in, whichever way they got there (a new
    table's load, a resumed load, a repair of an existing table, a rerun of a finished restore): the source's
    point-in-time recovery and TTL (TTL only now, or items already past their expiry would vanish). Both are
    idempotent, so a rerun applies them again rather than trusting an earlier run that may have stopped before."""
    pitr = tables.enable_point_in_time_recovery(meta, opts.table, opts.region)
    if pitr:
        notes.append("point-in-time recovery enabled")
    ttl = tables.enable_ttl(meta, opts.table, opts.region)
    if ttl:
        notes.append(f"TTL enabled on attribute {ttl} after the load")
    run.summary.update(ttl_attribute=ttl, point_in_time_recovery=pitr, notes=notes)
    for note in notes:
        log.info("restore %s: %s", opts.table, note)
    return run.summary
