"""Integrity of the vault's versions: each records its item count and an order-independent digest of its content.

The digest is the sum of per-item hashes (the first 15 hex digits of the SHA-256 of the canonical item text, as
an integer), so it is independent of row order and file layout, can be kept up to date by a merge without reading
the whole table (subtract what a merge replaces, add what it writes), and is recomputed by restore and verify
with one aggregate over the version they read. A version whose content does not match its record (a lost
``add`` line, a truncated commit, a missing data file) is refused before anything is created or loaded.

Records live in the vault's own files, ``_ddbvault/versions/v<version>.json``, not in Delta's log (which log
cleanup deletes).
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from ddbvault.errors import VaultError
from ddbvault.vault import layout, store

log = logging.getLogger(__name__)

HASH_HEX = 15  # 60 bits: a sum over a billion items still fits decimal(38, 0) many times over


def item_hash(text: str) -> int:
    """One item's share of the digest (equals :func:`hash_column` on the same text)."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_HEX], 16)


def hash_column(item_col):
    """Spark: the item's share of the digest, as decimal(38, 0)."""
    from pyspark.sql import functions as F

    return F.conv(F.substring(F.sha2(item_col, 256), 1, HASH_HEX), 16, 10).cast("decimal(38,0)")


def share_column(item_col):
    """Spark: the item's share as a long (60 bits fit), for the items table's ``item_digest`` column."""
    return hash_column(item_col).cast("long")


def measure(frame) -> Tuple[int, int]:
    """(item count, digest) of an items DataFrame: one aggregate."""
    from pyspark.sql import functions as F

    row = frame.select(hash_column(F.col(layout.ITEM)).alias("h")).agg(
        F.count(F.lit(1)).alias("n"), F.sum("h").alias("d")).first()
    return int(row["n"]), int(row["d"] or 0)


# How long to wait for a written frame's observed digest (Spark delivers it when the write's job has finished).
OBSERVED_WAIT_S = 120.0


def observed(frame) -> Tuple[Any, Callable[[], Optional[int]]]:
    """``frame`` with the sum of its ``item_digest`` column observed as the action that writes it runs (Spark's
    ``Observation``: no second read of what was written), and a function giving that sum once the action has
    succeeded, or None when Spark's report did not arrive within ``OBSERVED_WAIT_S`` (then :func:`shares` of the
    written version gives it). Call the function only after the action succeeded: Spark's own wait never ends
    for an action that failed."""
    import threading

    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    observation = Observation()
    watched = frame.observe(observation, F.sum(F.col(layout.ITEM_DIGEST).cast("decimal(38,0)")).alias("d"))
    found: List[Any] = []

    def wait() -> None:
        found.append(observation.get.get("d"))

    def digest() -> Optional[int]:
        waiter = threading.Thread(target=wait, name="ddbvault-observed-digest", daemon=True)
        waiter.start()
        waiter.join(OBSERVED_WAIT_S)
        if not found:
            log.warning("Spark did not report the written rows' digest within %.0f s: reading it back",
                        OBSERVED_WAIT_S)
            return None
        return int(found[0] or 0)

    return watched, digest


def shares(frame) -> int:
    """The sum of an items DataFrame's ``item_digest`` column: its digest, as the rows' writer computed it (one
    column read, no hashing; :func:`check` later recomputes it from the text)."""
    from pyspark.sql import functions as F

    row = frame.agg(F.sum(F.col(layout.ITEM_DIGEST).cast("decimal(38,0)")).alias("d")).first()
    return int(row["d"] or 0)


def uri(vault: str, version: int) -> str:
    return layout.join(vault, layout.META_DIR, "versions", f"v{version:020d}.json")


def record(vault: str, version: int, items: int, digest: int, region: Optional[str] = None, **extra: Any) -> None:
    store.write_json(uri(vault, version), dict({"version": version, "items": items, "digest": str(digest)}, **extra),
                     region)


def recorded(vault: str, version: int, region: Optional[str] = None) -> Optional[Dict[str, Any]]:
    return store.read_json(uri(vault, version), region)


def check(vault: str, version: int, frame, region: Optional[str] = None) -> Dict[str, Any]:
    """Recompute ``frame`` (the items at ``version``) against its record; raises :class:`VaultError` on a
    difference. A version without a record (written before records existed, or by a job killed right after its
    commit) is reported as unrecorded, not refused."""
    found = recorded(vault, version, region)
    if found is None:
        log.warning("vault %s version %d has no integrity record; its content cannot be checked", vault, version)
        return {"version": version, "status": "unrecorded"}
    try:
        items, digest = measure(frame)
    except Exception as exc:  # a data file the log names is gone, or unreadable
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise VaultError(f"vault {vault} version {version} cannot be read whole ({first}): it is damaged; "
                         f"restore an earlier version (--as-of-version) or run a new export") from exc
    if (items, str(digest)) != (int(found["items"]), str(found["digest"])):
        raise VaultError(f"vault {vault} version {version} is damaged: it holds {items} items (digest {digest}) "
                         f"but was written with {found['items']} (digest {found['digest']}); nothing was created "
                         f"or loaded: restore an earlier version (--as-of-version) or run a new export")
    return {"version": version, "status": "ok", "items": items}


def versions(vault: str, region: Optional[str] = None) -> List[int]:
    """Versions with a record, oldest first."""
    names = store.list_names(layout.join(vault, layout.META_DIR, "versions"), region)
    return sorted(int(n[1:-5]) for n in names if n.startswith("v") and n.endswith(".json"))
