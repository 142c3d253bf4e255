"""Direction at a door with an outside and an inside antenna, through dead zones.

Used by ``edge.portal`` for doors with ``direction = "auto"`` and both sides mapped. Pure
functions of a pass's reads (their times, sides and RSSI), so a replay gives the same answer.

- **Sides by strength** (``Sides``): a side counts only through reads within ``WEAK_DB`` of the
  tag's peak RSSI. Reflections make weak reads anywhere (a staged pallet now and then read by
  the far antenna, a tag approaching the door read by the inside antenna through the trailer's
  walls, the dead zone); they neither flip a direction nor make a one-sided pass two-sided.
  Reads are kept per side in 3 dB bins (first and last time of each), so the strong span of a
  side is known whatever the peak turns out to be, in constant memory per pass.
- **The transition window**: a pass seen strongly on one side only may be a tag in the dead
  zone between the antennas, or stopped there: it ends after ``transition_s`` of silence
  rather than ``quiet_s``, so outside-then-gap-then-inside is one pass.
- **The reversal window**: a pass seen on both sides ends after ``reversal_s`` of silence
  (rather than ``quiet_s``): a forklift that reached the far antenna's field and backs out
  through the dead zone is read on its own side again within it, and its pass is one
  back-out rather than a movement. Its reads on the far side look like a crossing's (it passed
  under the far antenna and left its field), so only waiting tells them apart.
- **The order**: outside first and last inside is ``receive``; inside first and outside last
  ``ship``; first and last on the same side (a forklift that backed out) or one side only: no
  movement.
- **The pallet's evidence** (``Cohort``): a case buried in a pallet is read a handful of times
  in a whole pass, often on one side only. A pass seen on one side only takes the direction of
  the tags that travelled with it: passes at the same door with a clear direction (ended in
  the last ``2 * transition_s``, or still going) whose strong reads on that side began no
  later and ended no earlier than its own (within ``COHORT_SLACK_S``). At least
  ``COHORT_MIN`` of them, agreeing at least ``COHORT_AGREE`` of the time, give it their
  movement. A tag parked at the door is read on its side for far longer than any passing
  pallet, so it never borrows one.
- **Sparse passes** (``sparse``): a tag read fewer than ``SPARSE_READS`` times in a pass, or
  less than once per ``SPARSE_S`` of it, was never well inside a field: a buried case, or a
  case parked at the edge of a field (or beside the lane) whose few reads are as weak as the
  reflections around it. The order of its reads says little (a single reflected read makes it
  two-sided, and such a pass breaks into pieces), so it takes the pallet's evidence on every
  side it was seen (all agreeing), or makes no movement; nor does it vote for others.
"""

from __future__ import annotations

import math

_INF = math.inf
WEAK_DB = 10.0  # reads this far under the pass's peak do not make a side
BIN_DB = 3.0
_NO_RSSI = 1 << 20  # reads without RSSI count as strong
COHORT_MIN = 3
COHORT_AGREE = 0.9
COHORT_SLACK_S = 0.5
SPARSE_READS = 6  # a pass read fewer times than this is sparse
SPARSE_S = 1.0  # and one read less than once per this many seconds

Span = tuple[float, float]  # first and last strong read on a side


class Sides:
    """A pass's reads per side (0 outside, 1 inside), binned by RSSI: bin -> [first, last]."""

    __slots__ = ("bins",)

    def __init__(self) -> None:
        self.bins: tuple[dict[int, list[float]], dict[int, list[float]]] = ({}, {})

    def add(self, side: int, t: float, rssi: float | None) -> None:
        key = _NO_RSSI if rssi is None else int(rssi // BIN_DB)
        bins = self.bins[side]
        span = bins.get(key)
        if span is None:
            bins[key] = [t, t]
        elif t > span[1]:
            span[1] = t
        elif t < span[0]:
            span[0] = t

    def span(self, side: int, peak: float | None) -> Span | None:
        """First and last read on ``side`` within ``WEAK_DB`` of ``peak`` (None: none)."""
        floor = -_INF if peak is None else int((peak - WEAK_DB) // BIN_DB)
        first, last = _INF, -_INF
        for key, (f, t) in self.bins[side].items():
            if key >= floor:
                if f < first:
                    first = f
                if t > last:
                    last = t
        return None if first == _INF else (first, last)

    def spans(self, peak: float | None) -> tuple[Span | None, Span | None]:
        return self.span(0, peak), self.span(1, peak)


def sparse(reads: int, first_t: float, last_t: float) -> bool:
    """A pass read too rarely for the order of its own reads to mean a direction."""
    return reads < SPARSE_READS or reads * SPARSE_S < last_t - first_t


def order(outside: Span | None, inside: Span | None) -> tuple[str | None, str]:
    """The movement the strong spans of a pass show, and why."""
    if outside is None or inside is None:
        return None, "one side"
    out_first, out_last = outside
    in_first, in_last = inside
    if out_first < in_first and out_last < in_last:
        return "receive", "in"
    if in_first < out_first and in_last < out_last:
        return "ship", "out"
    if (out_first < in_first and out_last > in_last) or (
        in_first < out_first and in_last > out_last
    ):
        return None, "backed out"
    return None, "unclear"


class Cohort:
    """Recent passes with a clear direction at one door, for the passes seen on one side."""

    __slots__ = ("keep_s", "recent")

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        # end, movement, outside, inside: every observed pass
        self.recent: list[tuple[float, str | None, Span | None, Span | None]] = []

    def record(self, end_t: float, movement: str | None, outside: Span | None,
               inside: Span | None) -> None:
        self.recent.append((end_t, movement, outside, inside))

    def prune(self, now_t: float) -> None:
        limit = now_t - self.keep_s
        recent = self.recent
        if recent and recent[0][0] < limit:
            self.recent = [r for r in recent if r[0] >= limit]

    def infer(self, side: int, span: Span,
              going: list[tuple[str, Span, Span]]) -> str | None:
        """The movement of a pass seen on ``side`` only, over ``span``, from the passes that
        were on that side while it was (``going``: passes still going with a clear order)."""
        first, last = span
        votes = {"receive": 0, "ship": 0}
        for movement, outside, inside in _candidates(self.recent, going):
            if movement is None or outside is None or inside is None:
                continue
            f, t = outside if side == 0 else inside
            if f - COHORT_SLACK_S <= first and last <= t + COHORT_SLACK_S:
                votes[movement] += 1
        total = votes["receive"] + votes["ship"]
        for movement, n in votes.items():
            if n >= COHORT_MIN and n >= COHORT_AGREE * total:
                return movement
        return None

    def infer_all(self, outside: Span | None, inside: Span | None,
                  going: list[tuple[str, Span, Span]]) -> str | None:
        """The movement of a sparse pass: the pallet's evidence on every side it was seen on,
        all agreeing (None: no evidence, or sides that disagree)."""
        found = {self.infer(side, span, going)
                 for side, span in ((0, outside), (1, inside)) if span is not None}
        return found.pop() if len(found) == 1 else None


def _candidates(recent: list[tuple[float, str | None, Span | None, Span | None]],
                going: list[tuple[str, Span, Span]],
                ) -> list[tuple[str | None, Span | None, Span | None]]:
    return [(m, o, i) for _, m, o, i in recent] + list(going)
