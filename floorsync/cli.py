"""The ``floorsync`` command: the one composition root, reaching across packages lazily.

An edge host has only the edge extra installed: ``floorsync edge`` must never import the server
(FastAPI, uvicorn), so each command imports what it needs inside its own function. Errors from
any package become a one-line message and exit status 2 here, in one place.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from floorsync.edge.errors import EdgeError

COMMANDS: dict[str, str] = {
    "edge": "run the edge agent on a scanner or reader host",
    "server": "run the central service (HTTP API and MQTT ingest)",
    "broker": "run the embedded MQTT broker (amqtt) for a small single-host site",
    "demo": "broker, central service and two simulated edges, on one host",
    "bench": "measure end-to-end throughput and latency against raw paho and raw SQLite",
    "chaos": "randomized fault campaign over both paths: counts lost and doubled events",
    "decode": "interpret a scanned code or an EPC (GS1 via biip, EPC via epcpy)",
    "devices": "list serial ports and input devices that look like scanners",
    "enroll": "give a device its broker identity (password or client certificate), ACL block "
              "and edge TOML",
    "revoke": "take a device's broker identity back (password entry, ACL block, certificate "
              "via the CRL)",
    "token": "make an API token for the central service (the plain token once, its hash line)",
}


def _database(text: str) -> Path | str:
    """``--db``: a SQLite file, or a URL kept as text (a Path would fold its ``//``)."""
    return text if "://" in text else Path(text)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _log_context(args: argparse.Namespace, **fields: object) -> None:
    """Fields every JSON log line of this process carries (floorsync/logs.py)."""
    setup = getattr(args, "logs", None)
    if setup is not None:
        setup.context(**fields)


def _log_secrets(args: argparse.Namespace, values: Sequence[str | None],
                 urls: Sequence[object] = ()) -> None:
    """Values no log line may show: passwords and tokens as given, and the passwords inside
    URLs (a broker's, a reader's, a database's)."""
    from floorsync import logs

    setup = getattr(args, "logs", None)
    if setup is not None:
        setup.secrets(*values, *(logs.url_password(u) for u in urls))


def _plain_tokens(env_value: str | None) -> list[str]:
    from floorsync import logs

    return list(logs.plain_tokens(env_value))


def cmd_edge(args: argparse.Namespace) -> int:
    from floorsync.edge import config as edge_config

    if args.edge_command == "replay":
        from datetime import datetime

        from floorsync.edge.replay import replay

        start = datetime.fromisoformat(args.start) if args.start else None
        if start is not None and start.tzinfo is None:
            raise EdgeError("--start needs a UTC offset, e.g. 2026-11-22T08:00+01:00")
        return replay(args.file, edge_config.load(args.config), start=start)

    if args.edge_command == "status":
        config = edge_config.load(args.config, outbox_path=args.outbox)
        return _edge_status(args.json, config.outbox_path,
                            int(config.outbox_cap_mb * 1024 * 1024), config)

    from floorsync.edge.agent import EdgeAgent

    config = edge_config.load(
        args.config,
        site=args.site,
        device=args.device,
        outbox_path=args.outbox,
        broker=args.broker,
        protocol=args.protocol,
    )
    if args.serial:
        from dataclasses import replace

        scanner = edge_config.ScannerConfig(name=config.device, port=args.serial, mode=args.mode)
        config = replace(config, scanners=(*config.scanners, scanner)).validate()
    _log_context(args, site=config.site, device=config.device)
    _log_secrets(args, [config.sync.password, *(s for p in config.portals
                                                 for s in (p.password, p.token))],
                 urls=[config.sync.broker, *(p.broker for p in config.portals)])
    stop = _stop_on_signals()
    with EdgeAgent(config) as agent:
        stop.wait()
        log = logging.getLogger("floorsync.edge")
        log.info("stopping: %d captured, backlog %d", agent.captured,
                 agent.outbox.stats().backlog)
    return 0


def _edge_status(as_json: bool, outbox: Path, cap_bytes: int, config: object) -> int:
    """``floorsync edge status``: local, read-only; works with the broker down and the agent
    stopped. Exit status 0, or 1 when the agent is not running."""
    import json

    from floorsync.edge import status

    found = status.report(outbox, cap_bytes, config=config)
    print(json.dumps(found) if as_json else status.format_report(found))
    return 0 if found["agent"]["running"] else 1


def cmd_server(args: argparse.Namespace) -> int:
    env = os.environ  # every server command's log (the replica's, a backup's) masks these
    _log_secrets(args, [*_plain_tokens(env.get("FLOORSYNC_TOKENS")),
                        env.get("FLOORSYNC_MQTT_PASSWORD"), env.get("FLOORSYNC_NATS_PASSWORD")],
                 urls=[env.get("FLOORSYNC_DATABASE"), env.get("FLOORSYNC_BROKER"),
                       getattr(args, "db", None),
                       *(env.get("FLOORSYNC_REPLICA") or "").split(","),
                       *(getattr(args, "replica", None) or "").split(",")])
    if args.server_command == "backup":
        from floorsync.server.backup import backup

        print(backup(args.db, args.to, force=args.force).summary("backup: wrote"))
        return 0
    if args.server_command == "restore":
        from floorsync.server.backup import restore

        print(restore(args.source, args.db, keep=not args.discard_old, force=args.force)
              .summary("restore: put"))
        return 0
    from floorsync.server.run import serve
    from floorsync.server.settings import Settings

    if args.replica is not None:  # the store only, shared with the other replicas; no HTTP
        from floorsync.server.replica import ReplicaSettings
        from floorsync.server.replica import main as replica_main

        found = Settings.from_env(**({"database": args.db} if args.db else {}))
        replica = ReplicaSettings.from_env(args.replica)  # "": FLOORSYNC_REPLICA's URLs
        # a password file's, a URL's; the documents' publisher's broker login (may be a file's)
        _log_secrets(args, [replica.login.password, found.mqtt_password])
        return replica_main(replica, str(found.database), found.metrics_port)

    overrides = {
        "database": args.db,
        "broker": None if args.broker == "none" else args.broker,
        "mqtt_protocol": args.protocol,
        "http_host": args.host,
        "http_port": args.port,
    }
    if args.broker is None:
        overrides.pop("broker")
    given = {k: v for k, v in overrides.items() if v is not None or k == "broker"}
    settings = Settings.from_env(**given)
    _log_secrets(args, [settings.mqtt_password], urls=[str(settings.database), settings.broker])
    serve(settings)
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from floorsync.broker import EmbeddedBroker

    stop = _stop_on_signals()
    with EmbeddedBroker(host=args.host, port=args.port) as broker:
        print(f"embedded broker (MQTT 3.1.1) listening on {broker.url}", flush=True)
        stop.wait()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from floorsync.demo import run_demo

    setup = getattr(args, "logs", None)
    return run_demo(port=args.port, duration=args.duration, broker=args.broker, data=args.data,
                    log_format=setup.format if setup is not None else "text")


# Benchmarks of one package, run in this process; each returns a dict of figures.
IN_PROCESS_SUITES = ("devices", "floor", "ledger", "direction", "receipts", "orders", "epcis",
                     "kpi")


def _run_in_process_suite(args: argparse.Namespace) -> Mapping[str, object]:
    if args.suite == "devices":
        from floorsync.devices.bench import run

        return run(seconds=args.seconds)
    if args.suite == "floor":
        from floorsync.edge.floorbench import run as run_floor

        return run_floor()
    if args.suite == "direction":
        from floorsync.edge.dockbench import run as run_direction

        return run_direction(scenarios=args.scenarios, seed=args.seed)
    if args.suite == "receipts":
        from floorsync.server.receiptbench import run as run_receipts

        return run_receipts()
    if args.suite == "orders":
        from floorsync.server.orderbench import run as run_orders

        return run_orders(on_hand=args.on_hand)
    if args.suite == "epcis":
        from floorsync.server.epcisbench import run_epcis_export

        return run_epcis_export()
    if args.suite == "kpi":
        from floorsync.server.kpibench import run as run_kpi

        return run_kpi()
    from floorsync.server.bench import run as run_ledger

    return run_ledger(on_hand=args.on_hand, db=args.db)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.suite in IN_PROCESS_SUITES:
        import json

        result = _run_in_process_suite(args)
        if args.json:
            print(json.dumps(result))
        else:
            for key, value in result.items():
                shown = (f"{value:>12,.2f}" if isinstance(value, int | float)
                         else "n/a" if value is None else str(value))
                print(f"{key:32} {shown}")
        return 0
    from floorsync.bench import reader as readerbench

    reader = {"reads": args.reads, "per_tag": args.per_tag, "rate": args.rate,
              "seconds": args.paced_seconds, "per_message": args.per_message}
    if args.suite == "reader":
        return readerbench.main(as_json=args.json, **reader)
    if args.suite == "drain":
        from floorsync.bench import drain

        return drain.main(as_json=args.json, backlog=args.backlog, live_rate=args.live_rate)
    from floorsync.bench.e2e import run_bench

    status = run_bench(as_json=args.json, events=args.events, paced_rate=args.rate,
                       paced_seconds=args.paced_seconds)
    return readerbench.main(as_json=args.json, **reader) or status


def cmd_chaos(args: argparse.Namespace) -> int:
    from floorsync.chaos import run_campaign

    scenarios = [n for part in args.scenarios or () for n in part.split(",") if n] or None
    status, _ = run_campaign(seed=args.seed, faults=args.faults, scenarios=scenarios,
                             as_json=args.json, data=args.data, keep=args.keep,
                             cluster_events=args.cluster_events,
                             cluster_faults=args.cluster_faults)
    return status


# Which extra brings a module an installation may lack.
EXTRA_OF = {
    "fastapi": "server", "starlette": "server", "uvicorn": "server", "pydantic": "server",
    "amqtt": "server", "server": "server", "paho": "edge", "serial": "edge", "evdev": "edge",
    "biip": "edge", "epcpy": "edge", "sqlite_utils": "edge", "sllurp": "llrp",
    "cryptography": "server",
}

IDENTITY_KEYS = ("kind", "gtin", "lot", "serial", "expiry", "quantity", "sscc", "gln", "epc",
                 "location", "command", "asset", "error")


def cmd_decode(args: argparse.Namespace) -> int:
    """One JSON object per code: the keys are fixed, null where absent."""
    import json
    from dataclasses import asdict

    from floorsync.devices.codes import interpret, interpret_epc
    from floorsync.devices.framing import split_aim

    if args.epc is not None:
        found, symbology, raw = asdict(interpret_epc(args.epc)), None, args.epc
    elif args.text is not None:
        text = args.text.replace(args.gs, "\x1d") if args.gs else args.text
        symbology, rest = split_aim(text)
        found, raw = asdict(interpret(
            rest, symbology, location_prefixes=tuple(args.location_prefix or ("LOC:",)),
            location_patterns=tuple(args.location_pattern or ()),
            command_prefix=args.command_prefix,
        )), text
    else:
        print("floorsync decode: give TEXT or --epc HEX", file=sys.stderr)
        return 2
    out = {key: found.get(key) for key in IDENTITY_KEYS}
    out.update(symbology=symbology, raw=raw)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        for key, value in out.items():
            if value is not None:
                print(f"{key:10} {value}")
    return 0 if out["kind"] != "unknown" else 1


def cmd_devices(args: argparse.Namespace) -> int:
    import json

    from floorsync.devices.listing import list_devices

    found = list_devices()
    if args.json:
        print(json.dumps(found))
        return 0
    if not found:
        print("no serial ports or scanner-like input devices found")
    for d in found:
        where = d.get("by_id") or d.get("path")
        print(f"{d.get('kind', '?'):6} {where}  {d.get('description') or ''}"
              + (f"  ({d['error']})" if d.get("error") else ""))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from floorsync import tokens

    print(tokens.render(tokens.new(args.name, args.scopes)), end="")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from floorsync import enroll

    if args.acl_only:
        if args.nats_users is not None:
            raise enroll.EnrollError("--acl-only is for mosquitto's ACL, not --nats-users")
        print(enroll.report_acl_added(enroll.acl_add(args.acl, args.device, args.site), args.acl))
        return 0
    done = enroll.enroll(
        args.device, args.site, out=args.out or Path(args.device), cert=args.cert,
        broker=args.broker, passwd=args.passwd, ca_dir=args.ca_dir, ca_file=args.ca_file,
        device_dir=args.device_dir, days=args.days, acl=args.acl, nats_users=args.nats_users)
    print(enroll.report_enrollment(done))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from floorsync import enroll

    print(enroll.report_revocation(
        enroll.revoke(args.device, passwd=args.passwd, ca_dir=args.ca_dir, acl=args.acl,
                      nats_users=args.nats_users),
        args.passwd))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="floorsync",
        description="Barcode and RFID capture for warehouses: edge agents, central service, demo.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-format", choices=("text", "json"),
                        help="text lines (default), or one JSON object a line with time, level,"
                        " logger, message, site/device and event ids (env FLOORSYNC_LOG_FORMAT)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("edge", help=COMMANDS["edge"])
    p.add_argument("--config", type=Path, help="TOML file (see deploy/examples)")
    p.add_argument("--site")
    p.add_argument("--device")
    p.add_argument("--broker", help="mqtt://host:port")
    p.add_argument("--protocol", choices=("5", "3.1.1"))
    p.add_argument("--outbox", type=Path, help="outbox database file")
    p.add_argument("--serial", help="add a serial scanner on this port")
    p.add_argument("--mode", default="receive", help="workflow mode for --serial")
    p.set_defaults(func=cmd_edge, edge_command=None)
    edge_sub = p.add_subparsers(dest="edge_command", metavar="[replay | status]")
    r = edge_sub.add_parser(
        "replay", help="run recorded scans, tag reads and GPI inputs (JSON lines) through the "
        "floor logic and print the events as JSON lines; no devices, no broker")
    r.add_argument("file", type=Path, help="JSON lines: see README, 'Replay'")
    r.add_argument("--config", type=Path, required=True, help="the edge's TOML config")
    r.add_argument("--start", help="wall time of t=0 (ISO 8601 with offset; default: now)")
    st = edge_sub.add_parser(
        "status", help="this host's outbox depth, oldest unsynced event, broker state and last "
        "ack (read-only; works with the broker down or the agent stopped)")
    st.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                    help="the edge's TOML config (for the outbox path and cap)")
    st.add_argument("--outbox", type=Path, default=argparse.SUPPRESS, help="outbox database file")
    st.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("server", help=COMMANDS["server"])
    p.add_argument("--db", type=_database,
                   help="SQLite database file, or a postgresql:// URL (replicas share one)")
    p.add_argument("--broker", help="mqtt://host:port, or 'none' for HTTP only")
    p.add_argument("--protocol", choices=("5", "3.1.1"))
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--replica", metavar="NATS_URLS", nargs="?", const="",
                   help="run as a replica instead: consume the edges' batches from NATS "
                   "JetStream (nats://host:4222 or tls://, comma-separated for a cluster; "
                   "without a value, env FLOORSYNC_REPLICA) into --db (postgresql://..., "
                   "shared by the replicas); no HTTP. TLS and login: FLOORSYNC_NATS_*")
    p.set_defaults(func=cmd_server, server_command=None)
    _add_backup_parsers(p)

    p = sub.add_parser("broker", help=COMMANDS["broker"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("demo", help=COMMANDS["demo"])
    p.add_argument("--port", type=int, default=8000, help="HTTP port of the central service")
    p.add_argument("--duration", type=float, help="stop after N seconds and print a summary")
    p.add_argument("--broker", help="use this broker instead of the embedded one")
    p.add_argument("--data", type=Path, help="keep databases here (default: a temporary dir)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help=COMMANDS["bench"])
    p.add_argument("suite", nargs="?",
                   choices=("e2e", "reader", "drain", *IN_PROCESS_SUITES),
                   default="e2e",
                   help="e2e (default): the durable path, then the reader path; reader: a "
                   "network reader's messages through journal, door and outbox beside raw "
                   "paho; drain: an edge back from a shift offline drains --backlog events "
                   "to the central service with live scans on top, beside raw paho; "
                   "devices: framing, decoding; "
                   "floor: door logic and handheld scan durability; ledger: apply rate and "
                   "stock lookups with many on-hand rows; direction: tag crossings a door "
                   "gets right on generated dock traffic, per scenario kind; receipts, "
                   "orders: a 10,000-line document accepted (orders: and allocated against "
                   "--on-hand stock lines); epcis: the export's rate and memory; kpi: the "
                   "KPIs on a 90-day ledger")
    p.add_argument("--scenarios", type=int, default=450, help="direction: scenarios")
    p.add_argument("--seed", type=int, default=1, help="direction: traffic seed")
    p.add_argument("--on-hand", type=int, default=1_000_000, help="ledger, orders: stock lines")
    p.add_argument("--db", metavar="URL", help="ledger: run on this postgresql:// server (the "
                   "bench creates and drops its own database there); default: SQLite")
    p.add_argument("--seconds", type=float, default=1.0, help="devices: time per measure")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--events", type=int, default=100_000, help="events for the throughput run")
    p.add_argument("--rate", type=float, default=2000.0, help="paced rate for latency (events/s)")
    p.add_argument("--paced-seconds", type=float, default=10.0)
    p.add_argument("--backlog", type=int, default=1_000_000,
                   help="drain: events in the edge's outbox when it comes back")
    p.add_argument("--live-rate", type=float, default=20.0,
                   help="drain: live scans a second captured during the drain")
    p.add_argument("--reads", type=int, default=100_000, help="reader: reads in the flood")
    p.add_argument("--per-tag", type=int, default=4, help="reader: reads of each tag")
    p.add_argument("--per-message", type=int, default=1,
                   help="reader: reads per MQTT message (a JSON array above 1, as the Zebra "
                   "IoT Connector's batching sends)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("chaos", help=COMMANDS["chaos"])
    p.add_argument("--seed", type=int, help="seed of the random faults (default: random, printed)")
    p.add_argument("--faults", type=int, default=1000, help="faults to inject, over all scenarios")
    p.add_argument("--scenarios", action="append", metavar="A,B",
                   help="scenarios to run (default: all; see floorsync/chaos/scenarios.py)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data", type=Path, help="keep logs and databases here")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--cluster-events", type=int, default=20_000, metavar="N",
                   help="events each cluster scenario streams (floorsync/chaos/cluster.py)")
    p.add_argument("--cluster-faults", type=int, default=5, metavar="N",
                   help="faults in each cluster scenario")
    p.set_defaults(func=cmd_chaos)

    p = sub.add_parser("decode", help=COMMANDS["decode"])
    p.add_argument("text", nargs="?", help="the code as scanned, AIM id (]C1, ]d2, ...) included")
    p.add_argument("--epc", help="an EPC bank as hex")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--gs", help="a character to read as the GS1 separator (e.g. '|')")
    p.add_argument("--location-prefix", action="append", help="site location label prefix")
    p.add_argument("--location-pattern", action="append",
                   help="regex for site location labels (group 'location' names the place)")
    p.add_argument("--command-prefix", default="CMD:", help="site command label prefix")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("devices", help=COMMANDS["devices"])
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_devices)
    _add_enroll_parsers(sub)
    _add_token_parser(sub)
    return parser


def _add_backup_parsers(server: argparse.ArgumentParser) -> None:
    sub = server.add_subparsers(dest="server_command", metavar="[backup | restore]")
    b = sub.add_parser("backup", help="a consistent copy of the database while the service "
                       "runs (SQLite's online backup), checked, written atomically")
    b.add_argument("--db", required=True, metavar="PATH|URL",
                   help="the service's SQLite database, or its postgresql:// URL (pg_dump)")
    b.add_argument("--to", type=Path, required=True, metavar="FILE",
                   help="the backup file to write")
    b.add_argument("--force", action="store_true", help="overwrite an existing backup file")
    r = sub.add_parser("restore", help="put a checked backup in place of the database (the "
                       "service stopped); the old one is kept as DB.before-restore")
    r.add_argument("--from", dest="source", type=Path, required=True, metavar="FILE",
                   help="the backup file")
    r.add_argument("--db", required=True, metavar="PATH|URL",
                   help="the service's SQLite database, or a postgresql:// URL (pg_restore; "
                   "an empty database, or --force)")
    r.add_argument("--discard-old", action="store_true",
                   help="do not keep the replaced database as DB.before-restore")
    r.add_argument("--force", action="store_true",
                   help="overwrite an earlier restore's DB.before-restore")


def _add_token_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("token", help=COMMANDS["token"])
    token_sub = p.add_subparsers(dest="token_command", required=True, metavar="new")
    new = token_sub.add_parser("new", help="a new token: print it once and its tokens-file line")
    new.add_argument("name", help="who holds it (recorded in the audit log), e.g. dashboard")
    new.add_argument("--scopes", default="read", help="read, write or admin (default read)")
    new.set_defaults(func=cmd_token)


def _add_enroll_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    passwd = Path("/etc/mosquitto/floorsync.passwd")
    ca_dir = Path("/etc/mosquitto/ca")
    acl = Path("/etc/mosquitto/floorsync.acl")
    p = sub.add_parser("enroll", help=COMMANDS["enroll"], description=(
        "Run on the broker host. Password (default): a random password is added to mosquitto's "
        "password file and printed once. --cert: a client certificate of the site CA for the "
        "mutual-TLS listener (CN = DEVICE). Writes OUT/edge.toml (mode 0600) for the device, "
        "and adds the device's block to the broker's ACL file: its own topics at SITE only (a "
        "device without one has no rights). Then reload mosquitto."))
    p.add_argument("device", help="the device name: its MQTT username and certificate CN")
    p.add_argument("--site", required=True)
    p.add_argument("--cert", action="store_true",
                   help="a client certificate (mutual TLS) instead of a password")
    p.add_argument("--out", type=Path, help="where to write the device's files (default ./DEVICE)")
    p.add_argument("--broker", help="the URL the device connects to (default "
                   "mqtts://THIS-HOST:8883, with --cert :8884)")
    p.add_argument("--passwd", type=Path, default=passwd, help=f"password file ({passwd})")
    p.add_argument("--ca-dir", type=Path, default=ca_dir,
                   help=f"site CA: ca.crt, ca.key, crl.pem, issued.tsv ({ca_dir})")
    p.add_argument("--ca-file", type=Path, help="CA the device verifies the broker with "
                   "(default with --cert: the site CA's ca.crt; without: the system's CAs)")
    p.add_argument("--device-dir", type=Path, default=Path("/etc/floorsync"),
                   help="where the device will keep ca.crt and its certificate (/etc/floorsync)")
    p.add_argument("--days", type=int, default=825, help="certificate validity (825)")
    p.add_argument("--acl", type=Path, default=acl, help=f"the broker's ACL file ({acl})")
    p.add_argument("--acl-only", action="store_true", help="only add the ACL block, no "
                   "credentials: for a device whose broker login exists (migrating an ACL)")
    p.add_argument("--nats-users", type=Path, metavar="FILE", help="the site network's NATS "
                   "cluster instead of mosquitto: add the device's user (bcrypt hash, its own "
                   "subjects) to this users file (/etc/nats/floorsync-users.conf), its TOML "
                   "with protocol 3.1.1; then copy it to every node and reload nats-server")
    p.set_defaults(func=cmd_enroll)
    p = sub.add_parser("revoke", help=COMMANDS["revoke"], description=(
        "Removes the device's password entry and ACL block and adds its certificates to the "
        "CRL; then reload mosquitto (SIGHUP): the device is refused on its next connect."))
    p.add_argument("device")
    p.add_argument("--passwd", type=Path, default=passwd, help=f"password file ({passwd})")
    p.add_argument("--ca-dir", type=Path, default=ca_dir, help=f"site CA directory ({ca_dir})")
    p.add_argument("--acl", type=Path, default=acl, help=f"the broker's ACL file ({acl})")
    p.add_argument("--nats-users", type=Path, metavar="FILE", help="revoke the device's user "
                   "in this NATS users file only (no password matches it any more; the entry "
                   "stays, marked); then copy it to every node and reload nats-server")
    p.set_defaults(func=cmd_revoke)


def _known_errors() -> tuple[type[BaseException], ...]:
    """Error roots of our packages, those importable here (an edge host has no server)."""
    roots: list[type[BaseException]] = [EdgeError]
    try:
        from floorsync.devices.base import DeviceError

        roots.append(DeviceError)
    except ImportError:
        pass
    if "floorsync.enroll" in sys.modules:
        roots.append(sys.modules["floorsync.enroll"].EnrollError)
    if "floorsync.server.errors" in sys.modules:
        roots.append(sys.modules["floorsync.server.errors"].ServerError)
    return tuple(roots)


def main(argv: Sequence[str] | None = None) -> int:
    from floorsync import logs

    args = build_parser().parse_args(argv)
    try:
        args.logs = logs.configure(args.log_level, logs.choose_format(args.log_format))
    except logs.LogError as exc:
        print(f"floorsync: {exc}", file=sys.stderr)
        return 2
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").removeprefix("floorsync.").split(".")[0]
        extra = EXTRA_OF.get(top)
        hint = f"pip install 'floorsync[{extra}]'" if extra else "reinstall floorsync"
        print(f"floorsync {args.command}: missing module {exc.name!r} ({hint})", file=sys.stderr)
        return 2
    except _known_errors() as exc:
        print(f"floorsync {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
