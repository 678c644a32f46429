"""The job contract, built once for every job.

- A job's last line on stdout is one JSON object summarising the run: at least ``job``, ``status``
  (``ok`` or ``failed``), its counts and ``duration_s``.
- A failure exits non-zero with one line on stderr, ``ddbvault <job>: <what went wrong and what to do>``.
  Set ``DDBVAULT_DEBUG=1`` for the traceback as well.
- Finalizers registered on the :class:`Run` (the vault's run history) see the final summary, success or not.
- ``--metrics`` (any job), or ``DDBVAULT_METRICS=1`` in its environment, publishes the run's CloudWatch metrics
  (:mod:`ddbvault.metrics`) after the other finalizers; a failure to publish is a warning, never the exit code.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence

from ddbvault import cli
from ddbvault.errors import DdbVaultError, from_executor

log = logging.getLogger(__name__)


@dataclass
class Run:
    """One run of a job: its id, start time, and the summary it builds as it goes."""

    job: str
    run_id: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-")
                        + uuid.uuid4().hex[:8])
    started: float = field(default_factory=time.time)
    summary: Dict[str, Any] = field(default_factory=dict)
    finalizers: List[Callable[[Dict[str, Any]], None]] = field(default_factory=list)

    def final_summary(self, status: str, error: Optional[str] = None) -> Dict[str, Any]:
        out: Dict[str, Any] = {"job": self.job, "status": status, "run_id": self.run_id}
        out.update(self.summary)
        if error:
            out["error"] = error
        out["duration_s"] = round(time.time() - self.started, 3)
        return out


def configure_logging() -> None:
    level = logging.DEBUG if os.environ.get("DDBVAULT_DEBUG") == "1" else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "urllib3", "py4j", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def describe_failure(exc: BaseException) -> str:
    """One line for an exception: ours verbatim (also when raised in an executor), others by their first line."""
    if isinstance(exc, DdbVaultError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    found = from_executor(exc)
    if found is not None:
        return str(found)
    java = getattr(exc, "java_exception", None)
    if java is not None:
        text = str(java.toString()).splitlines()[0]
    return (f"unexpected {type(exc).__name__}: {text} "
            f"(rerun with DDBVAULT_DEBUG=1 for the traceback; report it if it is not an AWS access problem)")


def run_job(job: str, argv: Optional[Sequence[str]], parse_args: Callable[[Optional[Sequence[str]]], Any],
            body: Callable[[Any, Run], None]) -> int:
    """Parse ``argv``, run ``body(args, run)`` and honour the job contract; returns the exit code."""
    configure_logging()
    run = Run(job=job)
    status, error, code = "ok", None, 0
    argv, metrics_on = cli.take_metrics_flag(sys.argv[1:] if argv is None else argv)
    metrics_on = metrics_on or os.environ.get(cli.METRICS_VARIABLE) == "1"
    args = None
    try:
        args = parse_args(argv)  # a bad flag (UsageError from cli.JobArgumentParser) ends here, nothing done
        if getattr(args, "run_id", None):
            # The caller's id (a Step Functions execution name), so the run record is found from the execution.
            run = Run(job=job, run_id=args.run_id, started=run.started)
        body(args, run)
    except KeyboardInterrupt:
        status, error, code = "failed", "interrupted; rerun the same command to start again", 130
    except DdbVaultError as exc:
        status, error, code = "failed", describe_failure(exc), exc.exit_code
    except Exception as exc:
        if os.environ.get("DDBVAULT_DEBUG") == "1":
            log.exception("%s failed", job)
        status, error, code = "failed", describe_failure(exc), 1
    summary = run.final_summary(status, error)
    if metrics_on:
        run.finalizers.append(_metrics_finalizer(args))
    for finalize in run.finalizers:
        try:
            finalize(summary)
        except Exception as exc:
            log.warning("could not record the run: %s", exc)
    if error:
        print(f"ddbvault {job}: {error}", file=sys.stderr, flush=True)
    print(json.dumps(summary, sort_keys=True, default=str), flush=True)
    return code


def _metrics_finalizer(args: Any) -> Callable[[Dict[str, Any]], None]:
    """Publishes the summary's metrics in the vault's region (the stack's), named by the job's table and vault."""
    from ddbvault import metrics

    region = getattr(args, "vault_region", None) or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return metrics.finalizer(getattr(args, "table", None), getattr(args, "vault", None), region)


def main_exit(code: int) -> None:
    """Exit with ``code`` (a tiny wrapper so jobs read the same everywhere)."""
    sys.exit(code)
