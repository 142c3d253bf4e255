"""RFID dock doors: raw tag reads become one movement per tag per pass, or one count per cycle.

The model follows EPCglobal ALE, driven only by read timestamps and an explicit watermark
(``advance(now)``), never the wall clock, so a recorded stream replays to the same events:

- **Inputs are ordered by their own time.** ``add`` and ``gpi`` only buffer; ``advance(now)``
  sorts the buffer and processes everything up to ``now`` in timestamp order. ``now`` is a
  promise that nothing older follows. The agent keeps it in the reader's own time
  (``edge.readerclock``), so a backlog flushed after a disconnect (reads with their original
  reader timestamps), over however many ticks, or a reader clock behind the host, gives what
  the live stream gave. A read older than the watermark anyway is processed as it comes and
  counted ``late``. Quiet passes end at the time of each read as well as at the watermark, so
  one big batch gives what small ones do.
- **Read points.** ``antennas`` maps antenna numbers to ``outside`` / ``inside`` / ``door``;
  reads of unmapped antennas are ignored (``unmapped``); reads under ``rssi_min`` too (``weak``).
- **Filters** (``edge.doorfilter``). Only tags that decode, may move and pass the door's
  ``include`` / ``exclude`` patterns make passes; the others are counted ``excluded`` or
  ``unknown`` and reported, never fatal.
- **Smoothing.** A tag's pass starts at its first read. It is *glimpsed* until read
  ``min_reads`` times (or over ``min_ms``), then *observed*. A glimpsed tag silent for
  ``quiet_s`` expires quietly; an observed one is *lost* then and its pass ends. At a door
  telling direction, a pass seen on one side only waits ``transition_s`` instead (the dead
  zone between the antennas), one seen on both sides ``reversal_s`` (a forklift that reached
  the far side may back out through the dead zone; ``edge.direction``). Passes end in the
  order of their ends, before any later read is processed, so a batch of any size gives what
  the live stream did.
- **Direction** (``direction = "auto"``, ``edge.direction``): the side (outside/inside
  antennas) that saw the tag first and the side that saw it last, counting only reads within
  10 dB of the pass's peak (reflections do not make a side); a pass seen on one side only
  takes the direction of the passes that travelled with it, if they agree (a buried case), and
  so does a pass read too rarely for its own order to mean anything (``sparse``: a buried
  case, a parked case at the edge of a field), or it makes no movement.
  Outside then inside: ``receive`` to the door's location;
  inside then outside: ``ship`` from it. First and last on the same side (a forklift that enters
  and backs out, a pallet staged inside that is pulled back) or one side only: no movement
  (``unmoved = "observe"`` makes an ``observe`` event instead). ``in`` / ``out`` fix it for
  doors with one antenna; ``auto`` without an antenna map means ``in``. A tag that made a
  movement here does not make the same movement again within ``hold_s`` (``edge.doorholds``).
- **Arbitration.** Each observed pass is a claim to the shared ``DoorArbiter``
  (``edge.arbiter``): a tag read at two doors within ``arbitration_s`` counts at the door that
  read it stronger; the other door counts it ``stray``. A door tells the arbiter when a pass
  starts, so a claim waits for a rival pass of the same tag still going at another door.
- **Event cycles**, time-boxed (``cycle_s``, aligned to the epoch so replays cut the same
  cycles; a span without reads opens none) or, with ``gpi`` set, opened when the photo eye
  input goes on and closed once it is off and no new tag was observed for ``stable_s``. Reads
  outside a GPI cycle are ignored (``outside_reads``). A GPI cycle's close ends all its passes;
  a time-boxed cycle's does not (a pass may span cycles: it belongs to the cycle it was last
  read in). Each cycle yields a report (``edge.doorcycles``) once all its passes are decided.
- **Count mode** (``mode = "count"``): no movements; each cycle makes one ``count`` event of the
  location with every tag observed in it. A count is the full set of the location, so only a
  cycle the reader covered completely makes one: not the first time-boxed cycle after start or
  after the reader went offline when it began before the door was watching (its first read or
  watermark), not a cycle open when the reader went offline (``interrupt``), not one cut short
  by ``finish`` (agent stop). Such a cycle still gets its report, without a count. A cycle
  without a single read (not even of an excluded tag) opens no cycle and counts nothing: a deaf
  reader is not an empty location (mount a reference tag, excluded, so an empty location still
  reports empty).
- **Bounds.** At most ``max_tags`` distinct tags per cycle and in passes: reads of further tags
  are dropped and counted ``overflow``. Raw reads live only in memory, aggregated per pass; the
  first ``samples`` raw reads of each cycle go into its report (the agent stores them with
  ``Outbox.record_samples``).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from heapq import heappop, heappush
from operator import attrgetter

from floorsync.devices.base import TagRead
from floorsync.edge import wire
from floorsync.edge.arbiter import DoorArbiter, Pass
from floorsync.edge.config import PortalConfig
from floorsync.edge.direction import Cohort, Sides, Span, order, sparse
from floorsync.edge.doorcycles import Cycle, CycleReport
from floorsync.edge.doorevents import count_event, pass_event, read_sample
from floorsync.edge.doorfilter import EXCLUDED, DoorFilter
from floorsync.edge.doorholds import HoldList

_INF = math.inf
_ROLE = {"door": 0, "outside": 1, "inside": 2}
MAX_BUFFER = 500_000  # reads buffered ahead of the watermark before they are processed anyway
_AT = attrgetter("at")


@dataclass(frozen=True, slots=True)
class _Gpi:
    input: int
    state: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class _Gap:
    """The reader went offline after its reads up to ``at``: coverage is lost from there."""

    at: datetime


class _Tag:
    """One tag's pass in progress (mutable, slots: the hot path)."""

    __slots__ = ("antenna", "cycle", "first", "first_t", "item", "last", "last_t", "observed",
                 "reads", "rssi", "sides", "tag")

    def __init__(self, tag: str, item: wire.Item, read: TagRead, t: float, cycle: int,
                 sides: Sides | None) -> None:
        self.tag = tag
        self.item = item
        self.first = self.last = read.at
        self.first_t = self.last_t = t
        self.reads = 0
        self.rssi: float | None = None
        self.antenna = read.antenna
        self.sides = sides  # reads per side and strength (doors telling direction)
        self.observed = False
        self.cycle = cycle


class Door:
    """One door's floor logic. Not thread-safe: the agent serialises calls with a lock.

    ``add(read)`` and ``gpi(input, state, at)`` buffer inputs; ``advance(now)`` processes those
    up to ``now`` and returns the finished events; ``take_reports()`` returns finished cycle
    reports; ``finish()`` ends everything (agent stop).
    """

    def __init__(self, config: PortalConfig, *, arbiter: DoorArbiter | None = None,
                 tz: tzinfo | None = None) -> None:
        self.config = config
        self.tz = tz  # event times in this zone's offset; None: the host's
        self.name = config.name
        self.location = config.location
        self.counting = config.mode == "count"
        self._roles = {a: _ROLE[r] for a, r in config.roles.items()}
        sides = set(self._roles.values())
        if config.direction == "in" or (config.direction == "auto" and not self._roles):
            self._fixed: str | None = "receive"
        elif config.direction == "out":
            self._fixed = "ship"
        else:
            self._fixed = None if {1, 2} <= sides else "receive"
        self._filter = DoorFilter(config.include + config.company_prefixes, config.exclude)
        self._gpi = config.gpi
        self._quiet = config.quiet_s
        # a pass seen on one side only may be crossing the dead zone: it waits this long
        self._transition = max(config.quiet_s, config.transition_s)
        # a pass seen on both sides may yet back out through the dead zone: it waits this long
        self._reversal = max(config.quiet_s, config.reversal_s)
        self._cohort = Cohort(2 * self._transition) if self._fixed is None else None
        self._arbiter = None
        if arbiter is not None and not self.counting and config.arbitration_s > 0:
            if self.name not in arbiter.doors():
                arbiter.join(self.name, config.quiet_s)
            self._arbiter = arbiter
        self._pending: list[TagRead | _Gpi | _Gap] = []
        self._unsorted = False
        self._wm = -_INF
        self._active: dict[str, _Tag] = {}
        self._cycle: Cycle | None = None
        self._cycles: dict[int, Cycle] = {}  # open and closed, until reported
        self._next_cycle = 1
        self._decided: list[tuple[Pass, bool]] = []  # without an arbiter: decided at once
        self._emitted: list[tuple[float, str, wire.Event]] = []
        self._reports: list[CycleReport] = []
        self._holds = HoldList(config.hold_s)
        self._claims: dict[str, int] = {}  # tag -> passes ended, not yet decided
        self._claim_first: dict[str, float] = {}  # tag -> first read of its undecided passes
        self._cover_t: float | None = None  # watching since (None: not yet, or since a gap)
        self._next_sweep = -_INF  # no pass goes quiet before this
        # When to look at a pass again: (time, tag, its last read then). One entry per read,
        # taken lazily; an entry of an older read of the tag is dropped when it comes up.
        self._wake: list[tuple[float, str, float]] = []
        self.outside_reads = 0  # reads while no GPI cycle was open
        self.late_reads = 0

    # --- inputs -----------------------------------------------------------------------------

    def add(self, read: TagRead) -> None:
        pending = self._pending
        if pending and read.at < pending[-1].at:
            self._unsorted = True
        pending.append(read)

    def gpi(self, input: int, state: bool, at: datetime) -> None:
        """A general-purpose input changed (a photo eye: True while the beam is broken)."""
        if self._gpi is None or input != self._gpi:
            return
        if self._pending and at < self._pending[-1].at:
            self._unsorted = True
        self._pending.append(_Gpi(input, state, at))

    def interrupt(self) -> None:
        """The reader went offline: the cycle open after its last read so far is not complete
        (no count), nor the first time-boxed cycle after it that began before the next read."""
        at = None
        for item in self._pending:
            if at is None or item.at > at:
                at = item.at
        if at is None or at.timestamp() < self._wm:
            at = datetime.fromtimestamp(self._wm, UTC) if self._wm > -_INF else None
        if at is None:  # nothing seen yet: not watching
            self._cover_t = None
            return
        if self._pending and at < self._pending[-1].at:
            self._unsorted = True
        self._pending.append(_Gap(at))

    # --- outputs ----------------------------------------------------------------------------

    def advance(self, now: datetime) -> list[wire.Event]:
        """Process inputs up to ``now`` (a watermark); the events finished by then, in order."""
        pending = self._pending
        if self._unsorted:
            pending.sort(key=_AT)
            self._unsorted = False
        cut = bisect_right(pending, now, key=_AT)
        if len(pending) - cut > MAX_BUFFER:  # a reader clock far ahead: do not hoard memory
            cut = len(pending)
        if cut:
            batch = pending[:cut]
            del pending[:cut]
            self._feed(batch)
        now_t = now.timestamp()
        if now_t > self._wm:
            self._wm = now_t
            if self._cover_t is None:
                self._cover_t = now_t
        self._expire(self._wm)
        return self._finish_round()

    close_passes = advance  # the spine's name

    def finish(self) -> list[wire.Event]:
        """End everything now (agent stop): all buffered reads, the open cycle, every pass."""
        pending = self._pending
        pending.sort(key=_AT)
        self._pending = []
        self._unsorted = False
        self._feed(pending)
        end = self._wm
        for st in self._active.values():
            end = max(end, st.last_t)
        if self._cycle is not None:
            close_t = min(self._cycle.due, max(end, self._cycle.opened_t))
            if close_t < self._cycle.due:
                self._cycle.partial = True  # cut short: not the full set
            self._close(close_t)
        for st in sorted(self._active.values(), key=lambda s: (s.last_t, s.tag)):
            self._end(st, min(self._deadline(st), max(end, st.last_t)))
        self._active.clear()
        self._wake.clear()
        if self._arbiter is not None:
            self._arbiter.finish(self.name)
        return self._finish_round(final=True)

    def take_reports(self) -> list[CycleReport]:
        reports, self._reports = self._reports, []
        return reports

    @property
    def active_tags(self) -> int:
        return len(self._active)

    def unknown_reason(self, epc: str) -> str | None:
        """Why an EPC was not understood (for the agent's exception record), if it was not."""
        return self._filter.unknown_reason(epc)

    # --- the timeline -----------------------------------------------------------------------

    def _feed(self, batch: list[TagRead | _Gpi | _Gap]) -> None:
        cfg = self.config
        roles = self._roles
        rssi_min = cfg.rssi_min
        quiet = self._quiet
        min_reads = cfg.min_reads
        min_s = cfg.min_ms / 1000.0 if cfg.min_ms > 0 else _INF
        max_tags = cfg.max_tags
        nsamples = cfg.samples
        gpi_mode = self._gpi is not None
        auto = self._fixed is None
        cycle_s = cfg.cycle_s
        stable_s = cfg.stable_s
        verdicts = self._filter.verdicts
        active = self._active
        cycles = self._cycles
        wm = self._wm
        cyc = self._cycle
        for r in batch:
            if type(r) is _Gpi:
                self._on_gpi(r)
                cyc = self._cycle
                continue
            if type(r) is _Gap:
                self._on_gap(r)
                cyc = self._cycle
                continue
            assert isinstance(r, TagRead)
            t = r.at.timestamp()
            if self._cover_t is None:
                self._cover_t = t
            if cyc is not None and t >= cyc.due:
                self._close(cyc.due)
                cyc = None
            if t >= self._next_sweep:  # passes silent by now end first, in their time order
                self._sweep(t)
            if cyc is None:
                if gpi_mode:
                    self.outside_reads += 1
                    continue
                opened = math.floor(t / cycle_s) * cycle_s
                cyc = self._open(opened, opened + cycle_s)
            cyc.reads += 1
            if t < wm:
                cyc.late += 1
                self.late_reads += 1
            if len(cyc.samples) < nsamples:
                cyc.samples.append(read_sample(r))
            if roles:
                role = roles.get(r.antenna)
                if role is None:
                    cyc.unmapped += 1
                    continue
            else:
                role = 0
            rssi = r.rssi
            if rssi_min is not None and rssi is not None and rssi < rssi_min:
                cyc.weak += 1
                continue
            epc = r.epc
            verdict = verdicts.get(epc)
            if verdict is None:
                verdict = self._filter.classify(epc, cyc.new_unknown)
            if verdict.status:
                if verdict.status == EXCLUDED:
                    if len(cyc.excluded) < max_tags:
                        cyc.excluded.add(epc)
                elif len(cyc.unknown) < max_tags:
                    cyc.unknown.add(epc)
                continue
            st = active.get(epc)
            if st is not None and t - st.last_t >= quiet and t >= self._deadline(st):
                del active[epc]  # silent: that pass ended
                self._end(st, self._deadline(st))
                st = None
            if st is None:
                if len(active) >= max_tags and t >= self._next_sweep:
                    self._sweep(t)  # passes quiet by now end first, as they would live
                if (len(active) >= max_tags
                        or (len(cyc.seen) >= max_tags and epc not in cyc.seen)):
                    cyc.overflow += 1
                    continue
                assert verdict.item is not None
                st = _Tag(epc, verdict.item, r, t, cyc.id, Sides() if auto else None)
                active[epc] = st
                cyc.live += 1
                if self._arbiter is not None:
                    self._arbiter.opened(self.name, epc, t)
            elif st.cycle != cyc.id:
                cycles[st.cycle].live -= 1
                cyc.live += 1
                st.cycle = cyc.id
            if t > st.last_t:
                st.last_t, st.last = t, r.at
            elif t < st.first_t:
                st.first_t, st.first = t, r.at
            st.reads += r.seen
            if rssi is not None and (st.rssi is None or rssi > st.rssi):
                st.rssi, st.antenna = rssi, r.antenna
            if auto and role:
                st.sides.add(role - 1, t, rssi)  # type: ignore[union-attr]
            wake_t = st.last_t + quiet  # this pass goes quiet no earlier than this
            heappush(self._wake, (wake_t, epc, st.last_t))
            if wake_t < self._next_sweep:
                self._next_sweep = wake_t
            cyc.seen.add(epc)
            if st.observed:
                cyc.tags[epc] = st.item
            elif st.reads >= min_reads or st.last_t - st.first_t >= min_s:
                st.observed = True
                if self._arbiter is not None:
                    self._arbiter.observed(self.name, epc, t)
                cyc.tags[epc] = st.item
                cyc.last_new = t
                if gpi_mode and not cyc.trigger:
                    cyc.due = max(cyc.off_t, t) + stable_s
        self._cycle = cyc

    def _on_gpi(self, g: _Gpi) -> None:
        t = g.at.timestamp()
        cyc = self._cycle
        if cyc is not None and t >= cyc.due:
            self._close(cyc.due)
            cyc = None
        if g.state:
            if cyc is None:
                cyc = self._open(t, _INF)
            cyc.trigger = True
            cyc.due = _INF
        elif cyc is not None and cyc.trigger:
            cyc.trigger = False
            cyc.off_t = t
            cyc.due = max(t, cyc.last_new) + self.config.stable_s

    def _on_gap(self, g: _Gap) -> None:
        t = g.at.timestamp()
        cyc = self._cycle
        if cyc is not None and t >= cyc.due:
            self._close(cyc.due)
            cyc = None
        if cyc is not None:
            cyc.partial = True
        self._cover_t = None

    def _sweep(self, now_t: float) -> None:
        """End the passes quiet at ``now_t`` (a read's time, inside a batch)."""
        active = self._active
        for end_t, tag, st in self._due(now_t):
            del active[tag]
            self._end(st, end_t)
        self._next_sweep = self._wake[0][0] if self._wake else _INF

    def _open(self, opened_t: float, due: float) -> Cycle:
        cyc = Cycle(self._next_cycle, opened_t, due)
        if self._gpi is None and (self._cover_t is None or self._cover_t > opened_t):
            cyc.partial = True  # began before the door was watching
        self._next_cycle += 1
        self._cycles[cyc.id] = cyc
        self._cycle = cyc
        return cyc

    def _close(self, at_t: float) -> None:
        cyc = self._cycle
        assert cyc is not None
        cyc.closed_t = at_t
        self._cycle = None
        ended = self._due(at_t)
        if self._gpi is not None:  # a GPI cycle's close ends all its passes
            ending = {tag for _, tag, _ in ended}
            ended += [(at_t, st.tag, st) for st in self._active.values()
                      if st.cycle == cyc.id and st.tag not in ending]
            ended.sort()
        for end_t, tag, st in ended:
            del self._active[tag]
            self._end(st, end_t)
        if self.counting and not cyc.partial:
            self._emit(at_t, "", count_event(self.name, self.location, cyc, self.tz))

    def _expire(self, now_t: float) -> None:
        cyc = self._cycle
        if cyc is not None and now_t >= cyc.due:
            self._close(cyc.due)
        for end_t, tag, st in self._due(now_t):
            del self._active[tag]
            self._end(st, end_t)

    def _due(self, now_t: float) -> list[tuple[float, str, _Tag]]:
        """The passes that have ended by ``now_t`` (silent for ``quiet_s`` and past their
        deadline): (when, tag, pass), in time order. Only passes whose wake-up time has come
        are looked at (a heap), not every pass going."""
        wake, active = self._wake, self._active
        due: list[tuple[float, str, _Tag]] = []
        taken: set[str] = set()
        while wake and wake[0][0] <= now_t:
            _, tag, last_t = heappop(wake)
            st = active.get(tag)
            if st is None or st.last_t != last_t or tag in taken:
                continue  # ended already, or read since: a later entry stands for it
            deadline = self._deadline(st)
            if deadline <= now_t:
                due.append((deadline, tag, st))
                taken.add(tag)
            else:
                heappush(wake, (deadline, tag, last_t))
        due.sort()
        return due

    def _end(self, st: _Tag, end_t: float) -> None:
        """A pass ended (the caller removed it from the active ones)."""
        cyc = self._cycles[st.cycle]
        cyc.live -= 1
        if not st.observed or self.counting:
            if self._arbiter is not None:
                self._arbiter.closed(self.name, st.tag)
            return  # a glimpse expires quietly; a count needs no claim
        movement, why = self._direction(st, end_t)
        p = Pass(self.name, st.tag, st.item, st.first, st.last, st.first_t, st.last_t, end_t,
                 st.reads, st.rssi, st.antenna, movement, why, st.cycle)
        cyc.undecided += 1
        self._claims[st.tag] = self._claims.get(st.tag, 0) + 1
        first = self._claim_first.get(st.tag)
        if first is None or st.first_t < first:
            self._claim_first[st.tag] = st.first_t
        if self._arbiter is not None:
            self._arbiter.submit(p)
        else:
            self._decided.append((p, True))

    def _deadline(self, st: _Tag) -> float:
        """When the pass ends if it is not read again: ``quiet_s`` after its last read at a
        door that does not tell direction; else ``reversal_s`` once it has been seen on both
        sides, ``transition_s`` while on one side only (``edge.direction``)."""
        sides = st.sides
        if sides is None:
            return st.last_t + self._quiet
        outside, inside = sides.spans(st.rssi)
        if outside is not None and inside is not None:
            return st.last_t + self._reversal
        return st.last_t + self._transition

    def _direction(self, st: _Tag, end_t: float) -> tuple[str | None, str]:
        cohort = self._cohort
        if cohort is None or st.sides is None:
            return self._fixed, "fixed"
        outside, inside = st.sides.spans(st.rssi)
        movement, why = order(outside, inside)
        rare = sparse(st.reads, st.first_t, st.last_t)
        cohort.prune(end_t)
        cohort.record(end_t, None if rare else movement, outside, inside)  # sparse: no vote
        if (rare or why == "one side") and (outside or inside) is not None:
            movement = cohort.infer_all(outside, inside, self._going())
            why = "pallet" if movement is not None else "sparse" if rare else why
        return movement, why

    def _going(self) -> list[tuple[str, Span, Span]]:
        """The passes still going whose reads so far show a clear direction (the pallet)."""
        going = []
        for other in self._active.values():
            if other.sides is not None:
                o, i = other.sides.spans(other.rssi)
                m, _ = order(o, i)
                if m is not None and o is not None and i is not None:
                    going.append((m, o, i))
        return going

    # --- decisions, events, reports ---------------------------------------------------------

    def _finish_round(self, final: bool = False) -> list[wire.Event]:
        decided = self._decided
        self._decided = []
        delay = 0.0
        if self._arbiter is not None:
            if not final:
                self._arbiter.advance(self.name, self._wm)
            decided = decided + self._arbiter.take(self.name)
            delay = self._arbiter.delay_s
        for p, won in decided:
            self._decide(p, won, p.last_t + delay if delay else p.end_t)
        self._holds.prune(self._wm, self._active, self._claims)
        self._release_reports(final)
        if not self._emitted:
            return []
        self._emitted.sort(key=lambda e: (e[0], e[1]))
        events = [e for _, _, e in self._emitted]
        self._emitted = []
        return events

    def _decide(self, p: Pass, won: bool, key: float) -> None:
        cyc = self._cycles[p.cycle]
        cyc.undecided -= 1
        left = self._claims.get(p.tag, 0) - 1
        if left > 0:
            self._claims[p.tag] = left
        else:
            self._claims.pop(p.tag, None)
            self._claim_first.pop(p.tag, None)
        if not won:
            cyc.stray += 1
            return
        cfg = self.config
        if p.movement is None:
            cyc.unmoved += 1
            if cfg.unmoved == "observe":
                cyc.events += 1
                self._emit(key, p.tag, pass_event(self.name, self.location, p, "observe", self.tz))
            return
        if self._holds.repeats(p.tag, p.movement, p.first_t, p.last_t):
            cyc.held += 1
            return
        cyc.events += 1
        self._emit(key, p.tag, pass_event(self.name, self.location, p, p.movement, self.tz))

    def _emit(self, key: float, tag: str, event: wire.Event) -> None:
        self._emitted.append((key, tag, event))

    def _release_reports(self, final: bool) -> None:
        for cid in sorted(self._cycles):
            cyc = self._cycles[cid]
            if cyc.closed_t == _INF or (not final and (cyc.live or cyc.undecided)):
                break
            del self._cycles[cid]
            self._reports.append(cyc.report(self.name))

    # --- what survives a restart (edge.doorstate keeps it in the outbox) -------------------

    def journal_marks(self) -> tuple[float, dict[str, float]]:
        """What the door journal must keep (``edge.journal``): (horizon, live passes).

        No unprocessed input (nor, counting or with a GPI, open or unreported cycle; nor, at
        a door telling direction, pass ended within the pallet evidence's window, rebuilt so a
        buried case still finds its pallet) is older than the horizon (epoch seconds); live
        passes (going, or ended and undecided) map their tag to their first read, and their
        reads are kept from there. Fed again from what is kept, in time order, a new door comes
        back to this one's state for every pass not yet decided (a time-boxed cycle's report may
        then count less: reports are diagnostics); passes decided again are held or kept once
        by their id.
        """
        horizon = self._wm
        for item in self._pending:
            t = item.at.timestamp()
            if t < horizon:
                horizon = t
        if self.counting or self._gpi is not None:  # a count or a GPI cycle needs its reads
            for cyc in self._cycles.values():
                if cyc.opened_t < horizon:
                    horizon = cyc.opened_t
        if self._cohort is not None:  # the pallet's evidence: passes ended within its window
            horizon = min(horizon, self._wm - self._cohort.keep_s)
        live = dict(self._claim_first)
        for tag, st in self._active.items():
            first = live.get(tag)
            if first is None or st.first_t < first:
                live[tag] = st.first_t
        return horizon, live

    def take_held_changes(self) -> tuple[dict[str, tuple[str, float]], set[str]]:
        """The hold list's changes since last asked (``edge.doorholds``): (tag -> (movement,
        last read), tags forgotten). ``edge.doorstate`` saves them with the movements they go
        with."""
        return self._holds.take_changes()

    @property
    def held_dirty(self) -> bool:
        """The hold list changed since ``take_held_changes()`` last gave its changes."""
        return self._holds.dirty

    def restore_held(self, data: object) -> int:
        """A hold list a previous run saved: tag -> (movement, last read) as a pair or a JSON
        list; ValueError if it is not one."""
        return self._holds.restore(data)
