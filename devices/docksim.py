"""Dock-door traffic with ground truth: seeded, physically motivated RFID reads at dock doors.

No public dock-door data set with ground truth exists, so this module makes one to measure a
door's direction logic honestly. Every scenario gives the reads each reader reported (sorted
by reader time, as ``TagRead``) and, per tag, what really happened at which door: ``receive``
(outside to inside), ``ship`` (inside to outside) or ``None`` (no movement). The model is not
tuned to any detector; its parameters come from the physics and from what is reported from
real docks (FIELD-NOTES: 60-70 % per-round read reliability, buried cases read a handful of
times, dead zones, stop-and-go, reversals, staged pallets, neighbour-door bleed).

**Geometry.** A door is a lane along ``x`` (outside ``x < 0``, inside ``x > 0``, the door plane
at 0) centred at ``y``. Each reader has two antennas mounted overhead (2.4-3.0 m) and pointing
down: antenna 1 outside, antenna 2 inside. Their read zones are computed from the link budget
below for a reference case (1 m high, lane centre), and the antennas are placed so that the
zones leave a **dead zone** of 0-1.5 m between them around the door plane. A neighbouring door
(when present) is the same kind of lane 3.2-4.5 m to the side.

**Link budget, per reader round and tag.** The forward link powers the tag: EIRP 33 dBm, free
space path loss at 915 MHz (31.7 dB at 1 m, 20 dB per decade), antenna pattern loss
``min(cap, 12 (θ/θ3)²)`` dB (θ off boresight, θ3 = 30-38° half beam width, cap 20-25 dB), a
per-tag orientation offset (standard deviation 2 dB common, plus 2 dB towards each antenna:
the label faces one way; within ±6 dB), and fast fading (Gaussian, standard deviation 2-3.5
dB per round). The tag answers when that power reaches its sensitivity (-18 ± 1 dBm) and it wins the
round's anti-collision (per-round reliability 60-70 %). The reported RSSI is the reverse link:
the tag's power minus the same path and pattern losses again, minus 5 dB backscatter loss,
plus 1 dB noise, in 0.5 dB steps. So read probability and RSSI both fall with distance and
angle, and the top layers of a pallet have narrower zones than the bottom ones. **Reflections**
(trailer walls, the floor, the door frame) give any tag within 5 m of an antenna a small
per-round read chance that ignores the pattern (0.2-1.5 % at 3 m, falling with the square of
the distance) at weak RSSI (about -79 dBm): that is how a staged pallet is now and then read
by the far antenna, how a tag in the dead zone is now and then read, and how the next door's
reader reads tags crossing this one.

**Reader.** Rounds of 20-50 ms alternate between the two antennas (each antenna reads every
40-100 ms); a tag is read at most once per round at a random moment in it; reader timestamps
carry jitter (standard deviation 0-10 ms), and each reader's reads are sorted by its timestamps.

**Pallets and cases.** 6-40 cases in a grid of 2-4 by 2-3 cases and as many layers as needed
(cases 0.3 m high on a pallet 1.2 m long and 1.0 m wide, forks 0.1-0.3 m up). Cases on the
outer faces are read normally. Cases inside the grid are **buried**: the pallet's contents
shield them so that a straight pass gives them only 2-5 reads in all (drawn per case); their
reads fall in the rounds where their link is strongest (drawn in proportion to the direct-path
read probability), a pass that lingers (a stop) gives them proportionally more, a partial one
fewer. Buried cases get no reflected reads.

**Motion.** A forklift drives at 0.5-2.5 m/s (±10 % per leg) from 6.5 m on one side to 6.5 m on
the other (out of every antenna's reach at both ends). It may stop for 0.5-4 s anywhere,
including in the dead zone. Scenario kinds (``KINDS``):

- ``inbound`` / ``outbound``: one pallet through (a stop anywhere with probability 0.3);
- ``dead-zone stop``: one pallet through that stops 0.5-4 s in the dead zone (gaps of 0-3 s
  between the fields from the dead zone and speed alone, up to 7 s with the stop);
- ``back-out``: the forklift enters partly (up to anywhere between the near zone and the far
  zone), may stop, and backs out: no movement;
- ``back-out then through``: it backs out to somewhere before the door, waits, then goes
  through: one movement;
- ``staged``: a pallet parked in the near zone inside or outside for 30-180 s (minutes, by
  default), read continuously by the near antenna and now and then weakly by the far one; it
  is then taken away on its own side (no movement) or moved through (a movement);
- ``staged + traffic``: the same while one or two other pallets cross the door;
- ``train``: two or three forklifts one after another with 2-6 s between them, mostly the same
  way, so the reads of successive pallets interleave;
- ``neighbour``: two doors side by side, each with its own reader, traffic at both at once (the
  neighbour's pallet the same way or the other), each reader also reading the other door's
  tags through reflections.

The ground truth of a pallet is where it started and where it ended: outside then inside is a
``receive`` at that door, inside then outside a ``ship``, the same side ``None``.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from floorsync.devices.base import TagRead
from floorsync.devices.sim import sgtin96_hex

OUTSIDE, INSIDE = 1, 2  # antenna numbers
KINDS = ("inbound", "outbound", "dead-zone stop", "back-out", "back-out then through", "staged",
         "staged + traffic", "train", "neighbour")
T0 = datetime(2026, 11, 23, 6, 0, 0, tzinfo=UTC)
COMPANY = "0614141"

_EIRP = 33.0
_FSPL_1M = 31.7  # free space path loss at 1 m, 915 MHz
_BACKSCATTER = 5.0
_REFERENCE_Z = 1.0
_START_X = 6.5  # pallets start and end this far from the door plane
_REFLECT_RANGE2 = 25.0  # reflections reach 5 m
_BURIED_ATTENUATION = 12.0  # dB; the read count is then set by the 2-5 reads rule
_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True, slots=True)
class Truth:
    """What really happened to one tag in a scenario."""

    tag: str  # EPC hex
    door: str  # the reader (door) it crossed or sat at
    movement: str | None  # receive | ship | None
    kind: str  # the scenario kind
    buried: bool
    role: str  # "crossing", "back-out", "staged", ... (what the pallet did)


@dataclass
class Scenario:
    kind: str
    start: datetime
    end: datetime  # the last pallet is out of every antenna's reach
    doors: tuple[str, ...]  # reader names; the first is the door under test
    reads: dict[str, list[TagRead]]
    truth: list[Truth]

    @property
    def read_count(self) -> int:
        return sum(map(len, self.reads.values()))


@dataclass(frozen=True, slots=True)
class _Door:
    name: str
    y: float
    height: float
    x_out: float  # antenna 1
    x_in: float  # antenna 2
    dead_zone: float


@dataclass(slots=True)
class _Case:
    tag: str
    dx: float  # along the pallet
    dy: float
    z: float
    orient: tuple[float, float]  # dB, towards antenna 1 and 2 (the label faces one way)
    reliability: float
    buried: bool
    target: int  # buried: reads in a straight pass


@dataclass
class _Pallet:
    cases: list[_Case]
    y: float  # lateral lane position of the pallet centre
    door: str
    role: str
    # motion: (t, x) breakpoints, linear between them
    ts: list[float] = field(default_factory=list)
    xs: list[float] = field(default_factory=list)

    def at(self, t: float) -> float | None:
        ts = self.ts
        if t < ts[0] or t > ts[-1]:
            return None
        i = bisect_right(ts, t) - 1
        if i >= len(ts) - 1:
            return self.xs[-1]
        t0, t1 = ts[i], ts[i + 1]
        x0, x1 = self.xs[i], self.xs[i + 1]
        return x0 if t1 == t0 else x0 + (x1 - x0) * (t - t0) / (t1 - t0)

    def truth(self) -> str | None:
        first, last = self.xs[0], self.xs[-1]
        if first < 0 < last:
            return "receive"
        if last < 0 < first:
            return "ship"
        return None


@dataclass(frozen=True, slots=True)
class _Env:
    sens: float
    theta3: float
    cap: float
    fade: float
    round_s: float
    jitter: float
    reflect: float  # per-round chance at 3 m


class _Trip:
    """Builds a pallet's motion: legs at a speed, stops."""

    def __init__(self, rng: random.Random, start_t: float, x: float, speed: float) -> None:
        self.rng = rng
        self.t = start_t
        self.x = x
        self.speed = speed
        self.ts = [start_t]
        self.xs = [x]

    def to(self, x: float, speed: float | None = None) -> _Trip:
        v = (speed or self.speed) * self.rng.uniform(0.9, 1.1)
        self.t += abs(x - self.x) / v
        self.x = x
        self.ts.append(self.t)
        self.xs.append(x)
        return self

    def stop(self, seconds: float) -> _Trip:
        self.t += seconds
        self.ts.append(self.t)
        self.xs.append(self.x)
        return self


class DockSim:
    """Seeded dock traffic. ``scenario(kind)`` makes one; ``traffic(n)`` makes ``n`` of mixed
    kinds. Each scenario starts ``spacing_s`` after the previous one, with fresh tags."""

    def __init__(self, seed: int = 1, *, staged_s: tuple[float, float] = (30.0, 180.0),
                 spacing_s: float = 600.0) -> None:
        self.rng = random.Random(seed)
        self.staged_s = staged_s
        self.spacing_s = spacing_s
        self._serial = seed * 1_000_000
        self._next_start = 0.0

    # --- scenarios ---------------------------------------------------------------------------

    def traffic(self, n: int, kinds: tuple[str, ...] = KINDS) -> list[Scenario]:
        return [self.scenario(kinds[i % len(kinds)]) for i in range(n)]

    def scenario(self, kind: str) -> Scenario:
        if kind not in KINDS:
            raise ValueError(f"unknown scenario kind {kind!r}")
        rng = self.rng
        base = self._next_start
        self._next_start += self.spacing_s
        env = _Env(sens=rng.uniform(-19.0, -17.0), theta3=math.radians(rng.uniform(30.0, 38.0)),
                   cap=rng.uniform(20.0, 25.0), fade=rng.uniform(2.0, 3.5),
                   round_s=rng.uniform(0.02, 0.05), jitter=rng.uniform(0.0, 0.01),
                   reflect=math.exp(rng.uniform(math.log(0.002), math.log(0.015))))
        a = self._door("door-a", 0.0, env)
        doors = [a]
        pallets: list[_Pallet] = []
        t = base + 1.0
        inbound = rng.random() < 0.5
        if kind == "inbound" or kind == "outbound":
            p = self._pallet(a, "crossing")
            self._through(p, t, kind == "inbound", a, stop_p=0.3)
            pallets.append(p)
        elif kind == "dead-zone stop":
            p = self._pallet(a, "crossing")
            self._through(p, t, inbound, a, stop_p=0.0, dead_zone_stop=True)
            pallets.append(p)
        elif kind == "back-out":
            p = self._pallet(a, "back-out")
            self._back_out(p, t, inbound, a, then_through=False)
            pallets.append(p)
        elif kind == "back-out then through":
            p = self._pallet(a, "crossing")
            self._back_out(p, t, inbound, a, then_through=True)
            pallets.append(p)
        elif kind in ("staged", "staged + traffic"):
            p = self._pallet(a, "staged")
            end = self._staged(p, t, a)
            pallets.append(p)
            if kind == "staged + traffic":
                for _ in range(rng.randint(1, 2)):
                    q = self._pallet(a, "crossing")
                    self._through(q, rng.uniform(t + 5.0, max(t + 6.0, end - 20.0)),
                                  rng.random() < 0.5, a, stop_p=0.3)
                    pallets.append(q)
        elif kind == "train":
            for _ in range(rng.randint(2, 3)):
                p = self._pallet(a, "crossing")
                self._through(p, t, inbound, a, stop_p=0.15)
                pallets.append(p)
                if rng.random() < 0.3:  # the next one goes the other way, once this one is in
                    inbound = not inbound
                    t = p.ts[0] + (p.ts[-1] - p.ts[0]) / 2 + rng.uniform(1.0, 4.0)
                else:
                    t = t + rng.uniform(2.0, 6.0)
        else:  # neighbour
            b = self._door("door-b", rng.choice((-1.0, 1.0)) * rng.uniform(3.2, 4.5), env,
                           like=a)
            doors.append(b)
            p = self._pallet(a, "crossing")
            self._through(p, t, inbound, a, stop_p=0.3)
            q = self._pallet(b, "crossing")
            self._through(q, t + rng.uniform(-2.0, 2.0),
                          inbound if rng.random() < 0.5 else not inbound, b, stop_p=0.3)
            pallets += [p, q]
        start = min(p.ts[0] for p in pallets)
        end = max(p.ts[-1] for p in pallets)
        reads = {d.name: self._read(d, doors, pallets, env, start, end) for d in doors}
        truth = [Truth(c.tag, p.door, p.truth(), kind, c.buried, p.role)
                 for p in pallets for c in p.cases]
        return Scenario(kind, T0 + timedelta(seconds=start), T0 + timedelta(seconds=end),
                        tuple(d.name for d in doors), reads, truth)

    # --- doors, pallets, trips ---------------------------------------------------------------

    def _door(self, name: str, y: float, env: _Env, like: _Door | None = None) -> _Door:
        rng = self.rng
        height = like.height if like else rng.uniform(2.4, 3.0)
        dead = rng.uniform(0.0, 1.5)
        half = _zone_half_width(height, env)
        return _Door(name, y, height, -(half + dead / 2), half + dead / 2, dead)

    def _pallet(self, door: _Door, role: str) -> _Pallet:
        rng = self.rng
        n = rng.randint(6, 40)
        while True:
            nx, ny = rng.randint(2, 4), rng.randint(2, 3)
            if nx * ny * 6 >= n:
                break
        fork = rng.uniform(0.1, 0.3)
        cases = []
        for i in range(n):
            layer, cell = divmod(i, nx * ny)
            ix, iy = divmod(cell, ny)
            buried = 0 < ix < nx - 1 and 0 < iy < ny - 1
            self._serial += 1
            cases.append(_Case(
                tag=sgtin96_hex(COMPANY, "812345", self._serial),
                dx=-0.6 + (ix + 0.5) * 1.2 / nx,
                dy=-0.5 + (iy + 0.5) * 1.0 / ny,
                z=fork + 0.15 + 0.3 * layer,
                orient=(lambda common: (_clip(common + rng.gauss(0.0, 2.0)),
                                        _clip(common + rng.gauss(0.0, 2.0))))(
                    rng.gauss(0.0, 2.0)),
                reliability=rng.uniform(0.6, 0.7),
                buried=buried,
                target=rng.randint(2, 5),
            ))
        return _Pallet(cases, door.y + rng.uniform(-0.3, 0.3), door.name, role)

    def _speed(self) -> float:
        return self.rng.uniform(0.5, 2.5)

    def _through(self, p: _Pallet, t: float, inbound: bool, door: _Door, *, stop_p: float,
                 dead_zone_stop: bool = False) -> None:
        rng = self.rng
        sign = 1.0 if inbound else -1.0
        trip = _Trip(rng, t, -sign * _START_X, self._speed())
        if dead_zone_stop:
            half = door.dead_zone / 2
            trip.to(sign * rng.uniform(-half, half)).stop(rng.uniform(0.5, 4.0))
        elif rng.random() < stop_p:
            trip.to(sign * rng.uniform(-_START_X + 1.0, _START_X - 1.0)).stop(
                rng.uniform(0.5, 4.0))
        trip.to(sign * _START_X)
        p.ts, p.xs = trip.ts, trip.xs

    def _back_out(self, p: _Pallet, t: float, inbound: bool, door: _Door, *,
                  then_through: bool) -> None:
        rng = self.rng
        sign = 1.0 if inbound else -1.0
        trip = _Trip(rng, t, -sign * _START_X, self._speed())
        near = door.x_out if inbound else door.x_in  # the first antenna on the way
        far = door.x_in if inbound else door.x_out
        # how far in it gets: from the near antenna to just past the far one
        turn = rng.uniform(near, far + sign * 0.8) if inbound else rng.uniform(far - 0.8, near)
        trip.to(turn)
        if rng.random() < 0.5:
            trip.stop(rng.uniform(0.5, 4.0))
        back = self._speed() * 0.6
        if then_through:
            trip.to(-sign * rng.uniform(0.5, _START_X - 1.0), back).stop(rng.uniform(0.5, 6.0))
            trip.to(sign * _START_X)
        else:
            trip.to(-sign * _START_X, back)
        p.ts, p.xs = trip.ts, trip.xs

    def _staged(self, p: _Pallet, t: float, door: _Door) -> float:
        """Brought to the near zone of its side, parked, then taken away or through; returns
        when it was taken."""
        rng = self.rng
        outside = rng.random() < 0.5
        side = -1.0 if outside else 1.0
        antenna_x = door.x_out if outside else door.x_in
        spot = antenna_x + rng.uniform(-0.6, 0.6)
        p.y += rng.uniform(-0.8, 0.8)  # parked beside the lane as often as in it
        trip = _Trip(rng, t, side * _START_X, self._speed())
        trip.to(spot).stop(rng.uniform(*self.staged_s))
        taken = trip.t
        if rng.random() < 0.5:
            trip.to(side * _START_X)  # taken away on its own side
        else:
            trip.to(-side * _START_X)  # moved through
        p.ts, p.xs = trip.ts, trip.xs
        return taken

    # --- the radio ---------------------------------------------------------------------------

    def _read(self, door: _Door, doors: list[_Door], pallets: list[_Pallet], env: _Env,
              start: float, end: float) -> list[TagRead]:
        rng = self.rng
        gauss, rand = rng.gauss, rng.random
        log10, atan2, sqrt = math.log10, math.atan2, math.sqrt
        sens, theta3, cap, fade = env.sens, env.theta3, env.cap, env.fade
        reads: list[tuple[float, str, int, float]] = []
        buried: dict[str, list[tuple[float, int, float]]] = {}  # tag -> (t, antenna, p)
        antennas = ((OUTSIDE, door.x_out), (INSIDE, door.x_in))
        t = start - rng.uniform(0.0, env.round_s)
        k = rng.randrange(2)
        while t <= end:
            dur = env.round_s * rng.uniform(0.8, 1.2)
            antenna, ax = antennas[k % 2]
            k += 1
            for p in pallets:
                px = p.at(t)
                if px is None:
                    continue
                cx = px - ax
                cy = p.y - door.y
                if cx * cx + cy * cy > 36.0:  # the whole pallet is out of reach
                    continue
                for c in p.cases:
                    dx, dy = cx + c.dx, cy + c.dy
                    dz = door.height - c.z
                    h2 = dx * dx + dy * dy
                    d2 = h2 + dz * dz
                    theta = atan2(sqrt(h2), dz)
                    pattern = min(cap, 12.0 * (theta / theta3) ** 2)
                    path = _FSPL_1M + 10.0 * log10(d2)
                    power = _EIRP - path - pattern + c.orient[antenna - 1]
                    if c.buried:
                        margin = power - _BURIED_ATTENUATION - sens
                        if margin > -4 * fade:
                            q = c.reliability * _phi(margin / fade)
                            buried.setdefault(c.tag, []).append((t + rand() * dur, antenna, q))
                        continue
                    margin = power - sens
                    if margin > -4 * fade:
                        f = gauss(0.0, fade)
                        if margin + f >= 0.0 and rand() < c.reliability:
                            rssi = power + f - path - pattern - _BACKSCATTER + gauss(0.0, 1.0)
                            reads.append((t + rand() * dur, c.tag, antenna, rssi))
                            continue
                    if d2 < _REFLECT_RANGE2 + dz * dz:
                        chance = env.reflect * 9.0 / max(d2, 9.0) * c.reliability
                        if rand() < chance:
                            reads.append((t + rand() * dur, c.tag, antenna,
                                          max(-84.0, gauss(-79.0, 1.5))))
            t += dur
        for p in pallets:
            for c in p.cases:
                if c.buried and c.tag in buried:
                    reads += self._buried_reads(c, p, door, env, buried[c.tag])
        out = []
        jitter = env.jitter
        for at, tag, antenna, rssi in reads:
            at += gauss(0.0, jitter) if jitter else 0.0
            out.append((at, tag, antenna, round(rssi * 2) / 2))
        out.sort()
        return [TagRead(door.name, tag, antenna, rssi, T0 + timedelta(seconds=at))
                for at, tag, antenna, rssi in out]

    def _buried_reads(self, c: _Case, p: _Pallet, door: _Door, env: _Env,
                      chances: list[tuple[float, int, float]]) -> list[tuple[float, str, int,
                                                                              float]]:
        """A buried case gets ``target`` reads in a straight pass at this pallet's speed (the
        exposure of its own trip scales that), drawn where its link is strongest."""
        rng = self.rng
        exposure = sum(q for _, _, q in chances)
        if exposure <= 0.0:
            return []
        if door.name != p.door:
            return []  # too weak for the reflections that reach the next door
        nominal = _straight_exposure(c, p, door, env)
        want = c.target * exposure / nominal if nominal > 0 else 0.0
        n = int(want) + (1 if rng.random() < want - int(want) else 0)
        n = min(n, len(chances))
        if n <= 0:
            return []
        keyed = sorted(((rng.random() ** (1.0 / q) if q > 0 else 0.0, i)
                        for i, (_, _, q) in enumerate(chances)), reverse=True)
        out = []
        for _, i in keyed[:n]:
            at, antenna, _q = chances[i]
            rssi = env.sens - _BACKSCATTER - 40.0 + rng.gauss(0.0, 2.0)  # about -63 dBm
            out.append((at, c.tag, antenna, rssi))
        return out


def _clip(db: float) -> float:
    return max(-6.0, min(6.0, db))


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / _SQRT2))


def _zone_half_width(height: float, env: _Env) -> float:
    """Where a reference case (1 m up, lane centre, no offset) stops being read on average."""
    lo, hi = 0.0, 6.0
    dz = height - _REFERENCE_Z
    for _ in range(40):
        mid = (lo + hi) / 2
        theta = math.atan2(mid, dz)
        pattern = min(env.cap, 12.0 * (theta / env.theta3) ** 2)
        power = _EIRP - _FSPL_1M - 10.0 * math.log10(mid * mid + dz * dz) - pattern
        if power >= env.sens:
            lo = mid
        else:
            hi = mid
    return lo


def _straight_exposure(c: _Case, p: _Pallet, door: _Door, env: _Env) -> float:
    """Expected direct-path reads of a buried case in a straight pass at the pallet's speed."""
    speeds = [abs(p.xs[i + 1] - p.xs[i]) / (p.ts[i + 1] - p.ts[i])
              for i in range(len(p.ts) - 1) if p.ts[i + 1] > p.ts[i] and p.xs[i + 1] != p.xs[i]]
    v = max(speeds) if speeds else 1.0
    total = 0.0
    step = env.round_s * v  # the pallet moves this far per round
    x = -_START_X
    k = 0
    dy = p.y - door.y + c.dy
    dz = door.height - c.z
    while x <= _START_X:
        side = k % 2
        ax = door.x_out if side == 0 else door.x_in
        k += 1
        dx = x + c.dx - ax
        h2 = dx * dx + dy * dy
        theta = math.atan2(math.sqrt(h2), dz)
        pattern = min(env.cap, 12.0 * (theta / env.theta3) ** 2)
        power = (_EIRP - _FSPL_1M - 10.0 * math.log10(h2 + dz * dz) - pattern
                 + c.orient[side])
        total += c.reliability * _phi((power - _BURIED_ATTENUATION - env.sens) / env.fade)
        x += step
    return total
