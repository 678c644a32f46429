"""The floor under a job's fixed cost: a process that starts Spark as every ddbvault job does (the one session
builder), reads the vault's newest version of the items once (one small column, through Delta's log and Parquet
reader), prints one JSON line and exits. No DynamoDB, no checks, no writes.

    python bench/floor_job.py VAULT

A restore's fixed cost beyond its load, less this, is what the restore itself adds: the table's creation, the
vault's integrity check, the plan and the markers.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from ddbvault.session import build_session
from ddbvault.vault import items


def main(vault: str) -> None:
    started = time.perf_counter()
    spark = build_session("ddbvault-floor")
    session_s = time.perf_counter() - started
    row = items.read(spark, vault).selectExpr("count(1) AS n", "sum(item_size) AS bytes").first()
    spark.stop()
    print(json.dumps({"items": row["n"], "bytes": row["bytes"], "session_s": round(session_s, 2),
                      "total_s": round(time.perf_counter() - started, 2)}))


if __name__ == "__main__":
    main(sys.argv[1])
