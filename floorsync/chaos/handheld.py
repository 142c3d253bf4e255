"""The handheld path: a scripted serial scanner on a pseudo-terminal, read by the edge's real
pyserial path; this process plays the operator and listens for the good-read feedback.

Ground truth: every item label carries a unique GS1 serial (AI 21). A label counts as
*generated* once the edge answered it with good-read feedback (the promise: durable before
the beep). A label the edge never answered (killed mid-scan) is *unconfirmed*: it may or may
not be in the ledger, but never twice. A bad read (nothing kept) is scanned again.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import threading
import time

from floorsync.chaos.processes import Edge

GTIN = "09501101530003"  # the handheld's item; each label its own serial
GOOD, BAD = b"\x1b7", b"\x1b8"  # Honeywell good / bad read, configured as the scanner feedback
FEEDBACK_TIMEOUT_S = 3.0


class Operator:
    """Types labels into the scanner's pty, one at a time, and waits for the feedback."""

    def __init__(self, master: int, edge: Edge, rng: random.Random, prefix: str) -> None:
        self.master = master
        os.set_blocking(master, False)
        self.edge = edge
        self.rng = rng
        self.prefix = prefix
        self.acked: list[str] = []  # serials the edge answered with a good read
        self.unconfirmed: list[str] = []  # no answer: the edge died mid-scan
        self.refused = 0  # bad reads (full disk): nothing kept, scanned again
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="operator", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self.master, 4096):
                pass

    def scan(self, code: str) -> str:
        """'good', 'bad' or 'silent' (no feedback within the timeout)."""
        self._drain()
        try:
            os.write(self.master, code.encode() + b"\r")
        except OSError:  # the terminal's buffer is full (nobody reads): the scan went nowhere
            return "silent"
        seen = b""
        deadline = time.monotonic() + FEEDBACK_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                break
            try:
                seen += os.read(self.master, 64)
            except OSError:  # no process has the terminal open at the moment
                time.sleep(0.05)
                continue
            if GOOD in seen:
                return "good"
            if BAD in seen:
                return "bad"
        return "silent"

    def _settle(self) -> None:
        """After silence: wait for the edge to be back, and for stray feedback to arrive."""
        while not self._stop.is_set() and not self.edge.up.wait(0.2):
            pass
        self._stop.wait(1.0)
        self._drain()

    def _location(self) -> None:
        for _ in range(50):
            while not self._stop.is_set() and not self.edge.up.wait(0.2):
                pass
            if self._stop.is_set() or self.scan("LOC:DOCK-1") == "good":
                return
            self._settle()

    def _run(self) -> None:
        self._location()
        n = 0
        while not self._stop.is_set():
            while not self._stop.is_set() and not self.edge.up.wait(0.2):
                pass
            n += 1
            serial = f"{self.prefix}{n:07d}"
            label = f"]C101{GTIN}21{serial}"
            for _attempt in range(100):
                if self._stop.is_set():
                    break
                outcome = self.scan(label)
                if outcome == "good":
                    self.acked.append(serial)
                    break
                if outcome == "silent":
                    self.unconfirmed.append(serial)
                    self._settle()
                    break
                self.refused += 1  # nothing kept: scan again (the location first, in case)
                self._stop.wait(self.rng.uniform(0.1, 0.4))
                self._location()
            self._stop.wait(self.rng.uniform(0.0, 0.02))
