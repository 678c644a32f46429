"""Errors a caller (or an operator reading a job's stderr) can act on.

Every message says what failed and what to do next; jobs print ``str(error)`` as their one stderr line.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator, Optional


class DdbVaultError(Exception):
    """Base of every error ddbvault raises on purpose; jobs exit non-zero with its message."""

    exit_code = 1


class UsageError(DdbVaultError):
    """A flag or argument is wrong or missing."""

    exit_code = 2


class TableError(DdbVaultError):
    """The DynamoDB table is missing, unreachable, or not what the job expects."""


class VaultError(DdbVaultError):
    """The vault path is unwritable, foreign, corrupt, or of another format version."""


class CapacityError(DdbVaultError):
    """Retries ran out while DynamoDB kept throttling or failing."""


class UnprocessedItemsError(CapacityError):
    """BatchWriteItem kept returning items as unprocessed after every retry."""


class VerifyMismatch(DdbVaultError):
    """The replica does not equal the vault."""


# How a ddbvault error raised in an executor's Python worker reads inside the JVM exception the driver gets.
_EXECUTOR_ERROR = re.compile(r"ddbvault\.[\w.]*?\.?(\w+(?:Error|Mismatch)): (.+)")


def from_executor(exc: BaseException) -> Optional[DdbVaultError]:
    """The ddbvault error a Spark task raised, rebuilt from the failed action's exception; None when none.

    A task's exception reaches the driver as a Py4JJavaError whose text holds the worker's Python traceback;
    callers should see the error type they can handle (CapacityError, ...), not Py4J's.
    """
    java = getattr(exc, "java_exception", None)
    if java is None:
        return None
    found = _EXECUTOR_ERROR.search(str(java.toString()) + "\n" + str(exc))
    if not found:
        return None
    kind = globals().get(found.group(1))
    if not (isinstance(kind, type) and issubclass(kind, DdbVaultError)):
        kind = DdbVaultError  # e.g. an ItemCodecError: its message says what it is
    return kind(found.group(2).strip())


@contextmanager
def raising_executor_errors() -> Iterator[None]:
    """Around a Spark action: a ddbvault error raised in a task is raised here as itself."""
    try:
        yield
    except Exception as exc:
        found = from_executor(exc)
        if found is None:
            raise
        raise found from exc


class StreamGapError(DdbVaultError):
    """Records the vault needs are gone (trimmed, another stream, no new images): only a new export helps."""


class ChangeRecordError(DdbVaultError):
    """A change record cannot be applied exactly (no new image, unknown event, keys that do not match)."""


class VaultBusyError(VaultError):
    """Another export or merge holds the vault's writer lease."""


class ExportError(DdbVaultError):
    """A DynamoDB export to S3 cannot be used: a missing or malformed manifest, a damaged or foreign data file,
    an export that failed or was not finished in time."""
