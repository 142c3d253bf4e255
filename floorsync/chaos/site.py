"""One scenario's site: the brokers, the central service and the edge agent as processes, the
floor (a handheld operator or a dock-door reader), the edge's configuration, and what the
faults need prepared (the edge's data directory on a small tmpfs for ``disk-full``, the edge
under libfaketime for ``clock-back``; skipped with the reason when they cannot be had).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from floorsync.chaos.dock import DockReader
from floorsync.chaos.handheld import Operator
from floorsync.chaos.processes import FAKETIME_LIBS, Broker, Central, Edge
from floorsync.chaos.scenarios import Result, Scenario
from floorsync.edge.errors import EdgeError

SITE = "chaos"
TMPFS_MB = 64


class Site:
    """One scenario's site: brokers, central service, the edge, the floor; set up, torn down."""

    def __init__(self, spec: Scenario, seed: int, directory: Path, out: Callable[[str], None],
                 index: int) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        self.dir = directory
        self.out = out
        self.result = Result(spec.name, spec.path, seed)
        self.kinds = list(spec.kinds)
        self.device = "hh-1" if spec.path == "handheld" else "dock-1"
        self.fmt = self.rng.choice(("zebra", "impinj"))  # the dock reader's JSON
        self.mounted = False
        self.clock_offset = 0.0
        self.offset_file = directory / "faketime.offset"
        self.master = -1
        self.operator: Operator | None = None
        self.reader: DockReader | None = None
        self.index = index
        directory.mkdir(parents=True, exist_ok=True)
        self.data = directory / "edge-data"
        self.data.mkdir(exist_ok=True)
        self.outbox = self.data / "outbox.db"
        stall = "stall" in self.kinds
        self.central_broker = Broker(directory / "central-broker", small_queues=stall)
        self.reader_broker = (Broker(directory / "reader-broker") if spec.path == "dock"
                              else None)
        self.central = Central(directory, self.central_broker)
        self.edge: Edge | None = None
        self._mqtt: Any = None
        self._journal = open(directory / "chaos.log", "a", buffering=1)  # noqa: SIM115

    def log(self, text: str) -> None:
        """What happened when, for reading beside the processes' logs."""
        stamp = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
        self._journal.write(f"{stamp} {text}\n")

    # --- set up and tear down --------------------------------------------------------------

    def _skip(self, kind: str, reason: str) -> None:
        if kind in self.kinds:
            self.kinds.remove(kind)
            note = f"{kind} skipped: {reason}"
            self.result.notes.append(note)
            self.out(f"  [{self.spec.name}] {note}")

    def setup(self) -> None:
        if "disk-full" in self.kinds:
            if os.geteuid() != 0:
                self._skip("disk-full", "mounting a tmpfs needs root")
            else:
                done = subprocess.run(
                    ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(self.data)],
                    capture_output=True, text=True)
                if done.returncode != 0:
                    self._skip("disk-full", f"mount -t tmpfs refused: {done.stderr.strip()}")
                else:
                    self.mounted = True
        faketime = None
        if "clock-back" in self.kinds:
            library = next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)
            if library is None:
                self._skip("clock-back", "libfaketime is not installed "
                           "(deploy/bootstrap.sh faketime)")
            else:
                self.offset_file.write_text("+0s\n")
                faketime = (library, self.offset_file)
        if not self.kinds:
            raise EdgeError(f"{self.spec.name}: no fault kind can run here")
        self.central_broker.start()
        if self.reader_broker is not None:
            self.reader_broker.start()
        self.central.start()
        if not self.central.wait_ready(60):
            raise EdgeError(f"central service did not start; see {self.central.log}")
        config = self._edge_config()
        self.edge = Edge(config, self.dir / "edge.log", faketime)
        self.edge.start()
        if self.spec.path == "handheld":
            from floorsync.devices.sim import open_pty

            self.master, slave = open_pty()
            config.write_text(config.read_text().replace("@PORT@", slave))
            time.sleep(0.1)
            self.operator = Operator(self.master, self.edge, self.rng, f"S{self.index:02d}")
            self.operator.start()
        else:
            assert self.reader_broker is not None
            self.reader = DockReader(self.reader_broker, "readers/dock-1/tags", self.fmt,
                                     self.rng, first_serial=self.index * 10_000_000,
                                     log=self.log)
            # pallets start once the edge subscribed: its session exists from then on (on a
            # site, from the day it was installed); reads before that have no one to go to
            if not self.edge.wait_up(60):
                raise EdgeError(f"the edge's reader did not come online; see {self.edge.log}")
            self.reader.start()

    def _edge_config(self) -> Path:
        stall = "stall" in self.kinds
        body = (f'site = "{SITE}"\ndevice = "{self.device}"\n\n'
                f'[outbox]\npath = "{self.outbox}"\ncap_mb = {TMPFS_MB // 2}\n\n'
                f'[sync]\nbroker = "{self.central_broker.url}"\nack_timeout_s = 2.0\n'
                f'batch_size = {20 if stall else 100}\nwindow = {32 if stall else 16}\n'
                'status_interval_s = 2.0\n\n')
        if self.spec.path == "handheld":
            body += ('[[scanners]]\nname = "hh-1"\nport = "@PORT@"\nmode = "receive"\n'
                     'operator = "op-chaos"\ngood_read = "\\u001b7"\nbad_read = "\\u001b8"\n')
        else:
            assert self.reader_broker is not None
            body += ('[[portals]]\nname = "dock-1"\nlocation = "DOCK-1"\n'
                     f'reader = "{self.fmt}-mqtt"\nbroker = "{self.reader_broker.url}"\n'
                     'topic = "readers/dock-1/tags"\ndirection = "auto"\n'
                     'antennas = { "1" = "outside", "2" = "inside" }\n'
                     # extra door keys for experiments, e.g. "latency_s = 5.0"
                     + os.environ.get("FLOORSYNC_CHAOS_DOOR", "").replace(";", "\n") + "\n")
        path = self.dir / "edge.toml"
        path.write_text(body)
        return path

    def teardown(self) -> None:
        if self.operator is not None:
            self.operator.stop()
        if self.reader is not None:
            self.reader.close()
        if self._mqtt is not None:
            with contextlib.suppress(Exception):
                self._mqtt.disconnect()
                self._mqtt.loop_stop()
        if self.edge is not None:
            self.edge.stop()
        self.central.stop()
        self.central_broker.stop()
        if self.reader_broker is not None:
            self.reader_broker.stop()
        if self.master >= 0:
            with contextlib.suppress(OSError):
                os.close(self.master)
        if self.mounted:  # keep the edge's databases for reading afterwards
            with contextlib.suppress(OSError):
                shutil.copytree(self.data, self.dir / "edge-data-copy", dirs_exist_ok=True)
            done = subprocess.run(["umount", str(self.data)], capture_output=True)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(self.data)], capture_output=True)
            self.mounted = False
        self._journal.close()
