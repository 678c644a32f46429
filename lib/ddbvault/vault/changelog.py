"""The change log, ``<vault>/changes``: an append-only Delta table with one row per applied change record.

Columns: the change row of ``ddbvault.changes.records`` (keys, event, new image as canonical text or null,
change time, stream order, raw sequence number, shard, event id, TTL-delete flag, run id), plus ``batch`` (the
merge batch that logged it) and ``day`` (UTC date of the change, the partition column). Each append carries,
in its commit's ``userMetadata``, the stream checkpoint reached with it: the per-shard positions are committed
atomically with the records they cover. No deletion vectors here (append-only), so every Delta reader,
delta-rs's pyarrow path included, reads it.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

from ddbvault.vault import layout, metadata, store

CHANGES_DIR = layout.CHANGES_DIR
BATCH = "batch"
DAY = "day"


def path(vault: str) -> str:
    return layout.join(vault, CHANGES_DIR)


def exists(spark, vault: str, region: Optional[str] = None) -> bool:
    return store.delta_table_exists(path(vault), region)


def schema():
    from pyspark.sql import types as T

    from ddbvault.changes.records import change_schema

    return T.StructType([*change_schema().fields, T.StructField(BATCH, T.LongType(), False),
                         T.StructField(DAY, T.DateType(), False)])


def read(spark, vault: str):
    return spark.read.format("delta").load(path(vault))


def newest_checkpoint(spark, vault: str, region: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The checkpoint committed with the newest append (None before the first merge)."""
    if not exists(spark, vault, region):
        return None
    found = metadata.newest_commit(spark, path(vault))
    return None if found is None else dict(found["meta"].get("checkpoint") or {}, version=found["version"])


def with_batch(rows, batch: int):
    """Change rows with the log's own columns added."""
    from pyspark.sql import functions as F

    return rows.withColumn(BATCH, F.lit(batch).cast("long")).withColumn(DAY, F.to_date(F.col("change_time")))


def append(spark, rows, vault: str, user_metadata: str, *, empty: bool) -> None:
    """One commit: ``rows`` (with batch and day) and the checkpoint in ``user_metadata``.

    Delta commits nothing for an append of no rows, so a batch without new records (``empty``) records its
    checkpoint (the cut moved on, a shard finished) in a commit of its own that changes one table property.
    """
    from delta.tables import DeltaTable

    from ddbvault.vault.items import commit_metadata

    location = path(vault)
    DeltaTable.createIfNotExists(spark).location(location).addColumns(schema()).partitionedBy(DAY).execute()
    if not empty:
        rows.write.format("delta").mode("append").option("userMetadata", user_metadata).save(location)
        return
    batch = (json.loads(user_metadata).get(metadata.COMMIT_KEY) or {}).get("batch")
    with commit_metadata(spark, user_metadata):
        spark.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES ('ddbvault.batch' = '{int(batch)}')")


def newest_per_key(rows):
    """One row per key: the newest in stream order (``change_seq``). Pure."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy(layout.PK, layout.SK).orderBy(F.col(layout.CHANGE_SEQ).desc())
    return rows.withColumn("_n", F.row_number().over(order)).where(F.col("_n") == 1).drop("_n")
