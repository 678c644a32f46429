"""Merge a table's changes into its vault: ordered, exactly once, with a change log for point in time.

    python jobs/merge_increments.py --table NAME --vault URI [--region R] [--vault-region R]
        [--until ISO-8601] [--follow SECONDS] [--lock-wait SECONDS] [--retention-days D]
        [--source s3://bucket/prefix --format lambda|kinesis|incremental-export [--start-export]]

Without --source the changes come from the table's DynamoDB stream; with it, from change files landed in S3 (in the
vault's region) by the shipped Lambda function, by Firehose from Kinesis Data Streams, or by DynamoDB's incremental
exports.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from ddbvault import aws, cli, timeutil
from ddbvault.changes import landed
from ddbvault.errors import UsageError
from ddbvault.merge import MergeOptions, merge_increments
from ddbvault.merge_files import check_sources
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
    parser.add_argument("--source", type=cli.vault_uri, metavar="S3_URI",
                        help="merge change files landed under this s3://bucket/prefix instead of reading the stream")
    parser.add_argument("--format", dest="source_format", choices=landed.FORMATS,
                        help="what --source holds: lambda (the shipped Lambda function's files), kinesis (Kinesis Data "
                             "Streams for DynamoDB records delivered by Firehose), incremental-export (DynamoDB's "
                             "incremental exports to S3)")
    parser.add_argument("--start-export", action="store_true",
                        help="incremental-export: first ask DynamoDB for the export from the vault's newest change "
                             "to now (at most 24 hours; the table needs point-in-time recovery) into --source, and "
                             "wait for it")
    parser.add_argument("--export-wait-minutes", type=cli.positive, default=180,
                        help="how long --start-export waits for the export (default 180)")
    cli.add_retries(parser)
    cli.add_run_id(parser)
    args = parser.parse_args(argv)
    try:
        check_sources(args.source, args.source_format, args.start_export, args.until)
    except UsageError as exc:
        parser.error(str(exc))
    return args


def body(args: argparse.Namespace, run) -> None:
    merge_increments(MergeOptions(
        table=args.table, vault=args.vault, region=aws.resolve_region(args.region), vault_region=args.vault_region,
        until=args.until, follow_s=args.follow, lock_wait_s=args.lock_wait, retention_days=args.retention_days,
        max_attempts=args.max_retries,
        throttle_s=args.max_throttle_minutes * 60, max_stream_reads=args.max_stream_reads, source=args.source,
        source_format=args.source_format, start_export=args.start_export,
        export_wait_s=args.export_wait_minutes * 60), run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_job(JOB, argv, parse_args, body)


if __name__ == "__main__":
    main_exit(main())
