"""One writer per vault: a lease held in ``<vault>/_ddbvault/writer.lock`` by the export or merge writing now.

On S3 the lease is taken with a conditional PutObject (``If-None-Match: *``: only one writer can create it),
renewed by its holder with ``If-Match`` on the ETag it wrote, and taken over once expired, again with
``If-Match`` on the stale lease's ETag, so two writers racing for an expired lease cannot both win. S3 orders
these requests itself, so the lease holds across clusters and accounts without another service (a DynamoDB
lock table would need one more resource per region and its own permissions). A local vault uses an
exclusive create and an atomic rename the same way. A killed job's lease expires after ``ttl_s``.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Optional, Tuple

from botocore.exceptions import BotoCoreError, ClientError

from ddbvault.errors import VaultBusyError, VaultError
from ddbvault.vault import layout, store

log = logging.getLogger(__name__)

LOCK_NAME = "writer.lock"
DEFAULT_TTL_S = 300.0
POLL_S = 2.0


def _now() -> datetime:
    return datetime.now(timezone.utc)


class WriterLock:
    """``with WriterLock(vault, job, run_id):`` holds the lease for the block; waits up to ``wait_s`` for it."""

    def __init__(self, vault: str, job: str, run_id: str, region: Optional[str] = None, *,
                 ttl_s: float = DEFAULT_TTL_S, wait_s: float = 0.0) -> None:
        self.vault, self.job, self.run_id, self.region = vault, job, run_id, region
        self.uri = layout.join(vault, layout.META_DIR, LOCK_NAME)
        self.ttl_s, self.wait_s = ttl_s, wait_s
        self.token = uuid.uuid4().hex
        self._tag: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.lost: Optional[str] = None

    # -- the lease body --------------------------------------------------------------------------------------

    def _body(self) -> bytes:
        return json.dumps({"job": self.job, "run_id": self.run_id, "token": self.token,
                           "host": socket.gethostname(), "expires_at": (_now() + timedelta(seconds=self.ttl_s))
                           .isoformat()}, sort_keys=True).encode("utf-8")

    # -- storage: S3 conditional writes, or the local filesystem ---------------------------------------------

    def _create(self) -> bool:
        s3 = store.split_s3(self.uri)
        if s3:
            try:
                answer = store.s3_client(self.region).put_object(Bucket=s3[0], Key=s3[1], Body=self._body(),
                                                                 IfNoneMatch="*")
            except ClientError as exc:
                if exc.response["Error"].get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                    return False
                raise
            self._tag = answer["ETag"]
            return True
        path = store.local_path(self.uri)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(self._body())
        self._tag = self.token
        return True

    def _read(self) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        s3 = store.split_s3(self.uri)
        if s3:
            try:
                answer = store.s3_client(self.region).get_object(Bucket=s3[0], Key=s3[1])
            except ClientError as exc:
                if exc.response["Error"].get("Code") in ("NoSuchKey", "404"):
                    return None, None
                raise
            return json.loads(answer["Body"].read()), answer["ETag"]
        path = store.local_path(self.uri)
        try:
            with open(path, "rb") as handle:
                body = json.loads(handle.read() or b"{}")
        except FileNotFoundError:
            return None, None
        return body, body.get("token")

    def _replace(self, tag: str) -> bool:
        """Write a fresh lease over the one whose tag is ``tag``; False when someone else changed it first."""
        s3 = store.split_s3(self.uri)
        if s3:
            try:
                answer = store.s3_client(self.region).put_object(Bucket=s3[0], Key=s3[1], Body=self._body(),
                                                                 IfMatch=tag)
            except ClientError as exc:
                if exc.response["Error"].get("Code") in ("PreconditionFailed", "ConditionalRequestConflict",
                                                          "NoSuchKey", "404"):
                    return False
                raise
            self._tag = answer["ETag"]
            return True
        path = store.local_path(self.uri)
        _body, found = self._read()
        if found != tag:
            return False
        if tag == self.token:  # renewing our own lease: nobody else writes it while it is ours
            store.write_text(self.uri, self._body().decode("utf-8"))
            return True
        aside = f"{path}.stale-{self.token}"
        try:
            os.rename(path, aside)  # one racer wins the rename; the others find the file gone
        except FileNotFoundError:
            return False
        os.remove(aside)
        return self._create()

    def _delete(self) -> None:
        s3 = store.split_s3(self.uri)
        if s3:
            try:
                store.s3_client(self.region).delete_object(Bucket=s3[0], Key=s3[1], IfMatch=self._tag)
            except ClientError as exc:
                log.warning("could not release the writer lease %s: %s", self.uri, exc)
            return
        _body, found = self._read()
        if found == self.token:
            os.remove(store.local_path(self.uri))

    # -- the protocol ------------------------------------------------------------------------------------------

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_s
        try:
            while True:
                if self._create():
                    break
                holder, tag = self._read()
                if holder is None:
                    continue  # released between our two calls: try again at once
                expires = datetime.fromisoformat(holder.get("expires_at", "1970-01-01T00:00:00+00:00"))
                if expires <= _now() and tag is not None and self._replace(tag):
                    log.warning("took over the expired writer lease of %s run %s on %s", holder.get("job"),
                                holder.get("run_id"), self.vault)
                    break
                if time.monotonic() >= deadline:
                    raise VaultBusyError(
                        f"{self.vault} is being written by {holder.get('job')} run {holder.get('run_id')} "
                        f"(host {holder.get('host')}; its lease runs until {holder.get('expires_at')}): wait for "
                        f"it to finish and rerun, or pass --lock-wait SECONDS to wait; a killed job's lease "
                        f"expires by itself")
                time.sleep(min(POLL_S, max(0.05, deadline - time.monotonic())))
        except (ClientError, BotoCoreError, OSError) as exc:
            raise VaultError(f"cannot take the writer lease {self.uri} ({exc}): check the vault URI, its "
                             f"region (--vault-region) and that this role may write it") from exc
        self._thread = threading.Thread(target=self._renew, name="ddbvault-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self._replace(self._tag or ""):
                    self.lost = "another writer took the lease over"
                    return
            except Exception as exc:  # the holder checks ``lost`` before each commit
                log.warning("could not renew the writer lease %s: %s", self.uri, exc)

    def check(self) -> None:
        """Raise before a commit when the lease was lost (expired while we could not renew it)."""
        if self.lost:
            raise VaultBusyError(f"the writer lease on {self.vault} was lost ({self.lost}); nothing more was "
                            f"committed: rerun the job")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._tag is not None and not self.lost:
            self._delete()

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
