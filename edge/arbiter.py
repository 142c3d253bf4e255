"""Cross-door arbitration: a tag read at two doors within a window counts at the stronger one.

Every door of an agent that takes part (``arbitration_s > 0``) hands each finished pass of an
observed tag to the shared ``DoorArbiter`` as a claim, and gets back a decision: won (the door
makes its movement) or lost (a stray read; the door counts it). Deterministic under replay:

- Time is event time only. Each door reports its watermark (``advance``: no read older than
  this will follow); a claim is decided once every door's watermark has passed its last read
  plus the window plus the longest quiet time, so every rival pass has ended and been claimed.
- A claim wins when no rival (same tag, another door, passes within ``window_s`` of each other)
  is stronger: higher peak RSSI, then more reads, then the lower door name. Each claim is
  decided on its own by that rule, so the outcome does not depend on which door came first.
- A door tells the arbiter when a pass of a tag starts (``opened``), when it is observed
  (``observed``: read ``min_reads`` times) and when it ends without a claim (``closed``, a
  glimpse). A claim is not decided while another door has a pass of the same tag still going
  that started within the window of its last read and was observed by the time the claim is
  due (its last read plus the delay): that rival's claim is awaited, so the outcome does not
  depend on how far the watermarks move per ``advance``. A glimpse is not awaited (a door
  keeps a pass seen on one side open for its ``transition_s``); should it be observed later
  still, its claim loses to the one already won.
- A door whose watermark lags the most advanced one by more than ``max_wait_s`` (its reader is
  offline) is not waited for; its late claims lose to a rival that already won, so a backlog
  never doubles a movement.
- Claims are remembered ``history_s`` after their last read, then forgotten.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from floorsync.edge import wire
from floorsync.edge.config import PortalConfig

_NEG = float("-inf")


@dataclass(frozen=True, slots=True)
class Pass:
    """A finished pass of one observed tag at one door (the claim the arbiter decides)."""

    door: str
    tag: str  # EPC hex
    item: wire.Item
    first: datetime
    last: datetime
    first_t: float
    last_t: float
    end_t: float  # when the pass ended (lost, or its cycle closed)
    reads: int
    rssi: float | None  # peak
    antenna: int  # the antenna of the peak read
    movement: str | None  # receive | ship | None (no direction)
    why: str  # in | out | fixed | pallet | one side | backed out | unclear
    cycle: int  # the door's cycle the tag was last read in


@dataclass(slots=True)
class _Claim:
    p: Pass
    won: bool | None = None  # None: undecided


def _stronger(a: Pass, b: Pass) -> bool:
    ra = _NEG if a.rssi is None else a.rssi
    rb = _NEG if b.rssi is None else b.rssi
    if ra != rb:
        return ra > rb
    if a.reads != b.reads:
        return a.reads > b.reads
    return a.door < b.door


class DoorArbiter:
    """Shared by the doors of one agent; thread-safe (one lock, held briefly)."""

    def __init__(self, window_s: float = 2.0, *, max_wait_s: float = 30.0,
                 history_s: float = 600.0) -> None:
        self.window_s = window_s
        self.max_wait_s = max_wait_s
        self.history_s = history_s
        self._lock = threading.Lock()
        self._quiet: dict[str, float] = {}
        self._wm: dict[str, float] = {}
        self._pending: list[_Claim] = []
        self._by_tag: dict[str, list[_Claim]] = {}
        # tag -> door -> (first read of its pass, when it was observed: inf while a glimpse)
        self._open: dict[str, dict[str, tuple[float, float]]] = {}
        self._out: dict[str, list[tuple[Pass, bool]]] = {}
        self._released = _NEG
        self._pruned_at = _NEG

    @classmethod
    def for_portals(cls, portals: Iterable[PortalConfig]) -> DoorArbiter:
        """An arbiter with every door of a config joined up front (membership is then fixed)."""
        taking = [p for p in portals if p.arbitration_s > 0 and p.mode == "door"]
        arbiter = cls(max((p.arbitration_s for p in taking), default=2.0))
        for p in taking:
            arbiter.join(p.name, p.quiet_s)
        return arbiter

    def join(self, door: str, quiet_s: float) -> None:
        with self._lock:
            self._quiet[door] = max(quiet_s, self._quiet.get(door, 0.0))
            self._wm.setdefault(door, _NEG)
            self._out.setdefault(door, [])

    def doors(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._wm))

    @property
    def delay_s(self) -> float:
        """How long after a pass's last read it can be decided (0 with a single door)."""
        if len(self._quiet) < 2:
            return 0.0
        return self.window_s + max(self._quiet.values())

    def opened(self, door: str, tag: str, first_t: float) -> None:
        """A pass of ``tag`` started at ``door`` (its first read at ``first_t``)."""
        with self._lock:
            self._open.setdefault(tag, {})[door] = (first_t, float("inf"))

    def observed(self, door: str, tag: str, at_t: float) -> None:
        """The pass of ``tag`` at ``door`` is no longer a glimpse (read enough, at ``at_t``)."""
        with self._lock:
            doors = self._open.get(tag)
            if doors is not None and door in doors:
                doors[door] = (doors[door][0], at_t)

    def closed(self, door: str, tag: str) -> None:
        """The pass of ``tag`` at ``door`` ended without a claim (a glimpse)."""
        with self._lock:
            self._close(door, tag)

    def _close(self, door: str, tag: str) -> None:
        doors = self._open.get(tag)
        if doors is not None:
            doors.pop(door, None)
            if not doors:
                del self._open[tag]

    def submit(self, p: Pass) -> None:
        with self._lock:
            self._close(p.door, p.tag)
            claim = _Claim(p)
            self._pending.append(claim)
            self._by_tag.setdefault(p.tag, []).append(claim)

    def advance(self, door: str, watermark: float) -> None:
        """The door promises no read older than ``watermark`` (epoch seconds) will follow."""
        with self._lock:
            if watermark > self._wm.get(door, _NEG):
                self._wm[door] = watermark
            self._release(self._horizon(), force_door=None)

    def take(self, door: str) -> list[tuple[Pass, bool]]:
        """Decisions for ``door`` since the last call: (pass, won)."""
        with self._lock:
            out = self._out.get(door, [])
            self._out[door] = []
            return out

    def finish(self, door: str) -> None:
        """The door stops: decide its claims now, with what is known, and stop waiting for it."""
        with self._lock:
            self._wm[door] = float("inf")
            self._release(self._horizon(), force_door=door)

    def _horizon(self) -> float:
        marks = list(self._wm.values())
        if not marks:
            return _NEG
        top = max(m for m in marks)
        if top == float("inf"):
            finite = [m for m in marks if m != float("inf")]
            top = max(finite, default=float("inf"))
        live = [m for m in marks if m >= top - self.max_wait_s]
        return min(live) if live else top

    def _release(self, horizon: float, force_door: str | None) -> None:
        delay = self.delay_s
        if horizon > self._released:
            self._released = horizon
        window = self.window_s
        top = max((m for m in self._wm.values() if m != float("inf")), default=_NEG)

        def awaited(p: Pass) -> bool:  # a rival pass still going that may outrank this claim
            for door, (first_t, seen_t) in self._open.get(p.tag, {}).items():
                if (door != p.door and first_t <= p.last_t + window
                        and seen_t <= p.last_t + delay
                        and self._wm.get(door, _NEG) != float("inf")
                        and self._wm.get(door, _NEG) >= top - self.max_wait_s):
                    return True
            return False

        ready = [c for c in self._pending
                 if (c.p.last_t + delay <= horizon and not awaited(c.p))
                 or c.p.door == force_door]
        if not ready:
            return
        ready.sort(key=lambda c: (c.p.last_t + delay, c.p.door, c.p.tag))
        done = set(map(id, ready))
        self._pending = [c for c in self._pending if id(c) not in done]
        for claim in ready:
            p = claim.p
            won = True
            for rival in self._by_tag.get(p.tag, ()):
                q = rival.p
                if q.door == p.door or rival is claim:
                    continue
                if q.first_t > p.last_t + window or p.first_t > q.last_t + window:
                    continue
                if rival.won or _stronger(q, p):
                    won = False
                    break
            claim.won = won
            self._out.setdefault(p.door, []).append((p, won))
        self._prune(horizon)

    def _prune(self, horizon: float) -> None:
        if horizon == float("inf") or horizon < self._pruned_at + 10.0:
            return
        self._pruned_at = horizon
        limit = horizon - self.history_s - self.delay_s
        for tag in [t for t, cs in self._by_tag.items() if cs[-1].p.last_t < limit]:
            claims = self._by_tag[tag]
            if all(c.won is not None for c in claims):
                del self._by_tag[tag]
