"""Command-line pieces every job shares: a parser whose errors follow the job contract, and argument types that
check a flag's value before anything is read, written, created or started (Spark included)."""
from __future__ import annotations

import argparse
import math
import re
from typing import Callable, List, NoReturn, Optional, Sequence, Tuple
from urllib.parse import urlparse

from ddbvault.errors import UsageError
from ddbvault.timeutil import parse_time

VAULT_SCHEMES = ("s3", "s3a")
# A run id names a file (`_ddbvault/runs/<run id>.json`) and appears in S3 keys and Delta metadata. A Step Functions
# execution name (at most 80 characters) fits when it sticks to these characters; the extra 20 leave room for a
# step suffix (`<execution>.verify`) when one execution runs two jobs.
RUN_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")


class JobArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that raises :class:`UsageError` (one line, exit 2, a JSON summary) instead of printing
    its usage and exiting; ``--help`` still prints the help."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def parser(job: str, description: str) -> JobArgumentParser:
    return JobArgumentParser(prog=job, description=description)


def vault_uri(text: str) -> str:
    """``s3://bucket/prefix``, ``s3a://bucket/prefix`` or a local path; anything else is refused."""
    parsed = urlparse(text)
    if parsed.scheme in VAULT_SCHEMES:
        if not parsed.netloc:
            raise argparse.ArgumentTypeError(f"{text!r} names no bucket: use s3://bucket/prefix")
        return text
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and text[1:3] in (":\\", ":/")):
        if not text.strip():
            raise argparse.ArgumentTypeError("an empty vault path")
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: a vault is s3://bucket/prefix, s3a://bucket/prefix or a local "
                                     f"path, not {parsed.scheme}://")


def number(kind: Callable[[str], float], *, low: float, high: Optional[float] = None, low_open: bool = False,
           what: str = "a number") -> Callable[[str], float]:
    """An argparse type: ``kind(text)`` within [low, high] (``(low, high]`` with ``low_open``)."""

    def check(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        too_low = value <= low if low_open else value < low
        if too_low or (high is not None and value > high):
            bounds = f"{'above' if low_open else 'at least'} {low:g}" + (f" and at most {high:g}" if high else "")
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {bounds}")
        return value

    return check


positive_int = number(int, low=1, what="a whole number")
non_negative_int = number(int, low=0, what="a whole number")
positive = number(float, low=0, low_open=True)
non_negative = number(float, low=0)
percent = number(float, low=0, high=100, low_open=True)


def add_vault(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vault", required=True, type=vault_uri,
                   help="vault URI: s3://bucket/prefix, s3a://bucket/prefix or a local path")
    p.add_argument("--vault-region", help="the vault bucket's region (default: AWS_REGION)")


def add_as_of(p: argparse.ArgumentParser, what: str) -> None:
    when = p.add_mutually_exclusive_group()
    when.add_argument("--as-of-time", type=parse_time,
                      help=f"{what} as the table was at this moment (ISO-8601, UTC unless an offset is given)")
    when.add_argument("--as-of-version", type=non_negative_int, help=f"{what} as of this vault (Delta) version")


def add_retries(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-retries", type=positive_int, default=12,
                   help="attempts per DynamoDB call on server or connection errors before failing (at least 1)")
    p.add_argument("--max-throttle-minutes", type=positive, default=10.0, metavar="MINUTES",
                   help="how long one call may keep being throttled (backing off) before the job fails; minutes "
                        "of throttling are normal on a busy table (default 10)")


def add_lock_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lock-wait", type=non_negative, default=0.0, metavar="SECONDS",
                   help="wait this long for another export or merge of the vault to finish (default: fail at once)")


def run_id(text: str) -> str:
    """A caller's run id: 1 to 100 of ``A-Z a-z 0-9 . _ -`` (a Step Functions execution name restricted to those)."""
    if not RUN_ID.fullmatch(text) or text in (".", ".."):
        raise argparse.ArgumentTypeError(f"{text!r} is not a run id: use 1 to 100 letters, digits, '.', '_' or '-' "
                                         f"(for a Step Functions execution, name the execution so)")
    return text


def add_run_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-id", type=run_id,
                   help="this run's id (default: the start time and a random suffix); the run is recorded as "
                        "<vault>/_ddbvault/runs/<run id>.json, so the Step Functions state machines pass the "
                        "execution name")


METRICS_FLAG = "--metrics"
METRICS_VARIABLE = "DDBVAULT_METRICS"


def take_metrics_flag(argv: Sequence[str]) -> Tuple[List[str], bool]:
    """``argv`` without ``--metrics``, and whether it was there.

    Every job takes ``--metrics`` (publish the run's CloudWatch metrics, :mod:`ddbvault.metrics`); the job
    runner takes it off before the job's own parser sees the rest, so no job needs a flag of its own for it.

    >>> take_metrics_flag(["--table", "t", "--metrics"])
    (['--table', 't'], True)
    """
    rest = [arg for arg in argv if arg != METRICS_FLAG]
    return rest, len(rest) != len(argv)

