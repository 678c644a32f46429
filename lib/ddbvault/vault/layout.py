"""Where things live in a vault and what the items table holds (format version 1).

    <vault>/items/                 Delta table, one row per live item (schema below)
    <vault>/changes/               Delta table, the change log: one row per applied stream record
    <vault>/_ddbvault/format.json  vault identity: format version, source table, key schema
    <vault>/_ddbvault/table.json   the newest table description (a copy; each export commit carries its own)
    <vault>/_ddbvault/runs/        one JSON record per job run, success or failure
    <vault>/_ddbvault/restores/    per-restore completion markers (resumable restores)
    <vault>/_ddbvault/versions/    per version: item count and content digest (see vault.integrity)
    <vault>/_ddbvault/writer.lock  the lease of the one export or merge writing the vault now
    <vault>/_ddbvault/staging/     a merge's stream records between reading and committing them
    <vault>/_ddbvault/incoming/    the deployed change-sink Lambda's landed batches (merge --source)
    <vault>/_ddbvault/exports/     where the deployed stack lets DynamoDB write its exports
    <vault>/_ddbvault/import-staging/  a restore by ImportTable's staged items
"""
from __future__ import annotations

FORMAT_VERSION = 1

ITEMS_DIR = "items"
CHANGES_DIR = "changes"
META_DIR = "_ddbvault"
VAULT_DIRS = (ITEMS_DIR, CHANGES_DIR, META_DIR)

# Columns of <vault>/items.
PK = "pk"                    # canonical hash-key value (string; numbers normalised, binary base64)
SK = "sk"                    # canonical range-key value, null when the table has no range key
ITEM = "item"                # the whole item as DynamoDB JSON text, as in DynamoDB's S3 export "Item"
ITEM_SIZE = "item_size"      # DynamoDB's size of the item in bytes (what a write of it costs)
SOURCE = "source"            # where the row's state came from: "export" or "stream"
CHANGE_TIME = "change_time"  # export: scan start; stream: ApproximateCreationDateTime (UTC)
CHANGE_SEQ = "change_seq"    # stream order: shard generation (6 digits) + SequenceNumber (40 digits); null: export
RUN_ID = "run_id"            # the job run that wrote the row
ITEM_DIGEST = "item_digest"  # the item's share of the version's integrity digest (see vault.integrity)

SOURCE_EXPORT = "export"
SOURCE_STREAM = "stream"
SEQ_WIDTH = 40

ITEM_COLUMNS = (PK, SK, ITEM, ITEM_SIZE, SOURCE, CHANGE_TIME, CHANGE_SEQ, RUN_ID, ITEM_DIGEST)


def items_schema():
    """The Spark schema of <vault>/items (imported lazily: executors of pure-Python code need no Spark)."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(PK, T.StringType(), False),
        T.StructField(SK, T.StringType(), True),
        T.StructField(ITEM, T.StringType(), False),
        T.StructField(ITEM_SIZE, T.LongType(), False),
        T.StructField(SOURCE, T.StringType(), False),
        T.StructField(CHANGE_TIME, T.TimestampType(), False),
        T.StructField(CHANGE_SEQ, T.StringType(), True),
        T.StructField(RUN_ID, T.StringType(), False),
        T.StructField(ITEM_DIGEST, T.LongType(), True),
    ])


def join(vault: str, *parts: str) -> str:
    """``vault`` joined with ``parts`` by ``/`` (works for s3://, s3a:// and local paths)."""
    return "/".join([vault.rstrip("/")] + [p.strip("/") for p in parts])
