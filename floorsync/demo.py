"""``floorsync demo``: a whole site on one host, each part its own process, as on a real floor.

Processes: the broker (embedded amqtt unless ``--broker``), the central service (SQLite, HTTP on
``--port``), a handheld edge whose serial scanner is a pseudo-terminal read through the real
pyserial path, and a dock-door edge with a simulated RFID reader. This process plays the operator:
it types labels into the scanner's terminal. Part of the composition root: it starts the server
as a subprocess and talks to it over HTTP only.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from floorsync.devices.sim import ScriptedScanner, gs1_label, open_pty
from floorsync.edge import wire
from floorsync.edge.errors import EdgeError
from floorsync.edge.expected import decode_expected
from floorsync.localbroker import free_port, wait_for_mqtt

SITE = "demo"
PRODUCTS = [("09501101530003", "L2611A"), ("04012345000009", "L2611B")]
DOOR_GTIN = "80614141123458"  # the simulated door's SGTIN tags (0614141.812345.*)
# Master data the central service gets first: with it, the ledger checks items and locations.
ITEMS_CSV = "sku,gtins,description,tracking\n" + "".join(
    f"DEMO-{n},{gtin},demo product {n},{tracking}\n"
    for n, (gtin, tracking) in enumerate(
        [(PRODUCTS[0][0], "lot"), (PRODUCTS[1][0], "lot"), (DOOR_GTIN, "serial")], start=1)
)
LOCATIONS_CSV = (
    "site,code,kind,parent,name,barcodes\n"
    f"{SITE},{SITE},site,,Demo warehouse,\n{SITE},DOCK,zone,,Docks,\n"
    f"{SITE},DOCK-1,bin,DOCK,Dock door 1,LOC:DOCK-1\n"
    f"{SITE},RECV-1,bin,DOCK,Receiving 1,LOC:RECV-1\n{SITE},Z1,zone,,Zone 1,\n"
    f"{SITE},A-01,aisle,Z1,,\n{SITE},A-01-02,bin,A-01,,LOC:A-01-02\n"
    f"{SITE},A-01-03,bin,A-01,,LOC:A-01-03\n"
)
# The documents: an expected receipt the handheld receives against, short by two (closed at
# the end: its discrepancy is recorded, receipt_short raised), and an order of the door's item
# placed before any is in stock: backordered, then filled by the door's later receipts, then
# picked and shipped by the handheld at the door (CROSS_DOCK) once its pick list is there.
RECEIPT = {"id": "ASN-DEMO", "site": SITE, "supplier": "ACME Foods", "location": "RECV-1",
           "lines": [{"gtin": PRODUCTS[0][0], "lot": PRODUCTS[0][1], "qty": 12}]}
ORDER_QTY = 3
ORDER = {"id": "SO-DEMO", "site": SITE, "ship_to": "Corner Shop, Leeds", "priority": 1,
         "lines": [{"line": 1, "item": "DEMO-3", "qty": ORDER_QTY}]}
# Each round the operator picks one of PRODUCTS[1] from this bin, which nothing ever fills: the
# ledger applies the pick (the floor is the truth) and opens one negative_stock exception.
EMPTY_BIN = "A-01-03"
HANDHELD_FIRST = [  # once: scan the ASN label, then the items (ten of the twelve came)
    "CMD:RECEIVE", "ASN:ASN-DEMO", "QTY:10", gs1_label(PRODUCTS[0][0], lot=PRODUCTS[0][1]),
    "CMD:DONE",
]
HANDHELD_ROUND = [
    # receive at the dock: the location, then the items (a quantity label for a full case)
    "CMD:RECEIVE", "LOC:DOCK-1",
    "QTY:6", gs1_label(PRODUCTS[0][0], lot=PRODUCTS[0][1]),
    gs1_label(PRODUCTS[1][0], lot=PRODUCTS[1][1], qty=4),  # AI 30: four in this case
    # put away: the source, the items, then the destination
    "CMD:PUTAWAY", "LOC:DOCK-1", "QTY:4", gs1_label(PRODUCTS[0][0], lot=PRODUCTS[0][1]),
    "LOC:A-01-02", "CMD:DONE",
    # pick from the bin
    "CMD:PICK", "LOC:A-01-02", "QTY:2", gs1_label(PRODUCTS[0][0], lot=PRODUCTS[0][1]),
    # a pick from a bin the ledger has empty: applied, and a negative-stock exception raised
    "CMD:PICK", f"LOC:{EMPTY_BIN}", gs1_label(PRODUCTS[1][0], lot=PRODUCTS[1][1]),
    "%%garbled%%",  # a bad scan: bad-read feedback, nothing captured, the agent reads on
]
# Once, as soon as the handheld's copy of SO-DEMO lists all its lines (the backorder filled by
# the door's cases): pick them against the order at the door they came in by, then ship them.
# The handheld stages its picks at the door (PICK_TO, its [workflow] pick_to): the goods stay on
# the books there until the ship takes them off, once.
PICK_TO = "DOCK-1"
CROSS_DOCK = [
    "CMD:PICK", f"ORD:{ORDER['id']}", "LOC:DOCK-1", f"QTY:{ORDER_QTY}", gs1_label(DOOR_GTIN),
    "CMD:SHIP", f"ORD:{ORDER['id']}", "LOC:DOCK-1", f"QTY:{ORDER_QTY}", gs1_label(DOOR_GTIN),
]


class _Processes:
    """Children started by the demo; stopped in reverse order, logs kept in the data dir."""

    def __init__(self, data: Path, log_format: str = "text") -> None:
        self.data = data
        self.log_format = log_format
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        log = open(self.data / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the child
        process = subprocess.Popen(
            [sys.executable, "-m", "floorsync", "--log-level", "INFO", "--log-format",
             self.log_format, *args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )
        self.children.append((name, process))
        return process

    def stop(self, name: str) -> None:
        for child_name, process in self.children:
            if child_name == name and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)

    def stop_all(self) -> None:
        for name, _ in reversed(self.children):
            self.stop(name)

    def failed(self) -> list[str]:
        return [f"{n} (exit {p.returncode})" for n, p in self.children
                if p.poll() is not None and p.returncode not in (0, -signal.SIGTERM)]


def _get(url: str, token: str | None = None, timeout: float = 2.0) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                timeout=timeout) as response:
        return json.loads(response.read())


def _post_csv(url: str, text: str, token: str) -> None:
    request = urllib.request.Request(url, data=text.encode(), method="POST", headers={
        "Content-Type": "text/csv", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _post_json(url: str, body: dict[str, Any], token: str) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _wait_log(path: Path, text: str, timeout: float, processes: _Processes) -> None:
    """Until ``text`` shows in a child's log (the handheld's scanner open, say)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not processes.failed():
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise EdgeError(f"{path.name} never said {text!r}; see {path}")


def _wait_http(url: str, timeout: float, processes: _Processes) -> None:
    """Until the open health endpoint answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _get(url)
            return
        except (urllib.error.URLError, OSError, ValueError):
            if processes.failed():
                break
            time.sleep(0.2)
    raise EdgeError(f"the central service did not answer at {url}; see {processes.data}/server.log")


def _edge_config(path: Path, device: str, broker: str, protocol: str, body: str) -> Path:
    path.write_text(
        f'site = "{SITE}"\ndevice = "{device}"\n\n'
        f'[outbox]\npath = "{path.parent / (device + "-outbox.db")}"\n\n'
        f'[sync]\nbroker = "{broker}"\nprotocol = "{protocol}"\n\n' + body
    )
    return path


def _outbox_counts(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        counts = dict(conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"))
        (last_seq,) = conn.execute("SELECT value FROM outbox_meta WHERE key='last_seq'").fetchone()
    counts["captured"] = int(last_seq)
    return counts


def _pick_list_here(outbox: Path) -> bool:
    """Does the handheld's own copy of the order list every unit it orders (the backorder
    filled)? What the operator would see on the handheld's screen."""
    try:
        with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT payload FROM documents WHERE kind = 'order' AND id = ?",
                               (ORDER["id"],)).fetchone()
    except sqlite3.Error:  # not made yet
        return False
    if row is None or row[0] is None:
        return False
    try:
        copy = decode_expected(row[0])
    except wire.WireError:
        return False
    return sum(line.qty for line in copy.lines) >= ORDER_QTY


def _operator(scanner: ScriptedScanner, stop: threading.Event, outbox: Path,
              pace: float = 0.25) -> None:
    """The first codes, then the round again and again; before any mode label (the session
    then holds nothing pending), the order's pick and ship once its pick list is here."""
    for code in HANDHELD_FIRST:
        if stop.wait(pace):
            return
        scanner.type(code)
    cross_dock = True
    while not stop.is_set():
        for code in HANDHELD_ROUND:
            if cross_dock and code.startswith("CMD:") and _pick_list_here(outbox):
                cross_dock = False
                for extra in CROSS_DOCK:
                    if stop.wait(pace):
                        return
                    scanner.type(extra)
            if stop.wait(pace):
                return
            scanner.type(code)


def run_demo(*, port: int, duration: float | None, broker: str | None, data: Path | None,
             log_format: str = "text") -> int:
    """Until ``duration`` or a signal; then the summary. Stopped by Ctrl-C (no ``duration``),
    the central service stays up for the dashboard until a second Ctrl-C: the person who
    watched the floor wants to look at what it came to. Stopped by ``duration`` (a script,
    a test) or SIGTERM (a supervisor), everything stops; either way the last lines say how to
    start the central service again on the demo's database."""
    data = data or Path(tempfile.mkdtemp(prefix="floorsync-demo-"))
    data.mkdir(parents=True, exist_ok=True)
    processes = _Processes(data, log_format)
    stop = threading.Event()
    signals: list[int] = []

    def on_signal(sig: int, _frame: object) -> None:
        signals.append(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    master = -1
    try:
        protocol = "5"
        if broker is None:
            broker_port = free_port()
            processes.start("broker", "broker", "--port", str(broker_port))
            wait_for_mqtt(broker_port, timeout=20)
            broker, protocol = f"mqtt://127.0.0.1:{broker_port}", "3.1.1"
        site_url = f"http://127.0.0.1:{port}"
        api = f"{site_url}/api/v1"
        # this run's own tokens; a person may try the API with them while the demo runs
        read_token, write_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        processes.start("server", "server", "--db", str(data / "central.db"), "--broker", broker,
                        "--protocol", protocol, "--port", str(port),
                        env={"FLOORSYNC_TOKENS": f"{read_token}=read;{write_token}=write",
                             "FLOORSYNC_AUTH": "on", "FLOORSYNC_TOKENS_FILE": ""})
        _wait_http(f"{api}/health", 30, processes)
        _post_csv(f"{api}/items/import", ITEMS_CSV, write_token)
        _post_csv(f"{api}/locations/import", LOCATIONS_CSV, write_token)
        today = time.strftime("%Y-%m-%d", time.gmtime())
        _post_json(f"{api}/receipts", {**RECEIPT, "expected_date": today}, write_token)
        _post_json(f"{api}/orders", {**ORDER, "due": today}, write_token)

        master, slave = open_pty()
        handheld = _edge_config(
            data / "hh-01.toml", "hh-01", broker, protocol,
            f'[workflow]\npick_to = "{PICK_TO}"\n\n'
            f'[[scanners]]\nname = "hh-01"\nport = "{slave}"\nmode = "receive"\n'
            'operator = "op-1"\n',
        )
        door = _edge_config(
            data / "dock-1.toml", "dock-1", broker, protocol,
            '[[portals]]\nname = "dock-1"\nlocation = "DOCK-1"\nreader = "sim"\n'
            'direction = "in"\nsim_interval_s = 5.0\n',
        )
        processes.start("hh-01", "edge", "--config", str(handheld))
        processes.start("dock-1", "edge", "--config", str(door))
        print(f"floorsync demo: central service {api} (OpenAPI: {site_url}/docs)")
        print(f"  broker {broker} (MQTT {protocol}); logs and databases in {data}")
        print(f"  read token:  {read_token}")
        print(f"  write token: {write_token}")
        print(f"  live dashboard: {site_url}/ (log in with the read token)")
        print(f'  try: curl -H "Authorization: Bearer {read_token}" {api}/stock')
        print("  hh-01: handheld on a serial scanner (pty) doing receive, put-away, pick (to"
              f" {PICK_TO}, its staging lane), and on purpose a pick from the empty bin"
              f" {EMPTY_BIN}")
        print("  dock-1: RFID dock door receiving pallets of tagged cases")
        print("  documents: receipt ASN-DEMO (12 expected at RECV-1), order SO-DEMO (3 of the"
              " door's item, none in stock yet: backordered; hh-01 picks and ships it at DOCK-1"
              " once the door's cases fill it)", flush=True)

        _wait_log(data / "hh-01.log", "scanner hh-01 online", 60, processes)
        operator = threading.Thread(
            target=_operator, args=(ScriptedScanner(master), stop, data / "hh-01-outbox.db"),
            daemon=True
        )
        operator.start()
        started = time.monotonic()
        explained: set[str] = set()
        while not stop.wait(3.0):
            _print_progress(api, read_token, explained)
            if processes.failed():
                raise EdgeError(f"demo process failed: {', '.join(processes.failed())}")
            if duration is not None and time.monotonic() - started >= duration:
                break
        stop.set()
        operator.join(2)
        code = _finish(api, read_token, write_token, data, processes)
        if code == 0 and duration is None and signals[:1] == [signal.SIGINT]:
            _keep_serving(site_url, read_token, processes, stop, signals)
        processes.stop_all()
        _how_to_look_again(site_url, read_token, data, port)
        return code
    finally:
        stop.set()
        processes.stop_all()
        if master >= 0:
            os.close(master)


def _print_progress(api: str, token: str, explained: set[str]) -> None:
    """Applied events and stock lines (negative ones always among those shown); the first
    time the deliberately emptied bin shows below zero, why, right there."""
    try:
        stock = _get(f"{api}/stock", token)["items"]
        summary = _get(f"{api}/summary", token)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"  (central service not answering: {exc})", flush=True)
        return
    lines = sorted(stock, key=lambda r: (r["location"], r["item"]))
    negative = [r for r in lines if r["quantity"] < 0]
    keep = negative + [r for r in lines if r["quantity"] >= 0][:max(0, 6 - len(negative))]
    shown = ", ".join(f"{r['location']}:{r['item']}={r['quantity']:g}"
                      for r in lines if r in keep)
    more = f" (+{len(lines) - len(keep)} more)" if len(lines) > len(keep) else ""
    print(f"  applied {summary['events']} events | stock {shown}{more}", flush=True)
    for r in negative:
        if r["location"] == EMPTY_BIN and EMPTY_BIN not in explained:
            explained.add(EMPTY_BIN)
            print(f"  {EMPTY_BIN}:{r['item']}={r['quantity']:g} is below zero on purpose: each"
                  f" round the operator picks one from {EMPTY_BIN}, a bin the ledger has empty,\n"
                  "  to show that the floor is the truth: the pick is applied, not refused, and"
                  " the ledger opens one negative_stock exception for someone to count the bin"
                  " (which goes one lower each round)", flush=True)


def _documents(api: str, token: str, write_token: str) -> None:
    """Close the receipt (its shortage recorded) and say what became of the backorder."""
    request = urllib.request.Request(
        f"{api}/receipts/{RECEIPT['id']}/close", data=json.dumps({"by": "demo"}).encode(),
        method="POST", headers={"Content-Type": "application/json",
                                "Authorization": f"Bearer {write_token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        receipt = json.loads(response.read())
    (line,) = receipt["lines"]
    print(f"receipt {receipt['id']}: expected {line['expected']:g}, received"
          f" {line['received']:g}, {line['status']} {abs(line['difference']):g}; closed with"
          f" {len(receipt['discrepancies'])} discrepancy", flush=True)
    for b in _get(f"{api}/backorders?order={ORDER['id']}&status=all", token)["items"]:
        filled = sum(f["qty"] for f in b["fills"])
        print(f"order {b['order_id']} line {b['line']}: backordered {b['qty']:g} ({b['why']}),"
              f" {filled:g} filled by later receipts (backorder {b['status']})", flush=True)
    order = _get(f"{api}/orders/{ORDER['id']}", token)
    picked = sum(line["picked"] for line in order["lines"])
    shipped = sum(line["shipped"] for line in order["lines"])
    print(f"order {order['id']}: {picked:g} picked, {shipped:g} shipped by hh-01 against it;"
          f" {order['status']}", flush=True)


def _finish(api: str, token: str, write_token: str, data: Path, processes: _Processes) -> int:
    """Let the edges drain, stop them, and print what was captured, applied, pending, rejected."""
    outboxes = [data / "hh-01-outbox.db", data / "dock-1-outbox.db"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if all(_outbox_counts(p).get("pending", 0) + _outbox_counts(p).get("sent", 0) == 0
               for p in outboxes):
            break
        time.sleep(0.2)
    processes.stop("hh-01")
    processes.stop("dock-1")
    counts = [_outbox_counts(p) for p in outboxes]
    summary = _get(f"{api}/summary", token)
    _documents(api, token, write_token)
    captured = sum(c.get("captured", 0) for c in counts)
    pending = sum(c.get("pending", 0) + c.get("sent", 0) for c in counts)
    rejected = sum(c.get("rejected", 0) for c in counts)
    print(f"summary: captured {captured}, applied {summary['events']}, pending {pending},"
          f" rejected {rejected} (central rejections recorded: {summary['rejections']})",
          flush=True)
    by_kind = _get(f"{api}/exceptions/summary", token)
    raised = {k: v for k, v in by_kind.items() if sum(v.values())}
    print("exceptions: " + ("; ".join(
        f"{kind} {', '.join(f'{n} {status}' for status, n in v.items() if n)}"
        for kind, v in sorted(raised.items())) or "none"), flush=True)
    why = {"negative_stock": f"the deliberate picks from the empty bin {EMPTY_BIN} (one for the"
                             " bin, however many picks)",
           "receipt_short": f"{RECEIPT['id']} closed short of what it expected (above)"}
    for kind in sorted(raised):
        if kind in why:
            print(f"  {kind}: {why[kind]}", flush=True)
    failed = processes.failed()
    if failed:
        print(f"demo: processes failed: {', '.join(failed)}; logs in {data}", file=sys.stderr)
        return 1
    return 0


def _keep_serving(site_url: str, token: str, processes: _Processes, stop: threading.Event,
                  signals: list[int]) -> None:
    """After the first Ctrl-C: the edges have stopped, the central service stays up with
    everything the demo did, until the next Ctrl-C (or SIGTERM)."""
    stop.clear()
    if len(signals) > 1:  # pressed again while the edges drained: stop now
        return
    print("the floor has stopped; the central service is still running with what it did:",
          flush=True)
    print(f"  live dashboard: {site_url}/ (log in with the read token {token})", flush=True)
    print(f'  try: curl -H "Authorization: Bearer {token}" {site_url}/api/v1/exceptions',
          flush=True)
    print("press Ctrl-C again to stop it", flush=True)
    while not stop.wait(1.0):
        if any(n == "server" and p.poll() is not None for n, p in processes.children):
            print("demo: the central service stopped by itself; see server.log", file=sys.stderr)
            return


def _how_to_look_again(site_url: str, token: str, data: Path, port: int) -> None:
    """The exact command that serves the demo's database again (HTTP only: the broker is gone),
    then where to look. Printed once everything has stopped, so nothing here points at a
    service that is not running."""
    floorsync = Path(sys.executable).with_name("floorsync")
    command = ([str(floorsync)] if floorsync.exists() else [sys.executable, "-m", "floorsync"])
    env = f"FLOORSYNC_TOKENS={shlex.quote(f'{token}=read')}"
    if "FLOORSYNC_TOKENS_FILE" in os.environ:  # the demo's own tokens only
        env += " FLOORSYNC_TOKENS_FILE="
    print(f"the demo has stopped; its databases and logs stay in {data}. To look at them again,"
          " start the central service on its database:", flush=True)
    serve = shlex.join([*command, "server", "--db", str(data / "central.db"), "--broker", "none",
                        "--port", str(port)])
    print(f"  {env} {serve}", flush=True)
    print(f"then open {site_url}/ (log in with the read token {token}), or", flush=True)
    print(f'  curl -H "Authorization: Bearer {token}" {site_url}/api/v1/exceptions', flush=True)
