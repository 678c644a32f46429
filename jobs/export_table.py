"""Export a live DynamoDB table into its vault: a segmented, paced parallel scan, one atomic Delta commit.

    python jobs/export_table.py --table NAME --vault URI [--region R] [--segments N]
        [--max-read-units RCU_PER_S | --read-percent P] [--consistent-read]
    python jobs/export_table.py --table NAME --vault URI --from-export s3://B/P/AWSDynamoDB/<export-id>/
    python jobs/export_table.py --table NAME --vault URI --start-export --export-bucket B [--export-prefix P]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from ddbvault import aws, cli
from ddbvault.changes import native_export
from ddbvault.errors import ExportError
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
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--from-export", type=export_uri, metavar="URI",
                        help="build the vault from this DynamoDB full export (s3://bucket/prefix/AWSDynamoDB/<id>/, "
                             "DYNAMODB_JSON) instead of a scan: no read capacity, exact as of its exportTime")
    source.add_argument("--start-export", action="store_true",
                        help="have DynamoDB export the table (ExportTableToPointInTime; needs point-in-time "
                             "recovery) into --export-bucket, wait for it, and build the vault from it")
    parser.add_argument("--export-bucket", help="--start-export: the bucket DynamoDB writes the export to")
    parser.add_argument("--export-prefix", help="--start-export: the key prefix (default ddbvault-exports/<table>)")
    parser.add_argument("--export-bucket-owner", help="--start-export: the bucket owner's account id, when another")
    parser.add_argument("--export-wait-minutes", type=cli.positive, default=360.0, metavar="MINUTES",
                        help="--start-export: how long to wait for DynamoDB to finish the export (default 360)")
    args = parser.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    if args.start_export and not args.export_bucket:
        parser.error("argument --start-export: needs --export-bucket")
    for flag in ("--export-bucket", "--export-prefix", "--export-bucket-owner", "--export-wait-minutes"):
        if not args.start_export and any(a == flag or a.startswith(flag + "=") for a in given):
            parser.error(f"argument {flag}: only with --start-export")
    if args.from_export or args.start_export:
        chosen = "--from-export" if args.from_export else "--start-export"
        for flag in ("--segments", "--max-read-units", "--read-percent", "--consistent-read", "--readers-per-task"):
            if any(a == flag or a.startswith(flag + "=") for a in given):
                parser.error(f"argument {flag}: not allowed with argument {chosen} (an export reads no table)")
    return args


def export_uri(text: str) -> str:
    """--from-export: an export's folder, s3://bucket/prefix/AWSDynamoDB/<export-id>/."""
    try:
        return native_export.export_folder_uri(text)
    except ExportError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def body(args: argparse.Namespace, run) -> None:
    region = aws.resolve_region(args.region)
    export_table(ExportOptions(
        table=args.table, vault=args.vault, region=region, vault_region=args.vault_region,
        segments=args.segments, max_read_units=args.max_read_units, read_percent=args.read_percent,
        consistent_read=args.consistent_read, require_stream=args.require_stream,
        readers_per_task=args.readers_per_task, max_attempts=args.max_retries,
        throttle_s=args.max_throttle_minutes * 60,
        lock_wait_s=args.lock_wait, table_recreated=args.table_recreated, from_export=args.from_export,
        export_bucket=args.export_bucket if args.start_export else None, export_prefix=args.export_prefix,
        export_bucket_owner=args.export_bucket_owner, export_wait_s=args.export_wait_minutes * 60), run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_job(JOB, argv, parse_args, body)


if __name__ == "__main__":
    main_exit(main())
