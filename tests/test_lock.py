"""The vault's writer lease on S3 (moto honours If-None-Match and If-Match) and on a local path."""
from __future__ import annotations

import json
import threading
import time

import pytest

from ddbvault.errors import VaultBusyError
from ddbvault.vault import layout, lock, store


@pytest.fixture(params=["local", "s3"])
def vault(request, tmp_path, vault_bucket):
    if request.param == "local":
        return str(tmp_path / "vault")
    return f"s3://{vault_bucket}/lock-test-{time.time_ns()}"


def holder(vault):
    return store.read_json(layout.join(vault, layout.META_DIR, lock.LOCK_NAME))


def test_one_writer_at_a_time_and_the_lease_goes_on_release(vault):
    first = lock.WriterLock(vault, "export_table", "run-a")
    with first:
        assert holder(vault)["run_id"] == "run-a"
        with pytest.raises(VaultBusyError, match=r"is being written by export_table run run-a \(host .*--lock-wait"):
            lock.WriterLock(vault, "merge_increments", "run-b").acquire()
    assert holder(vault) is None
    with lock.WriterLock(vault, "merge_increments", "run-b"):
        assert holder(vault)["run_id"] == "run-b"


def test_a_waiting_writer_gets_the_lease_when_the_first_lets_go(vault):
    first = lock.WriterLock(vault, "export_table", "run-a")
    first.acquire()
    timer = threading.Timer(1.0, first.release)
    timer.start()
    started = time.monotonic()
    with lock.WriterLock(vault, "merge_increments", "run-b", wait_s=30):
        assert holder(vault)["run_id"] == "run-b"
        assert 0.9 <= time.monotonic() - started < 10
    timer.join()


def test_a_killed_writers_lease_expires_and_only_one_racer_takes_it_over(vault):
    dead = lock.WriterLock(vault, "merge_increments", "killed", ttl_s=0.5)
    assert dead._create()  # taken, then never renewed nor released: the job was killed
    time.sleep(0.7)
    winners = []

    def race(name):
        try:
            with lock.WriterLock(vault, "merge_increments", name):
                winners.append(name)
                time.sleep(0.5)
        except VaultBusyError:
            pass

    racers = [threading.Thread(target=race, args=(f"racer-{i}",)) for i in range(3)]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join()
    assert len(winners) >= 1
    assert len(set(winners)) == len(winners)
    # Never two at once: every winner held it alone (the later ones only after the earlier released).
    assert holder(vault) is None


def test_a_renewed_lease_outlives_its_ttl_and_a_lost_one_stops_commits(vault):
    with lock.WriterLock(vault, "merge_increments", "long", ttl_s=0.6) as held:
        time.sleep(1.5)  # renewed every 0.2 s
        with pytest.raises(VaultBusyError):
            lock.WriterLock(vault, "export_table", "other").acquire()
        held.check()
    body = dict(holder(vault) or {})
    assert body == {}
    sneaky = lock.WriterLock(vault, "merge_increments", "me", ttl_s=0.6)
    sneaky.acquire()
    uri = layout.join(vault, layout.META_DIR, lock.LOCK_NAME)
    store.write_text(uri, json.dumps({"job": "x", "run_id": "thief", "token": "t",
                                      "expires_at": "2999-01-01T00:00:00+00:00"}))
    deadline = time.monotonic() + 10
    while sneaky.lost is None and time.monotonic() < deadline:  # the next renewal (every 0.2 s) finds it out
        time.sleep(0.05)
    with pytest.raises(VaultBusyError, match="was lost"):
        sneaky.check()
    sneaky.release()
    assert holder(vault)["run_id"] == "thief"  # the lease that is not ours is left alone
