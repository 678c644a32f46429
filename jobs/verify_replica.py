"""Prove a replica table equals its vault, item by item; exit 0 only on an exact match.

    python jobs/verify_replica.py --vault URI --table NAME [--region R] [--as-of-version N | --as-of-time T]
    python jobs/verify_replica.py --vault URI          (no table: check every kept version of the vault)
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from ddbvault import aws, cli
from ddbvault.runner import main_exit, run_job
from ddbvault.verify import VerifyOptions, verify_replica, verify_vault

JOB = "verify_replica"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = cli.parser(JOB, __doc__.splitlines()[0])
    cli.add_vault(parser)
    parser.add_argument("--table", help="the replica table; without it, every kept version of the vault is "
                                         "checked against its integrity record")
    parser.add_argument("--region", help="the replica's region (default: AWS_REGION)")
    cli.add_as_of(parser, "compare with the vault")
    parser.add_argument("--segments", type=cli.number(int, low=1, high=1_000_000, what="a whole number"),
                        help="Scan TotalSegments for the replica")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--max-read-units", type=cli.positive,
                        help="read budget for the replica scan, RCU per second")
    budget.add_argument("--read-percent", type=cli.percent, help="read budget as a percent of the replica's RCU")
    cli.add_retries(parser)
    cli.add_run_id(parser)
    return parser.parse_args(argv)


def body(args: argparse.Namespace, run) -> None:
    (verify_replica if args.table else verify_vault)(VerifyOptions(
        vault=args.vault, table=args.table, region=aws.resolve_region(args.region), vault_region=args.vault_region,
        as_of_version=args.as_of_version, as_of_time=args.as_of_time,
        segments=args.segments, max_read_units=args.max_read_units,
        read_percent=args.read_percent, max_attempts=args.max_retries,
        throttle_s=args.max_throttle_minutes * 60), run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_job(JOB, argv, parse_args, body)


if __name__ == "__main__":
    main_exit(main())
