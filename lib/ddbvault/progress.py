"""Progress a person can follow in an EMR step log.

Executors send small UDP datagrams (items, capacity units, finished segments) to the driver every second or
so; the driver prints one line every few seconds: done, rate, capacity against the budget, and an ETA. A lost
datagram only makes a line a little low: results are counted from the Delta commit, never from here.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Optional, Tuple

log = logging.getLogger(__name__)


@dataclass
class Totals:
    items: int = 0
    units: float = 0.0
    parts_done: int = 0


class ProgressServer:
    """Driver side: collects datagrams and logs a line every ``every_s`` seconds while open."""

    def __init__(self, label: str, *, expected_items: Optional[int], budget: Optional[float], parts: int,
                 unit_name: str = "RCU", part_name: str = "segments", every_s: float = 5.0,
                 advertise: str = "127.0.0.1") -> None:
        self.label, self.expected, self.budget, self.parts = label, expected_items, budget, parts
        self.unit_name, self.part_name, self.every_s = unit_name, part_name, every_s
        self.totals = Totals()
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # The driver's own address only (what executors reach), never every interface of the machine.
        self._sock.bind((advertise, 0))
        self._sock.settimeout(0.5)
        self.address: Tuple[str, int] = (advertise, self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._started = time.time()
        self._threads = [threading.Thread(target=self._receive, daemon=True),
                         threading.Thread(target=self._report, daemon=True)]

    def __enter__(self) -> ProgressServer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        self._sock.close()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self._sock.recvfrom(65536)
                message = json.loads(data)
            except (socket.timeout, ValueError):
                continue
            except OSError:
                return
            with self._lock:
                self.totals.items += int(message.get("i", 0))
                self.totals.units += float(message.get("u", 0.0))
                self.totals.parts_done += int(message.get("p", 0))

    def line(self) -> str:
        with self._lock:
            items, units, parts = self.totals.items, self.totals.units, self.totals.parts_done
        elapsed = max(time.time() - self._started, 1e-6)
        rate = items / elapsed
        text = f"{self.label}: {items:,} items"
        if self.expected:
            text += f" of ~{self.expected:,} ({100.0 * items / self.expected:.0f}%)"
        text += f", {rate:,.0f} items/s, {units / elapsed:,.1f} {self.unit_name}/s"
        if self.budget:
            text += f" (budget {self.budget:,.0f})"
        text += f", {parts}/{self.parts} {self.part_name} done"
        if self.expected and rate > 0 and items < self.expected:
            text += f", ETA {int((self.expected - items) / rate)}s"
        return text

    def _report(self) -> None:
        while not self._stop.wait(self.every_s):
            log.info("%s", self.line())


class ProgressSender:
    """Executor side: accumulates counts and sends them at most once per ``every_s`` seconds."""

    def __init__(self, address: Optional[Tuple[str, int]], every_s: float = 1.0) -> None:
        self.address, self.every_s = address, every_s
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if address else None
        self._pending = Totals()
        self._last = time.time()
        self._lock = threading.Lock()

    def add(self, items: int = 0, units: float = 0.0, parts_done: int = 0) -> None:
        if self._sock is None:
            return
        with self._lock:
            self._pending.items += items
            self._pending.units += units
            self._pending.parts_done += parts_done
            if parts_done or time.time() - self._last >= self.every_s:
                self._flush_locked()

    def close(self) -> None:
        if self._sock is None:
            return
        with self._lock:
            self._flush_locked()
        self._sock.close()
        self._sock = None

    def _flush_locked(self) -> None:
        pending, self._pending, self._last = self._pending, Totals(), time.time()
        if not (pending.items or pending.units or pending.parts_done):
            return
        message = {"i": pending.items, "u": round(pending.units, 3), "p": pending.parts_done}
        try:
            self._sock.sendto(json.dumps(message).encode(), self.address)
        except OSError:
            pass  # progress is best effort; the job's results never depend on it
