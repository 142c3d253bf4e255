"""The campaign: per scenario, faults at random moments, then recovery and the count; the
scenarios one after the other, the report.

Ground truth is what this process generated (``floorsync.chaos.handheld``,
``floorsync.chaos.dock``). After the faults stop, everything is restored, the backlog drains
and the edge is stopped cleanly; then the central ledger (SQLite, read-only) says, per
generated item, how many events were applied: lost = generated - applied, doubled = applied
more than once.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from floorsync.chaos.cluster import (
    CLUSTER_SCENARIOS,
    EDGE_NODE_SKIPPED,
    recovery_line,
    run_cluster_scenario,
)
from floorsync.chaos.faults import FaultInjector
from floorsync.chaos.handheld import GTIN
from floorsync.chaos.scenarios import SCENARIOS, Result
from floorsync.edge.errors import EdgeError


class World(FaultInjector):
    """One scenario's site: brokers, central service, the edge, the floor, the fault injector;
    run: faults at random moments, recovery, the count."""

    def _check_crashes(self) -> None:
        """A process that died without being killed is a finding: note it, start it again."""
        assert self.edge is not None
        for name, proc, restart in (("edge", self.edge, self.edge.start),
                                    ("central", self.central, self.central.start)):
            process = proc.process
            if process is not None and process.poll() is not None:
                self.result.notes.append(f"{name} exited by itself (status {process.returncode})")
                proc.process = None
                restart()
        for broker in (self.central_broker, self.reader_broker):
            if broker is not None and broker.ensure_running():
                self.result.notes.append(f"broker on {broker.port} exited by itself")

    def run(self, budget: int) -> Result:
        started = time.monotonic()
        try:
            self.setup()
            assert self.edge is not None
            if not self.edge.wait_up(60):
                raise EdgeError(f"the edge did not come up; see {self.edge.log}")
            time.sleep(2.0)  # the floor gets going before the first fault
            while self.result.injected < budget:
                self._pause(0.05, 1.0)
                self._check_crashes()
                kind = self.rng.choice(self.kinds)
                self.log(f"fault {kind}")
                if self.inject(kind):
                    self.result.faults[kind] += 1
                    self.log(f"fault {kind} done")
                else:
                    self.log(f"fault {kind} not possible now")
                assert self.edge is not None
                if self.rng.random() < 0.8:  # mostly, the floor gets going again first
                    self.edge.wait_up(30)
            self.log("faults over: recovering")
            self._recover()
            self.log("counting")
            self._count()
        finally:
            self.teardown()
            self.result.wall_s = time.monotonic() - started
        return self.result

    def _backlog(self) -> int:
        if not self.outbox.exists():
            return 0
        try:
            conn = sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=5)
            try:
                (n,) = conn.execute(
                    "SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sent')").fetchone()
                return int(n)
            finally:
                conn.close()
        except sqlite3.Error:
            return -1

    def _applied(self) -> int:
        try:
            conn = sqlite3.connect(f"file:{self.central.database}?mode=ro", uri=True, timeout=5)
            try:
                (n,) = conn.execute("SELECT COUNT(*) FROM events WHERE device = ?",
                                    (self.device,)).fetchone()
                return int(n)
            finally:
                conn.close()
        except sqlite3.Error:
            return -1

    def _recover(self) -> None:
        """Faults over: everything back, the floor stops, the backlog drains, the edge stops."""
        assert self.edge is not None
        self.central.resume()
        self._check_crashes()
        if not self.central.wait_ready(60):
            self.result.notes.append("central service not ready after the faults")
        if self.operator is not None:
            self.operator.stop()
        if self.reader is not None and not self.reader.finish():
            self.result.notes.append("the reader's broker did not take every message")
        extra = self.clock_offset if self.spec.path == "dock" else 0.0
        deadline = time.monotonic() + 90 + extra
        last, still = -2, time.monotonic()
        while time.monotonic() < deadline:
            applied = self._applied()
            if applied != last:
                last, still = applied, time.monotonic()
            if self._backlog() == 0 and time.monotonic() - still > 5 + extra:
                break
            time.sleep(0.25)
        code = self.edge.stop()
        if code not in (0, None):
            self.result.notes.append(f"edge exited with status {code} at the final stop")
        for _ in range(3):  # what the stop could not get acked goes at the next start
            if self._backlog() == 0:
                break
            self.edge.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self._backlog() != 0:
                time.sleep(0.25)
            self.edge.stop()
        if self._backlog():
            self.result.notes.append(f"edge backlog not drained: {self._backlog()} events")

    def _count(self) -> None:
        r = self.result
        conn = sqlite3.connect(f"file:{self.central.database}?mode=ro", uri=True, timeout=10)
        try:
            if self.operator is not None:
                rows = conn.execute(
                    "SELECT serial, type, COUNT(*) FROM events WHERE device = ? AND gtin = ?"
                    " GROUP BY serial, type", (self.device, GTIN)).fetchall()
                generated = self.operator.acked
                others = self.operator.unconfirmed
                r.unconfirmed = len(others)
                if self.operator.refused:
                    r.notes.append(f"{self.operator.refused} scans refused (bad read) and "
                                   "scanned again")
            else:
                assert self.reader is not None
                rows = conn.execute(
                    "SELECT tag, type, COUNT(*) FROM events WHERE device = ? AND tag IS NOT NULL"
                    " GROUP BY tag, type", (self.device,)).fetchall()
                generated, others = self.reader.tags, []
                if self.reader.late_messages:
                    r.notes.append(f"the simulated reader published {self.reader.late_messages} "
                                   "message(s) over 0.25 s after their reads' time (max "
                                   f"{self.reader.late_max:.2f} s): host load, not the reader")
        finally:
            conn.close()
        receives: Counter[str] = Counter()
        wrong: Counter[str] = Counter()
        for key, kind, n in rows:
            (receives if kind == "receive" else wrong)[key] += n
        known = set(generated) | set(others)
        r.generated = len(generated)
        r.applied = sum(1 for k in generated if receives[k] >= 1)
        lost = [k for k in generated if receives[k] == 0]
        doubled = [k for k in known if receives[k] > 1]
        strays = [k for k in receives if k not in known]
        r.lost, r.doubled = len(lost), len(doubled)
        r.wrong = sum(wrong[k] for k in known) + len(strays)
        if lost:
            r.examples["lost"] = lost[:10]
        if doubled:
            r.examples["doubled"] = doubled[:10]
        if not r.generated:
            r.notes.append("nothing was generated: this scenario proves nothing")
        if r.wrong:
            r.examples["wrong"] = ([f"{k}: {wrong[k]} other" for k in known if wrong[k]]
                                   + [f"{k}: not generated here" for k in strays])[:10]


# --- the campaign -------------------------------------------------------------------------------


def _budgets(total: int, count: int) -> list[int]:
    base, extra = divmod(max(total, count), count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def _line(r: Result) -> str:
    return (f"{r.scenario:15} {r.injected:6} {r.generated:9} {r.applied:8} {r.lost:5} "
            f"{r.doubled:7} {r.unconfirmed:7} {r.wall_s:7.1f}s  "
            + ("ok" if r.ok else "FAIL" + (f" (wrong {r.wrong})" if r.wrong else "")))


HEADER = (f"{'scenario':15} {'faults':>6} {'generated':>9} {'applied':>8} {'lost':>5} "
          f"{'doubled':>7} {'unconf.':>7} {'wall':>8}")


def _report(out: Callable[[str], None], result: Result) -> None:
    out(HEADER)
    out(_line(result))
    out("   faults: " + ", ".join(f"{k} {v}" for k, v in sorted(result.faults.items())))
    if result.recovery:
        out("   recovery: " + recovery_line(result))
    for note in result.notes:
        out(f"   note: {note}")
    for what, examples in result.examples.items():
        out(f"   {what}: {', '.join(examples)}")


def run_campaign(*, seed: int | None = None, faults: int = 1000,
                 scenarios: Sequence[str] | None = None, as_json: bool = False,
                 data: Path | None = None, keep: bool = False,
                 stream: TextIO | None = None, cluster_events: int = 20_000,
                 cluster_faults: int = 5) -> tuple[int, list[Result]]:
    """Run the scenarios one after the other; (exit status, results). 1 on any loss or double.

    ``faults`` is shared by the single-host scenarios; each cluster scenario
    (``floorsync.chaos.cluster``) streams ``cluster_events`` events through its own three-node
    NATS cluster into PostgreSQL with ``cluster_faults`` faults of its kind.
    """
    stream = stream or sys.stdout
    names = list(scenarios or [*SCENARIOS, *CLUSTER_SCENARIOS])
    unknown = [n for n in names if n not in SCENARIOS and n not in CLUSTER_SCENARIOS]
    if unknown:
        raise EdgeError(f"unknown scenario(s) {', '.join(unknown)}; "
                        f"known: {', '.join([*SCENARIOS, *CLUSTER_SCENARIOS])}")
    seed = random.SystemRandom().randrange(1, 2**31) if seed is None else seed
    base = data or Path(tempfile.mkdtemp(prefix="floorsync-chaos-"))
    base.mkdir(parents=True, exist_ok=True)

    def out(text: str) -> None:
        if not as_json:
            print(text, file=stream, flush=True)

    single = [n for n in names if n in SCENARIOS]
    budgets = dict(zip(single, _budgets(faults, len(single)), strict=True)) if single else {}
    clustered = [n for n in names if n in CLUSTER_SCENARIOS]
    out(f"floorsync chaos: seed {seed}, {faults if single else 0} faults over {len(single)} "
        f"single-host scenario(s), {len(clustered)} cluster scenario(s) of {cluster_events} "
        f"events and {cluster_faults} faults each, logs in {base}")
    if clustered:
        out(f"   note: {EDGE_NODE_SKIPPED}")
    results: list[Result] = []
    started = time.monotonic()
    for index, name in enumerate(names):
        scenario_seed = random.Random(f"{seed}:{name}").randrange(2**31)
        if name in CLUSTER_SCENARIOS:
            out(f"-- {name} ({cluster_faults} faults, {cluster_events} events, "
                f"seed {scenario_seed})")
            result = run_cluster_scenario(CLUSTER_SCENARIOS[name], scenario_seed, base / name,
                                          out, events=cluster_events, faults=cluster_faults)
            results.append(result)
            _report(out, result)
            continue
        budget = budgets[name]
        out(f"-- {name} ({budget} faults, seed {scenario_seed})")
        world = World(SCENARIOS[name], scenario_seed, base / name, out, index + 1)
        try:
            result = world.run(budget)
        except EdgeError as exc:
            result = world.result
            result.notes.append(f"scenario failed to run: {exc}")
            result.lost = max(result.lost, 1)  # a scenario that cannot run proves nothing
        results.append(result)
        _report(out, result)
    total = Result("total", "both", seed)
    for r in results:
        total.faults.update(r.faults)
        for attr in ("generated", "applied", "lost", "doubled", "unconfirmed", "wrong"):
            setattr(total, attr, getattr(total, attr) + getattr(r, attr))
    total.wall_s = time.monotonic() - started
    status = 0 if all(r.ok for r in results) else 1
    if as_json:
        print(json.dumps({"seed": seed, "ok": status == 0,
                          "scenarios": [r.as_dict() for r in results],
                          "total": total.as_dict()}), file=stream, flush=True)
    else:
        out("== per scenario")
        out(HEADER)
        for r in results:
            out(_line(r))
        out(_line(total))
        out("   faults: " + ", ".join(f"{k} {v}" for k, v in sorted(total.faults.items())))
        out("chaos: " + ("no loss, no double" if status == 0 else
                         "LOSS OR DOUBLE FOUND (see above)"))
    if not keep and data is None and status == 0:
        shutil.rmtree(base, ignore_errors=True)
    return status, results
