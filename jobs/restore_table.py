"""Rebuild a DynamoDB table from its vault (schema, indexes, settings, items), at any vault version.

    python jobs/restore_table.py --vault URI --table NAME [--region R] [--as-of-version N]
        [--max-write-units WCU_PER_S | --write-percent P] [--existing-table] [--kms-key ARN]
        [--billing-mode PAY_PER_REQUEST|PROVISIONED] [--method auto|import|batch-write]
        [--import-staging s3://bucket/prefix] [--import-timeout-minutes M] [--write-path wire|botocore]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence
from urllib.parse import urlparse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from ddbvault import aws, cli
from ddbvault.restore import RestoreOptions, restore_table
from ddbvault.runner import main_exit, run_job

JOB = "restore_table"


def staging_uri(text: str) -> str:
    """``s3://bucket/prefix`` (or s3a://): ImportTable reads S3 only."""
    parsed = urlparse(text)
    if parsed.scheme not in ("s3", "s3a") or not parsed.netloc:
        raise argparse.ArgumentTypeError(f"{text!r}: import staging is s3://bucket/prefix in the recovery region")
    return text


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = cli.parser(JOB, __doc__.splitlines()[0])
    cli.add_vault(parser)
    parser.add_argument("--table", required=True, help="name of the table to create (or load, --existing-table)")
    parser.add_argument("--region", help="the recovery region (default: AWS_REGION)")
    cli.add_as_of(parser, "restore the table")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--max-write-units", type=cli.positive,
                        help="write budget for the whole job, WCU per second")
    budget.add_argument("--write-percent", type=cli.percent,
                        help="write budget as a percent of the new table's write capacity; default 80")
    parser.add_argument("--existing-table", action="store_true",
                        help="load into an existing table of that name (its key schema must match)")
    parser.add_argument("--allow-other-indexes", action="store_true",
                        help="with --existing-table: load a table whose indexes differ from the vault's table")
    parser.add_argument("--rollback-source", action="store_true",
                        help="allow loading the vault into the very table it protects (rolls it back; see README)")
    parser.add_argument("--kms-key", help="KMS key ARN of the recovery region (default: the AWS-owned key)")
    parser.add_argument("--billing-mode", choices=("PAY_PER_REQUEST", "PROVISIONED"),
                        help="override the source table's billing mode")
    parser.add_argument("--method", choices=("auto", "import", "batch-write"), default="auto",
                        help="how items are loaded: ImportTable (new table without LSIs, no write capacity used), "
                             "BatchWriteItem, or auto: import from 1 GiB of items (see README); default auto")
    parser.add_argument("--import-staging", type=staging_uri,
                        help="s3://bucket/prefix in the recovery region for the import's files (default: under "
                             "the vault when it is on S3 in that region)")
    parser.add_argument("--import-timeout-minutes", type=cli.positive, default=720.0,
                        help="how long to wait for ImportTable to finish; default 720")
    parser.add_argument("--write-path", choices=("wire", "botocore"), default="wire",
                        help="BatchWriteItem bodies from the vault's text as it is (wire), or decoded and "
                             "serialised again by botocore (for comparison); default wire")
    parser.add_argument("--writers-per-task", type=cli.positive_int, default=4,
                        help="concurrent batch writers in a task")
    cli.add_retries(parser)
    cli.add_run_id(parser)
    args = parser.parse_args(argv)
    if args.existing_table and args.method == "import":
        parser.error("argument --method: import creates a new table; --existing-table loads with batch-write")
    return args


def body(args: argparse.Namespace, run) -> None:
    restore_table(RestoreOptions(
        vault=args.vault, table=args.table, region=aws.resolve_region(args.region), vault_region=args.vault_region,
        as_of_version=args.as_of_version, as_of_time=args.as_of_time,
        max_write_units=args.max_write_units, write_percent=args.write_percent,
        existing_table=args.existing_table, rollback_source=args.rollback_source,
        allow_other_indexes=args.allow_other_indexes, kms_key=args.kms_key,
        billing_mode=args.billing_mode, method=args.method, import_staging=args.import_staging,
        import_timeout_s=args.import_timeout_minutes * 60, wire=args.write_path == "wire",
        writers_per_task=args.writers_per_task, max_attempts=args.max_retries,
        throttle_s=args.max_throttle_minutes * 60), run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_job(JOB, argv, parse_args, body)


if __name__ == "__main__":
    main_exit(main())
