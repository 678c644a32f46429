"""The change log, ``<vault>/changes``: an append-only Delta table with one row per applied change record.

Columns: the change row of ``ddbvault.changes.records`` (keys, event, new image as canonical text or null,
change time, stream order, raw sequence number, shard, event id, TTL-delete flag, run id), plus ``batch`` (the
merge batch that logged it) and ``day`` (UTC date of the change, the partition column). Each append carries,
in its commit's ``userMetadata``, the stream checkpoint reached with it: the per-shard positions are committed
atomically with the records they cover. No deletion vectors here (append-only), so every Delta reader,
delta-rs's pyarrow path included, reads it.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from ddbvault.vault import layout, metadata

CHANGES_DIR = layout.CHANGES_DIR
BATCH = "batch"
DAY = "day"


def path(vault: str) -> str:
    return layout.join(vault, CHANGES_DIR)


def exists(spark, vault: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path(vault))


def read(spark, vault: str):
    return spark.read.format("delta").load(path(vault))


def newest_checkpoint(spark, vault: str) -> Optional[Dict[str, Any]]:
    """The checkpoint committed with the newest append (None before the first merge)."""
    if not exists(spark, vault):
        return None
    found = metadata.newest_commit(spark, path(vault))
    return None if found is None else dict(found["meta"].get("checkpoint") or {}, version=found["version"])


def with_batch(rows, batch: int):
    """Change rows with the log's own columns added."""
    from pyspark.sql import functions as F

    return rows.withColumn(BATCH, F.lit(batch).cast("long")).withColumn(DAY, F.to_date(F.col("change_time")))


def append(rows, vault: str, user_metadata: str) -> None:
    """One commit: ``rows`` (with batch and day) and the checkpoint in ``user_metadata``. An empty ``rows`` still
    commits, so a checkpoint that moved without new records (a shard finished) is kept too."""
    (rows.write.format("delta").mode("append").partitionBy(DAY).option("userMetadata", user_metadata)
     .save(path(vault)))


def newest_per_key(rows):
    """One row per key: the newest in stream order (``change_seq``). Pure."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy(layout.PK, layout.SK).orderBy(F.col(layout.CHANGE_SEQ).desc())
    return rows.withColumn("_n", F.row_number().over(order)).where(F.col("_n") == 1).drop("_n")
