"""Merge a table's DynamoDB stream into its vault: ordered, exactly once, with a change log for point in time.

    python jobs/merge_increments.py --table NAME --vault URI [--region R] [--vault-region R]
        [--until ISO-8601] [--follow SECONDS] [--lock-wait SECONDS] [--retention-days D]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from ddbvault import aws, timeutil
from ddbvault.merge import MergeOptions, merge_increments
from ddbvault.runner import main_exit, run_job
from ddbvault.vault import maintenance

JOB = "merge_increments"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=JOB, description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="the DynamoDB table whose stream to merge")
    parser.add_argument("--vault", required=True, help="vault URI: s3://bucket/prefix or a local path")
    parser.add_argument("--region", help="the table's region (default: AWS_REGION)")
    parser.add_argument("--vault-region", help="the vault bucket's region (default: AWS_REGION)")
    parser.add_argument("--until", type=timeutil.parse_time,
                        help="merge the changes made before this moment (ISO-8601; default: the job's start)")
    parser.add_argument("--follow", type=float, metavar="SECONDS",
                        help="keep running and merge every SECONDS; SIGTERM stops after the current commit")
    parser.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long for another export or merge of the vault to finish (default: fail)")
    parser.add_argument("--retention-days", type=float, default=maintenance.DEFAULT_RETENTION_DAYS,
                        help="point-in-time window that compaction and vacuum keep (default 7)")
    parser.add_argument("--max-retries", type=int, default=12, help="attempts per DynamoDB call before failing")
    return parser.parse_args(argv)


def body(args: argparse.Namespace, run) -> None:
    merge_increments(MergeOptions(
        table=args.table, vault=args.vault, region=aws.resolve_region(args.region), vault_region=args.vault_region,
        until=args.until, follow_s=args.follow, lock_wait_s=args.lock_wait, retention_days=args.retention_days,
        max_attempts=args.max_retries), run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_job(JOB, argv, parse_args, body)


if __name__ == "__main__":
    main_exit(main())
