"""Export a live DynamoDB table into its vault: a segmented, paced parallel scan, one atomic Delta commit.

    python jobs/export_table.py --table NAME --vault URI [--region R] [--segments N]
        [--max-read-units RCU_PER_S | --read-percent P] [--consistent-read]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from ddbvault import aws, cli
from ddbvault.export import ExportOptions, export_table
from ddbvault.runner import main_exit, run_job

JOB = "export_table"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = cli.parser(JOB, __doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="the DynamoDB table to export")
    cli.add_vault(parser)
    parser.add_argument("--region", help="the table's region (default: AWS_REGION)")
    parser.add_argument("--segments", type=cli.number(int, low=1, high=1_000_000, what="a whole number"),
                        help="Scan TotalSegments (default: ~128 MB each, 2 tasks per slot)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--max-read-units", type=cli.positive, help="read budget for the whole job, RCU per second")
    budget.add_argument("--read-percent", type=cli.percent,
                        help="read budget as a percent of the table's provisioned (or on-demand maximum) RCU; "
                             "default 50")
    parser.add_argument("--consistent-read", action="store_true", help="strongly consistent scan (2x the RCU)")
    parser.add_argument("--require-stream", action="store_true",
                        help="refuse to export a table without a NEW_IMAGE or NEW_AND_OLD_IMAGES stream")
    parser.add_argument("--readers-per-task", type=cli.positive_int, default=4,
                        help="concurrent segment readers in a task")
    cli.add_retries(parser)
    cli.add_run_id(parser)
    cli.add_lock_wait(parser)
    parser.add_argument("--table-recreated", action="store_true",
                        help="the table was deleted and created again under its name: let this vault follow it")
    return parser.parse_args(argv)


def body(args: argparse.Namespace, run) -> None:
    region = aws.resolve_region(args.region)
    export_table(ExportOptions(
        table=args.table, vault=args.vault, region=region, vault_region=args.vault_region,
        segments=args.segments, max_read_units=args.max_read_units, read_percent=args.read_percent,
        consistent_read=args.consistent_read, require_stream=args.require_stream,
        readers_per_task=args.readers_per_task, max_attempts=args.max_retries,
        throttle_s=args.max_throttle_minutes * 60,
        lock_wait_s=args.lock_wait, table_recreated=args.table_recreated), run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_job(JOB, argv, parse_args, body)


if __name__ == "__main__":
    main_exit(main())
