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

from ddbvault import aws, cli, timeutil
from ddbvault.merge import MergeOptions, merge_increments
from ddbvault.runner import main_exit, run_job
from ddbvault.vault import maintenance

JOB = "merge_increments"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = cli.parser(JOB, __doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="the DynamoDB table whose stream to merge")
    cli.add_vault(parser)
    parser.add_argument("--region", help="the table's region (default: AWS_REGION)")
    once = parser.add_mutually_exclusive_group()
    once.add_argument("--until", type=timeutil.parse_time,
                      help="merge the changes made before this moment (ISO-8601; default: the job's start)")
    once.add_argument("--follow", type=cli.number(float, low=1), metavar="SECONDS",
                      help="keep running and merge every SECONDS (at least 1: a merge reads up to a whole second); "
                           "SIGTERM stops after the current commit")
    cli.add_lock_wait(parser)
    parser.add_argument("--retention-days", type=cli.number(float, low=maintenance.MIN_RETENTION_DAYS),
                        default=maintenance.DEFAULT_RETENTION_DAYS,
                        help="point-in-time window that compaction and vacuum keep (default 7, at least 1)")
    parser.add_argument("--max-stream-reads", type=cli.positive, metavar="CALLS",
                        help="GetRecords and GetShardIterator calls per second for the whole job, however many shards "
                             "are read at once (default: 5 per shard read); the stream's shards share their read "
                             "limits with its other consumers")
    cli.add_retries(parser)
    cli.add_run_id(parser)
    return parser.parse_args(argv)


def body(args: argparse.Namespace, run) -> None:
    merge_increments(MergeOptions(
        table=args.table, vault=args.vault, region=aws.resolve_region(args.region), vault_region=args.vault_region,
        until=args.until, follow_s=args.follow, lock_wait_s=args.lock_wait, retention_days=args.retention_days,
        max_attempts=args.max_retries,
        throttle_s=args.max_throttle_minutes * 60, max_stream_reads=args.max_stream_reads), run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_job(JOB, argv, parse_args, body)


if __name__ == "__main__":
    main_exit(main())
