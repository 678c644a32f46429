"""CloudWatch metrics from a run's summary, for the stack's alarms (namespace ``ddbvault``, dimensions Table, Vault).

- ``RunFailed`` (every job): 1 when the run failed, else 0. The failed-run alarm watches its maximum.
- ``VaultLagSeconds`` (merge): how far the vault is behind the table, from the summary's ``lag_s`` (or its
  ``recoverable_until``). The staleness alarm on it *is* the recovery point objective: a merge that stops
  running stops publishing, and the alarm treats missing data as breaching.
- ``VerifyMismatches`` (verify): items missing, extra or different in the replica (or the vault's damaged
  versions when no table is given).

A job publishes them only when run with ``--metrics`` (see :mod:`ddbvault.runner`). Publishing is best effort: a
failure is logged as a warning and never changes the job's exit code.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

from ddbvault import aws

log = logging.getLogger(__name__)

NAMESPACE = "ddbvault"
RUN_FAILED = "RunFailed"
VAULT_LAG = "VaultLagSeconds"
VERIFY_MISMATCHES = "VerifyMismatches"
MERGE_JOB = "merge_increments"
VERIFY_JOB = "verify_replica"
MISMATCH_KINDS = ("missing", "extra", "different")
# CloudWatch refuses an empty dimension value; a vault-only verify has no table.
NO_TABLE = "-"


def lag_seconds(summary: Dict[str, Any], now: Optional[datetime] = None) -> Optional[float]:
    """The vault's lag behind its table from a merge summary: ``lag_s``, else now minus ``recoverable_until``.

    >>> lag_seconds({"lag_s": 12.5})
    12.5
    >>> lag_seconds({"recoverable_until": "2026-01-01T00:00:00+00:00"},
    ...             now=datetime(2026, 1, 1, 0, 1, tzinfo=timezone.utc))
    60.0
    """
    if isinstance(summary.get("lag_s"), (int, float)):
        return float(summary["lag_s"])
    until = summary.get("recoverable_until")
    if isinstance(until, str):
        moment = datetime.fromisoformat(until)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return round(((now or datetime.now(timezone.utc)) - moment).total_seconds(), 1)
    return None


def mismatches(summary: Dict[str, Any]) -> Optional[int]:
    """Items that differ between replica and vault (verify_replica), or damaged versions (vault-only verify)."""
    if any(kind in summary for kind in MISMATCH_KINDS):
        return sum(int(summary.get(kind) or 0) for kind in MISMATCH_KINDS)
    if isinstance(summary.get("versions_damaged"), list):
        return len(summary["versions_damaged"])
    return None


def metric_data(summary: Dict[str, Any], table: Optional[str] = None, vault: Optional[str] = None,
                now: Optional[datetime] = None) -> List[Dict[str, Any]]:
    """The ``MetricData`` a run's final summary publishes (pure: no AWS call)."""
    when = now or datetime.now(timezone.utc)
    dimensions = [{"Name": "Table", "Value": str(table or summary.get("table") or NO_TABLE)},
                  {"Name": "Vault", "Value": str(vault or summary.get("vault") or NO_TABLE)}]

    def datum(name: str, value: float, unit: str) -> Dict[str, Any]:
        return {"MetricName": name, "Dimensions": dimensions, "Timestamp": when, "Value": float(value), "Unit": unit}

    data = [datum(RUN_FAILED, 0 if summary.get("status") == "ok" else 1, "Count")]
    job = summary.get("job")
    if job == MERGE_JOB and summary.get("status") == "ok":
        lag = lag_seconds(summary, when)
        if lag is not None:
            data.append(datum(VAULT_LAG, max(lag, 0.0), "Seconds"))
    if job == VERIFY_JOB:
        found = mismatches(summary)
        if found is not None:
            data.append(datum(VERIFY_MISMATCHES, found, "Count"))
    return data


def publish(summary: Dict[str, Any], table: Optional[str] = None, vault: Optional[str] = None,
            region: Optional[str] = None) -> None:
    """Put the run's metrics in ``region`` (the vault's: where the stack and its alarms are). Never raises."""
    try:
        data = metric_data(summary, table, vault)
        aws.client("cloudwatch", region).put_metric_data(Namespace=NAMESPACE, MetricData=data)
        log.info("published %s to CloudWatch %s", ", ".join(d["MetricName"] for d in data), NAMESPACE)
    except Exception as exc:  # best effort: the run's outcome is the exit code, not its metrics
        log.warning("could not publish the run's CloudWatch metrics (the job's result stands): %s", exc)


def finalizer(table: Optional[str], vault: Optional[str], region: Optional[str]):
    """A :class:`ddbvault.runner.Run` finalizer that publishes the final summary."""
    return lambda summary: publish(summary, table, vault, region)
