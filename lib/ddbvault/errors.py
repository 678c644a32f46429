"""Errors a caller (or an operator reading a job's stderr) can act on.

Every message says what failed and what to do next; jobs print ``str(error)`` as their one stderr line.
"""
from __future__ import annotations


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
