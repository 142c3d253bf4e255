"""The edge agent: devices -> floor logic -> outbox -> sync, on one scanner or reader host.

Each device gets a capture thread; they share one outbox (one writer, group commit) and one
sync thread. A read's good-read feedback goes out only after its events are committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from floorsync.devices.base import ScanRead, TagRead, now
from floorsync.edge import wire
from floorsync.edge.arbiter import DoorArbiter
from floorsync.edge.config import EdgeConfig, PortalConfig, ScannerConfig
from floorsync.edge.documents import book_for
from floorsync.edge.dooralert import make_alerter
from floorsync.edge.doorcycles import CycleReport
from floorsync.edge.doorevents import read_sample
from floorsync.edge.doorstate import DoorKeeper
from floorsync.edge.errors import OutboxError
from floorsync.edge.journal import DoorJournal, Entry, GpiChange, JournalError, journal_path
from floorsync.edge.outbox import Outbox
from floorsync.edge.portal import Door
from floorsync.edge.readcheck import ReadBounds, check_read
from floorsync.edge.readerclock import ReaderClock
from floorsync.edge.readers import make_scanner, make_tag_reader, simulated_pallets
from floorsync.edge.sync import Syncer
from floorsync.edge.workflow import HandheldWorkflow

log = logging.getLogger(__name__)

DOOR_TICK_S = 0.01  # how often a door looks for passes that ended (reader time)
TRIM_EVERY_S = 0.5  # the journal is trimmed this often (and whenever movements were kept)
UNACKED_GROUP = 200  # reads of readers that cannot be acknowledged, kept per commit


class ReaderCounts:
    """Reads and bad reads of one scanner or door reader, for metrics. HTTP readers deliver
    on several threads at once: the counts take a lock (~0.1 us, against a read's commit)."""

    __slots__ = ("_lock", "bad", "reads")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reads = 0
        self.bad = 0

    def read(self) -> None:
        with self._lock:
            self.reads += 1

    def bad_read(self) -> None:
        with self._lock:
            self.bad += 1


class EdgeAgent:
    """Runs until ``stop()``; use as a context manager or call ``run_forever()``."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.outbox = Outbox(
            config.outbox_path,
            cap_bytes=int(config.outbox_cap_mb * 1024 * 1024),
            retention_s=config.outbox_retention_h * 3600,
        )
        # the site's open documents: filled by the syncer, counted against by scanners and doors
        self.documents = book_for(self.outbox, config.site)
        self.syncer = Syncer(self.outbox, config.site, config.device, config.sync,
                             documents=self.documents)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.captured = 0
        self.refused = 0
        self.refused_reads = 0  # reads a full journal lost (readers that cannot be told)
        self.door_restarts = 0  # doors started again after an error
        self.bad_reads = 0
        self.device_online: dict[str, bool] = {}
        # per (kind, name), kind "scanner" or "door": what the metrics report (edge.metrics)
        self.reader_counts = {("scanner", s.name): ReaderCounts() for s in config.scanners} | {
            ("door", p.name): ReaderCounts() for p in config.portals}
        self.journals: dict[str, DoorJournal] = {}  # the doors' open journals, by door
        self.metrics: Any = None  # edge.metrics.EdgeMetrics, with [metrics] port or textfile
        # per door: its alert output (edge.dooralert), fed by the door's keeper, never waited on
        self.door_alerts = {p.name: make_alerter(p, config.reader_client_id(p) + "-alert")
                            for p in config.portals}
        arbiter = DoorArbiter.for_portals(config.portals)  # shared by the doors
        self._door_arbiter = arbiter if len(arbiter.doors()) > 1 else None  # one: no rival

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> EdgeAgent:
        if self.config.metrics.enabled:  # first: a port in use stops the start here
            from floorsync.edge.metrics import EdgeMetrics  # prometheus-client only when asked

            self.metrics = EdgeMetrics(self, self.config.metrics).start()
        self.syncer.start()
        for alerter in self.door_alerts.values():
            alerter.start()
        for scanner in self.config.scanners:
            self._spawn(f"scan-{scanner.name}", self._run_scanner, scanner)
        for portal in self.config.portals:
            self._spawn(f"door-{portal.name}", self._run_portal, portal)
        log.info(
            "edge %s/%s: %d scanner(s), %d door(s), outbox %s, broker %s",
            self.config.site, self.config.device, len(self.config.scanners),
            len(self.config.portals), self.config.outbox_path, self.config.sync.broker,
        )
        return self

    def _spawn(self, name: str, target: object, arg: object) -> None:
        thread = threading.Thread(target=target, args=(arg,), name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Devices first (doors hand over their last passes), then sync, then the outbox."""
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
            if thread.is_alive():
                log.error("%s did not stop within 30 s; closing the outbox anyway", thread.name)
        drain = self.config.sync.drain_s  # a door's last passes, a scan's last events
        if drain > 0 and self.syncer.connected and not self.syncer.wait_synced(drain):
            left = self.outbox.stats()
            log.warning("stopping with %d event(s) not yet acked: they are sent at the next start",
                        left.pending + left.sent)
        self.syncer.stop()
        for alerter in self.door_alerts.values():  # the doors are stopped: nothing new comes
            alerter.stop()
        if self.metrics is not None:  # its last textfile says "stopped"; then the outbox goes
            self.metrics.stop()
        self.outbox.close()

    def __enter__(self) -> EdgeAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_forever(self) -> None:
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()

    # --- capture --------------------------------------------------------------------------

    def capture(self, events: Sequence[wire.Event]) -> bool:
        """Keep events durably. False (and nothing kept) when the outbox refuses them."""
        if not events:
            return True
        try:
            self.outbox.add(events)
        except OutboxError as exc:
            self.refused += len(events)
            log.error("capture refused (%d event(s)): %s", len(events), exc)
            return False
        self.captured += len(events)
        return True

    def keep_door(self, keeper: DoorKeeper, events: Sequence[wire.Event], *,
                  last: bool = False) -> bool:
        """A door's events with its state (see ``edge.doorstate``): refused ones are not
        dropped, they wait on disk and go first next time. ``last``: at stop, say what is
        left."""
        kept, ok = keeper.keep(events, last=last)
        self.captured += kept
        if last and not ok:
            log.error("door %s: %d movement(s) %s", keeper.door.name, len(keeper.backlog),
                      "wait in its saved state for the next start" if keeper.backlog_saved
                      else "could not be saved either: they are lost")
        return ok

    def _run_scanner(self, config: ScannerConfig) -> None:
        workflow = HandheldWorkflow(
            store=self.outbox,
            key=config.name,
            mode=config.mode,
            fixed_mode=config.fixed_mode,
            operator=config.operator,
            location_prefixes=self.config.location_prefixes,
            location_patterns=self.config.location_patterns,
            command_prefix=self.config.command_prefix,
            receipt_label_prefix=self.config.receipt_label_prefix,
            order_label_prefix=self.config.order_label_prefix,
            tote_label_prefix=self.config.tote_label_prefix,
            pick_to=self.config.pick_to,
            duplicate_window_ms=config.duplicate_window_ms,
            documents=self.documents,
        )
        scanner = make_scanner(config)
        counts = self.reader_counts[("scanner", config.name)]

        def on_read(read: ScanRead) -> None:
            counts.read()
            try:  # the workflow commits events and its state together before it returns
                outcome = workflow.handle(read)
            except OutboxError as exc:  # nothing kept, the session did not move: scan again
                self.refused += 1
                scanner.bad_read()
                log.error("%s: scan refused (%r): %s", config.name, read.text, exc)
                return
            except Exception as exc:  # a bug must not end this scanner's thread
                self.bad_reads += 1
                counts.bad_read()
                scanner.bad_read()
                log.exception("%s: scan failed (%r)", config.name, read.text)
                self.outbox.record_exception(config.name, f"scan failed: {exc!r}", read.text)
                return
            self.captured += len(outcome.events)
            if outcome.good:  # feedback only after the commit: a beep means the scan is on disk
                scanner.good_read()
                log.info("%s: %s", config.name, outcome.message, extra={
                    "scanner": config.name, **({"event_ids": [e.id for e in outcome.events]}
                                               if outcome.events else {})})
            else:
                self.bad_reads += 1
                counts.bad_read()
                scanner.bad_read()
                log.warning("%s: bad read (%r): %s", config.name, read.text, outcome.message)

        scanner.run_with_reopen(on_read, self._stop, self._state_reporter("scanner", config.name,
                                                                          config.port))

    def _state_reporter(self, what: str, name: str, where: str | None) -> Callable[[bool], None]:
        def on_state(online: bool) -> None:
            self.device_online[name] = online
            state = "online" if online else "offline"
            log.log(logging.INFO if online else logging.WARNING, "%s %s %s (%s)", what, name,
                    state, where, extra={what: name, "state": state})
        return on_state

    def _run_portal(self, config: PortalConfig) -> None:
        """One door, supervised: if its logic fails, it is started again (after a pause that
        grows to 30 s) and rebuilt from its journal, where every read it was given is kept."""
        if config.reader == "sim":
            self._run_simulated_door(config, Door(config, arbiter=self._door_arbiter))
            return
        pause = 1.0
        while not self._stop.is_set():
            try:
                journal = DoorJournal(journal_path(self.config.journal_directory, config.name),
                                      config.name,
                                      cap_bytes=int(self.config.journal_cap_mb * 1024 * 1024))
                with journal:
                    self.journals[config.name] = journal
                    try:
                        self._run_journaled_door(config, Door(config, arbiter=self._door_arbiter),
                                                 journal)
                    finally:
                        self.journals.pop(config.name, None)
                return
            except Exception as exc:
                self.device_online[config.name] = False
                self.door_restarts += 1
                log.exception("door %s stopped by an error (%s); its reads are kept in its "
                              "journal: starting it again in %.0f s", config.name, exc, pause,
                              extra={"door": config.name, "state": "restarting"})
            if self._stop.wait(pause):
                return
            pause = min(pause * 2, 30.0)

    def _run_journaled_door(self, config: PortalConfig, door: Door,
                            journal: DoorJournal) -> None:
        """Reader -> journal (durable) -> door -> outbox; the journal is trimmed behind."""
        lock = threading.Lock()  # reads arrive on the reader's thread, passes close on ours
        online = threading.Event()
        report_state = self._state_reporter("reader", config.name, config.reader)
        clock = ReaderClock(config.latency_s)  # the watermark follows the reader's timestamps
        keeper = DoorKeeper(self.outbox, door, documents=self.documents,  # on disk: its holds,
                            alerts=self.door_alerts.get(config.name))  # refused movements
        # and what it counted against the documents
        handed = [0]  # the last journal row the door was given

        def hand_over(entries: Sequence[Entry], last_id: int) -> None:  # holding `lock`
            host = time.monotonic()
            for entry in entries:
                clock.seen(entry.at, host)
                if type(entry) is GpiChange:
                    door.gpi(entry.input, entry.state, entry.at)
                else:
                    door.add(entry)  # type: ignore[arg-type]
            handed[0] = max(handed[0], last_id)

        kept = journal.entries()
        if kept:
            with lock:
                hand_over([entry for _, entry in kept], max(rid for rid, _ in kept))
            log.info("door %s: rebuilt from its journal (%d read(s) kept)", config.name,
                     len(kept))

        def commit() -> None:
            """Make what the reader delivered durable, then give it to the door. Readers that
            acknowledge (MQTT, HTTP) call this before they acknowledge anything."""
            entries, last_id = journal.commit()
            if entries:
                with lock:
                    hand_over(entries, last_id)

        reader = make_tag_reader(config, self._reader_error(config.name),
                                 client_id=self.config.reader_client_id(config))
        acknowledges = bool(getattr(reader, "acknowledges", False))

        def commit_unacknowledged() -> None:
            """Readers that cannot be acknowledged (serial, LLRP, replay): kept in groups; a
            refusal loses those reads, loudly."""
            try:
                commit()
            except JournalError as exc:
                self.refused_reads += 1
                log.error("door %s: reads lost (the reader cannot be told to send again): %s",
                          config.name, exc)

        bounds = ReadBounds(max_ahead_s=config.max_ahead_s, max_behind_s=config.max_behind_s)
        counts = self.reader_counts[("door", config.name)]

        def on_read(read: TagRead) -> None:
            counts.read()
            reason = check_read(read, now(), bounds)
            if reason is not None:
                self._bad_read(config.name, reason, read)
                return
            journal.put(read)
            if not acknowledges and journal.buffered >= UNACKED_GROUP:
                commit_unacknowledged()

        def on_gpi(input: int, state: bool, at: datetime) -> None:
            journal.put_gpi(input, state, at)
            if not acknowledges:
                commit_unacknowledged()

        def on_state(up: bool) -> None:
            with lock:
                if up:
                    clock.online(time.monotonic())
                    online.set()
                elif online.is_set():
                    online.clear()
                    door.interrupt()  # a cycle open now is not covered completely
            report_state(up)

        hook = getattr(reader, "set_gpi_handler", None)  # readers that report GPI inputs
        if callable(hook):
            hook(on_gpi)
        kwargs: dict[str, Any] = {"commit": commit} if acknowledges else {}
        reading = threading.Event()  # set: the reader stops (the agent stops, or this door)
        thread = threading.Thread(
            target=reader.run, name=f"reader-{config.name}",
            args=(on_read, reading, on_state), kwargs=kwargs, daemon=True,
        )
        thread.start()
        try:
            self._door_loop(config, door, journal, keeper, clock, online, lock, handed,
                            reader, commit_unacknowledged if not acknowledges else None)
        finally:
            reading.set()
            thread.join(5)
        if not acknowledges:
            commit_unacknowledged()
        with lock:
            events = door.finish()
            reports = door.take_reports()
            horizon, live = door.journal_marks()
            upto = handed[0]
        if self.keep_door(keeper, events, last=True) or keeper.backlog_saved:
            journal.trim(upto, horizon, live)
        self._door_reports(door, reports)

    def _door_loop(self, config: PortalConfig, door: Door, journal: DoorJournal,
                   keeper: DoorKeeper, clock: ReaderClock, online: threading.Event,
                   lock: threading.Lock, handed: list[int], reader: Any,
                   commit_unacknowledged: Callable[[], None] | None) -> None:
        """Until the agent stops: passes that ended become movements; the journal is trimmed."""
        trim_due = 0.0
        while not self._stop.wait(DOOR_TICK_S):
            if commit_unacknowledged is not None:
                commit_unacknowledged()
            if not online.is_set():
                continue  # hold the watermark: the reader may flush a backlog when it is back
            with lock:
                mark = clock.watermark(now(), time.monotonic(),
                                       getattr(reader, "caught_up_at", None))
                events = door.advance(mark) if mark is not None else []
                reports = door.take_reports()
                horizon, live = door.journal_marks()
                upto = handed[0]
            on_disk = self.keep_door(keeper, events) or keeper.backlog_saved
            self._door_reports(door, reports)
            host = time.monotonic()
            if on_disk and (events or host >= trim_due):
                journal.trim(upto, horizon, live)  # what the door no longer needs
                trim_due = host + TRIM_EVERY_S

    def _reader_error(self, door: str) -> Callable[[str, bytes], None]:
        def on_error(reason: str, raw: bytes) -> None:
            self.bad_reads += 1
            counts = self.reader_counts[("door", door)]
            counts.read()  # a report that came, unreadable: a read and a bad one
            counts.bad_read()
            log.warning("door %s: unreadable report (%s): %r", door, reason, raw[:80])
            self._keep_bad_input(door, reason, raw.decode("utf-8", "replace"))
        return on_error

    def _bad_read(self, door: str, reason: str, read: TagRead) -> None:
        self.bad_reads += 1
        self.reader_counts[("door", door)].bad_read()
        log.warning("door %s: read refused (%s): %s", door, reason, read.epc[:64])
        self._keep_bad_input(door, reason, read_sample(read))

    def _keep_bad_input(self, door: str, reason: str, raw: str) -> None:
        """A bounded sample of bad input, kept for diagnosis (the outbox bounds the table)."""
        try:
            self.outbox.record_exception(f"door:{door}", reason, raw[:512])
        except Exception:  # diagnostics must never stop a door
            log.exception("door %s: bad input not recorded", door)

    def _door_reports(self, door: Door, reports: list[CycleReport]) -> None:
        """Cycle summaries: a bounded raw sample and unknown EPCs kept for diagnosis."""
        source = f"door:{door.name}"
        for r in reports:
            if r.samples:
                self.outbox.record_samples(source, r.samples)
            for epc in r.unknown_tags:
                self.outbox.record_exception(source, door.unknown_reason(epc) or "unknown EPC",
                                             epc)
            if r.overflow:
                self.outbox.record_exception(
                    source, f"over {door.config.max_tags} tags in a cycle: "
                    f"{r.overflow} reads of further tags dropped")
            log.info("door %s cycle %s: %d tags (%d glimpsed, %d excluded, %d stray, %d unknown), "
                     "%d events", door.name, r.opened.isoformat(timespec="seconds"), r.tags,
                     r.glimpsed, r.excluded, r.stray, r.unknown, r.events)

    def _run_simulated_door(self, config: PortalConfig, door: Door) -> None:
        self.device_online[config.name] = True
        pallets = simulated_pallets(config)
        lag = timedelta(seconds=config.latency_s)
        passed = 0
        keeper = DoorKeeper(self.outbox, door, documents=self.documents,
                            alerts=self.door_alerts.get(config.name))
        counts = self.reader_counts[("door", config.name)]

        def tick() -> None:
            self.keep_door(keeper, door.advance(now() - lag))
            self._door_reports(door, door.take_reports())

        while not self._stop.is_set():
            passed += 1
            for read in next(pallets):
                delay = (read.at - now()).total_seconds()
                if delay > 0 and self._stop.wait(delay):
                    break
                counts.read()
                door.add(read)
                tick()
            deadline = time.monotonic() + config.sim_interval_s
            while time.monotonic() < deadline and not self._stop.wait(0.1):
                tick()
            if config.sim_pallets and passed >= config.sim_pallets:
                break
        self.keep_door(keeper, door.finish(), last=True)
        self._door_reports(door, door.take_reports())
