"""Edge agent configuration: one TOML file per host, command-line options on top.

Example (``deploy/examples/handheld.toml``)::

    site = "wh1"
    device = "hh-07"

    [outbox]
    path = "/var/lib/floorsync/outbox.db"
    cap_mb = 256
    retention_h = 24

    [sync]
    broker = "mqtt://central.example:1883"
    # with TLS: broker = "mqtts://central.example:8883", ca_file = "/etc/floorsync/ca.crt",
    # and for mutual TLS cert_file and key_file (``edge.sync.SyncSettings``; floorsync enroll)

    [[scanners]]
    name = "hh-07"
    port = "/dev/serial/by-id/usb-Honeywell_1900-if00"
    mode = "receive"
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from floorsync.edge import wire
from floorsync.edge.dooralert import ALERTS, CHECKS
from floorsync.edge.epcmatch import parse_patterns
from floorsync.edge.errors import ConfigError
from floorsync.edge.sync import SyncSettings, hostname_device

SUFFIXES = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n", "tab": b"\t"}
READERS = ("sim", "serial", "impinj-mqtt", "zebra-mqtt", "impinj-http", "zebra-http", "llrp",
           "replay")
MODES = ("receive", "putaway", "move", "pick", "pack", "ship", "return", "count", "adjust")


@dataclass(frozen=True, slots=True)
class ScannerConfig:
    """A scanner. ``kind = "serial"`` (USB-COM): ``port`` is a path (prefer
    /dev/serial/by-id/...) or pyserial URL. ``kind = "wedge"`` (keyboard mode): ``port`` is an
    input device (prefer /dev/input/by-id/...), decoded with the scanner's ``layout``."""

    name: str
    port: str
    kind: str = "serial"
    layout: str = "us"  # wedge: the keyboard layout the scanner is set to, never the host's
    grab: bool = True  # wedge: exclusive, so scans do not also type into the console
    baudrate: int = 9600
    suffix: str = "cr"
    mode: str = "receive"
    fixed_mode: bool = False  # true: mode labels for other modes are refused
    duplicate_window_ms: float = 500  # the same code again within this is ignored
    operator: str | None = None
    good_read: str | None = None  # bytes sent after the commit, e.g. "\x1b7" (Honeywell ESC 7)
    bad_read: str | None = None


@dataclass(frozen=True, slots=True)
class PortalConfig:
    """An RFID dock door (or count point) and its reader.

    ``reader``: ``sim`` (scripted simulator), ``serial`` (``port``, ``line_format``,
    ``baudrate``), ``impinj-mqtt`` / ``zebra-mqtt`` (``broker``, ``topic``), ``impinj-http`` /
    ``zebra-http`` (listens on ``host``:``http_port``), ``llrp`` (``host``; needs the llrp
    extra), ``replay`` (``path`` of JSON lines, ``realtime``).

    Network readers' security (deploy/devices/rfid-readers.md): MQTT readers log in to the
    reader broker with ``username``/``password``; ``mqtts://`` brokers are verified against
    ``ca_file`` (the system's CAs without it; the host name always), with ``cert_file`` and
    ``key_file`` as a client certificate. HTTP receivers require the readers' HTTP Basic
    (``username``/``password``) or Bearer ``token`` when set, serve HTTPS with ``cert_file``
    and ``key_file``, and refuse bodies over ``max_body_mb``.

    Floor logic (``edge.portal``): ``antennas`` maps antenna numbers to roles, as a table
    ``{"1" = "outside", "2" = "inside"}`` or a list ``[{antenna = 1, role = "outside"}]``;
    roles are ``outside``, ``inside`` and ``door`` (in the frame, no side). Without it every
    antenna is a ``door`` antenna; with it, reads of other antennas are ignored (counted).
    ``direction``: ``auto`` (from which side saw the tag first and last; needs an outside and an
    inside antenna, and means ``in`` for a door without an antenna map), ``in`` (receive here),
    ``out`` (ship from here); with ``auto``, a pass seen on one side only waits
    ``transition_s`` of silence (not ``quiet_s``) for the other side, and one seen on both
    sides ``reversal_s`` (a forklift backing out of the far side). ``mode = "count"``
    makes one count event per cycle instead of movements. A cycle is time-boxed (``cycle_s``)
    unless ``gpi`` names the photo-eye input.

    Door alerts (``edge.dooralert``): ``alert`` is ``log`` (the log line alone), ``command``
    (``alert_command``, a list: the program and its first arguments), ``impinj-gpo``
    (``alert_url``, ``alert_username``/``alert_password``, ``alert_ca_file``) or ``zebra-gpo``
    (``alert_topic`` on a zebra-mqtt portal's ``broker``); ``alert_gpo`` a port or a table
    check -> port, ``alert_pulse_ms``; ``alert_on`` the checks that alert; ``alert_timeout_s``
    and ``alert_queue`` bound what a slow output can hold up.
    """

    name: str
    location: str
    reader: str = "sim"
    port: str | None = None
    baudrate: int = 115200
    line_format: str = "{epc},{antenna},{rssi}"
    broker: str | None = None
    topic: str | None = None
    client_id: str | None = None  # MQTT readers; default floorsync-{site}-{device}-{name}
    protocol: str = "3.1.1"  # MQTT readers: "3.1.1" (as readers publish; lighter) or "5"
    username: str | None = None  # MQTT: broker login; HTTP: the Basic credentials required
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)  # HTTP: the Bearer token required
    ca_file: str | None = None  # MQTT (mqtts://): the CA the broker's certificate chains to
    cert_file: str | None = None  # MQTT: client certificate; HTTP: the receiver's own (HTTPS)
    key_file: str | None = None
    max_body_mb: float = 16.0  # HTTP: larger bodies are refused (413)
    host: str = "127.0.0.1"
    http_port: int = 8080
    path: str | None = None
    realtime: bool = True
    mode: str = "door"  # door: one movement per tag per pass; count: one count per cycle
    direction: str = "auto"  # auto | in (receive here) | out (ship from here)
    antennas: Any = ()  # normalised to ((antenna, role), ...), sorted
    include: tuple[str, ...] = ()  # EPC patterns (edge.epcmatch); empty: every tag
    exclude: tuple[str, ...] = ()  # EPC patterns never counted (the door's own SGLN tag)
    company_prefixes: tuple[str, ...] = ()  # shorthand: GS1 company prefixes added to include
    quiet_s: float = 1.0  # an observed tag silent this long is lost: its pass ends
    transition_s: float = 8.0  # a pass seen on one side only (auto) waits this long (dead zone)
    reversal_s: float = 3.0  # a pass seen on both sides (auto) waits this long (a back-out)
    min_reads: int = 2  # reads before a tag is observed (fewer: a glimpse, expires quietly)
    min_ms: float = 0.0  # or read over at least this many ms (0: reads only)
    rssi_min: float | None = None  # reads weaker than this (dBm) are ignored
    cycle_s: float = 10.0  # time-boxed event cycles (when gpi is not set)
    gpi: int | None = None  # photo-eye input opening and closing cycles
    stable_s: float = 2.0  # a GPI cycle closes this long after the trigger and the last new tag
    arbitration_s: float = 2.0  # a tag at two doors within this counts at the stronger (0: off)
    hold_s: float = 60.0  # the same movement of a tag at this door is not repeated within this
    max_tags: int = 10_000  # distinct tags per cycle; reads of further tags are dropped, counted
    samples: int = 50  # raw reads kept per cycle for diagnosis (the first ones)
    unmoved: str = "ignore"  # observed but no direction (one side, backed out): ignore | observe
    latency_s: float = 0.5  # reads reach the agent up to this late: passes close this far behind
    max_ahead_s: float = 300.0  # reads dated further ahead of host time are refused (counted)
    max_behind_s: float = 7 * 24 * 3600.0  # reads dated further behind host time are refused
    sim_pallets: int = 0  # with reader "sim": pallets to run through (0: forever)
    sim_interval_s: float = 4.0
    alert: str = "log"  # log | command | impinj-gpo | zebra-gpo (edge.dooralert)
    alert_on: tuple[str, ...] = ("over", "unexpected")  # add "expected" for a good signal
    alert_command: tuple[str, ...] = ()  # command: the program and its first arguments
    alert_timeout_s: float = 5.0  # a command or reader request taking longer has failed
    alert_queue: int = 64  # alerts waiting for the output; more are dropped (counted)
    alert_gpo: Any = 1  # GPO port, or a table check -> port; normalised to ((check, port), ...)
    alert_pulse_ms: int = 2000  # how long the GPO stays on
    alert_url: str | None = None  # impinj-gpo: the IoT device interface, https://reader/api/v1
    alert_username: str | None = None  # impinj-gpo: the reader's REST login
    alert_password: str | None = field(default=None, repr=False)
    alert_ca_file: str | None = None  # impinj-gpo: the CA the reader's certificate chains to
    alert_topic: str | None = None  # zebra-gpo: the management interface's command topic

    def __post_init__(self) -> None:
        object.__setattr__(self, "antennas", _antenna_roles(self.name, self.antennas))
        object.__setattr__(self, "alert_gpo", _alert_ports(self.name, self.alert_gpo))

    @property
    def roles(self) -> dict[int, str]:
        """Antenna number -> role (empty: every antenna is a door antenna)."""
        return dict(self.antennas)

    def check(self) -> None:
        """Raise ConfigError for the first setting that cannot work."""
        where = f"portal {self.name}"
        if self.reader not in READERS:
            raise ConfigError(f"{where}: reader must be one of {READERS}")
        if self.protocol not in ("3.1.1", "5"):
            raise ConfigError(f"{where}: protocol must be '3.1.1' or '5'")
        if self.mode not in ("door", "count"):
            raise ConfigError(f"{where}: mode must be 'door' or 'count'")
        if self.direction not in ("auto", "in", "out"):
            raise ConfigError(f"{where}: direction must be 'auto', 'in' or 'out'")
        if self.unmoved not in ("ignore", "observe"):
            raise ConfigError(f"{where}: unmoved must be 'ignore' or 'observe'")
        sides = set(self.roles.values())
        if self.mode == "door" and self.direction == "auto" and self.antennas and not (
            {"outside", "inside"} <= sides
        ):
            raise ConfigError(
                f"{where}: direction 'auto' needs an 'outside' and an 'inside' antenna; "
                "a door with one side needs direction = 'in' or 'out'"
            )
        for key in ("quiet_s", "transition_s", "reversal_s", "cycle_s", "stable_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{where}: {key} must be positive")
        for key in ("min_ms", "arbitration_s", "hold_s", "latency_s"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"{where}: {key} must not be negative")
        for key in ("min_reads", "max_tags"):
            if not (isinstance(getattr(self, key), int) and getattr(self, key) >= 1):
                raise ConfigError(f"{where}: {key} must be a positive integer")
        if not (isinstance(self.samples, int) and self.samples >= 0):
            raise ConfigError(f"{where}: samples must be a non-negative integer")
        for key in ("max_ahead_s", "max_behind_s"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and value > 0
            ):
                raise ConfigError(f"{where}: {key} must be a positive number of seconds")
        if self.gpi is not None and (isinstance(self.gpi, bool) or not isinstance(self.gpi, int)):
            raise ConfigError(f"{where}: gpi must be an input number")
        self._check_security(where)
        self._check_alert(where)
        try:
            parse_patterns(self.include + self.company_prefixes)
            parse_patterns(self.exclude)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None


    def _check_security(self, where: str) -> None:
        """Credentials and TLS files only where the reader kind uses them, never ignored."""
        given = [k for k in _SECURITY if getattr(self, k) is not None]
        for key in given:
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}: {key} must be non-empty text")
        mqtt, http = self.reader.endswith("-mqtt"), self.reader.endswith("-http")
        if given and not (mqtt or http):
            raise ConfigError(f"{where}: {', '.join(given)} only apply to the network readers "
                              "(impinj-mqtt, zebra-mqtt, impinj-http, zebra-http)")
        if (self.username is None) != (self.password is None):
            raise ConfigError(f"{where}: username and password go together")
        if self.key_file is not None and self.cert_file is None:
            raise ConfigError(f"{where}: key_file needs cert_file")
        if mqtt:
            if self.token is not None:
                raise ConfigError(f"{where}: token is for HTTP readers; an MQTT reader logs in "
                                  "with username and password")
            tls_files = [k for k in ("ca_file", "cert_file", "key_file") if k in given]
            if tls_files and not (self.broker or "").lower().startswith(("mqtts://", "ssl://")):
                raise ConfigError(f"{where}: {', '.join(tls_files)} need an mqtts:// broker "
                                  f"(got {self.broker!r})")
        if http:
            if self.ca_file is not None:
                raise ConfigError(f"{where}: ca_file is for MQTT readers (an HTTP receiver "
                                  "serves TLS with cert_file and key_file)")
            if isinstance(self.max_body_mb, bool) or not (
                isinstance(self.max_body_mb, int | float) and 0 < self.max_body_mb <= 1024
            ):
                raise ConfigError(f"{where}: max_body_mb must be a number of MiB, 0-1024")
        for key in ("ca_file", "cert_file", "key_file"):
            if key in given and not Path(getattr(self, key)).is_file():
                raise ConfigError(f"{where}: {key} {getattr(self, key)!r}: no such file")


    def _check_alert(self, where: str) -> None:
        """The door alert's keys: only those of the output chosen, each usable."""
        if self.alert not in ALERTS:
            raise ConfigError(f"{where}: alert must be one of {ALERTS}")
        given = [k for k, kinds in _ALERT_KEYS.items()
                 if getattr(self, k) != _ALERT_DEFAULTS[k] and self.alert not in kinds]
        if given:
            raise ConfigError(f"{where}: {', '.join(given)} do not apply to alert ="
                              f" {self.alert!r}")
        if not (isinstance(self.alert_on, tuple) and set(self.alert_on) <= set(CHECKS)):
            raise ConfigError(f"{where}: alert_on must be a list of {CHECKS}")
        timeout = self.alert_timeout_s
        if isinstance(timeout, bool) or not (math.isfinite(timeout) and 0 < timeout <= 300):
            raise ConfigError(f"{where}: alert_timeout_s must be a number of seconds, 0-300")
        for key, top in (("alert_queue", 100_000), ("alert_pulse_ms", 600_000)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ConfigError(f"{where}: {key} must be a whole number from 1 to {top}")
        if self.alert == "command" and not (
            self.alert_command and all(isinstance(a, str) and a for a in self.alert_command)
        ):
            raise ConfigError(f"{where}: alert = 'command' needs alert_command, a list of"
                              " non-empty text (the program, then its first arguments)")
        if self.alert == "impinj-gpo":
            url = (self.alert_url or "").lower()
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{where}: alert = 'impinj-gpo' needs alert_url, the reader's"
                                  " IoT device interface (https://reader/api/v1)")
            if (self.alert_username is None) != (self.alert_password is None):
                raise ConfigError(f"{where}: alert_username and alert_password go together")
            if self.alert_ca_file is not None and not (
                url.startswith("https://") and Path(self.alert_ca_file).is_file()
            ):
                raise ConfigError(f"{where}: alert_ca_file needs an https:// alert_url and an"
                                  f" existing file (got {self.alert_ca_file!r})")
        if self.alert == "zebra-gpo":
            if self.reader != "zebra-mqtt":
                raise ConfigError(f"{where}: alert = 'zebra-gpo' needs reader = 'zebra-mqtt'"
                                  " (its broker carries the management commands)")
            topic = self.alert_topic or ""
            if not topic or any(c in topic for c in "+#\0"):
                raise ConfigError(f"{where}: alert = 'zebra-gpo' needs alert_topic, the reader's"
                                  " management command topic (no wildcards)")
        if self.alert in ("impinj-gpo", "zebra-gpo"):
            unmapped = [c for c in self.alert_on if c not in dict(self.alert_gpo)]
            if unmapped:
                raise ConfigError(f"{where}: alert_gpo names no port for {unmapped}")


_SECURITY = ("username", "password", "token", "ca_file", "cert_file", "key_file")
# Keys of one alert output: given with another, they would be ignored (refused instead)
_ALERT_KEYS = {
    "alert_command": ("command",),
    "alert_url": ("impinj-gpo",), "alert_username": ("impinj-gpo",),
    "alert_password": ("impinj-gpo",), "alert_ca_file": ("impinj-gpo",),
    "alert_topic": ("zebra-gpo",),
    "alert_gpo": ("impinj-gpo", "zebra-gpo"), "alert_pulse_ms": ("impinj-gpo", "zebra-gpo"),
    "alert_timeout_s": ("command", "impinj-gpo", "zebra-gpo"),
    "alert_queue": ("command", "impinj-gpo", "zebra-gpo"),
}
_ALERT_DEFAULTS = {"alert_command": (), "alert_url": None, "alert_username": None,
                   "alert_password": None, "alert_ca_file": None, "alert_topic": None,
                   "alert_gpo": (("expected", 1), ("over", 1), ("unexpected", 1)),
                   "alert_pulse_ms": 2000, "alert_timeout_s": 5.0, "alert_queue": 64}


def _alert_ports(name: str, value: Any) -> tuple[tuple[str, int], ...]:
    """``alert_gpo``: one port for every check, or a table check -> port."""
    def port(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 64:
            raise ConfigError(f"portal {name}: alert_gpo ports are whole numbers 1-64"
                              f" (got {v!r})")
        return v

    if isinstance(value, dict):
        for check in value:
            if check not in CHECKS:
                raise ConfigError(f"portal {name}: alert_gpo: {check!r} is not a check"
                                  " (expected, over, unexpected)")
        return tuple(sorted((str(k), port(v)) for k, v in value.items()))
    if isinstance(value, tuple | list) and all(isinstance(p, tuple | list) and len(p) == 2
                                               for p in value):  # normalised already
        return _alert_ports(name, dict(value))
    return tuple((check, port(value)) for check in CHECKS)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """``[metrics]``: the agent's Prometheus metrics (``edge.metrics``), off by default.

    ``port``: serve ``/metrics`` over HTTP on ``host``, loopback unless set (it has no
    authentication: open it only where the scraper alone reaches); over HTTPS with
    ``cert_file`` and ``key_file``, and then, with ``client_ca_file``, only to clients with a
    certificate of that CA. ``textfile``: write them every ``textfile_interval_s`` for
    node_exporter's textfile collector (a path ending in ``.prom``, replaced atomically)."""

    port: int = 0  # 0: no HTTP endpoint
    host: str = "127.0.0.1"
    textfile: str | None = None
    textfile_interval_s: float = 15.0
    cert_file: str | None = None  # HTTPS: the endpoint's certificate and key
    key_file: str | None = None
    client_ca_file: str | None = None  # HTTPS: client certificates of this CA required

    @property
    def enabled(self) -> bool:
        return bool(self.port) or self.textfile is not None

    def check(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("[metrics] port must be 0 (off) or a TCP port (1-65535)")
        if not self.host:
            raise ConfigError("[metrics] host must name an address to listen on")
        if self.textfile is not None and not (
            self.textfile.endswith(".prom") and len(Path(self.textfile).name) > len(".prom")
        ):
            raise ConfigError("[metrics] textfile must be a file name ending in .prom (the"
                              " only files node_exporter's textfile collector reads)")
        if not (math.isfinite(self.textfile_interval_s) and self.textfile_interval_s >= 1):
            raise ConfigError("[metrics] textfile_interval_s must be at least 1")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("[metrics] cert_file and key_file go together (HTTPS)")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ConfigError("[metrics] client_ca_file (client certificates) needs cert_file"
                              " and key_file (HTTPS)")
        for key in ("cert_file", "key_file", "client_ca_file"):
            value = getattr(self, key)
            if value is not None and not Path(value).is_file():
                raise ConfigError(f"[metrics] {key} {value!r}: no such file")
_ROLES = ("outside", "inside", "door")


def _antenna_roles(name: str, value: Any) -> tuple[tuple[int, str], ...]:
    pairs: list[tuple[Any, Any]]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, tuple | list):
        pairs = []
        for entry in value:
            if isinstance(entry, tuple | list) and len(entry) == 2:
                pairs.append((entry[0], entry[1]))
            elif isinstance(entry, dict) and set(entry) == {"antenna", "role"}:
                pairs.append((entry["antenna"], entry["role"]))
            else:
                raise ConfigError(
                    f"portal {name}: each antennas entry needs 'antenna' and 'role' (got {entry!r})"
                )
    else:
        raise ConfigError(f"portal {name}: antennas must be a table or a list")
    out: dict[int, str] = {}
    for antenna, role in pairs:
        try:
            number = int(antenna)
        except (TypeError, ValueError):
            raise ConfigError(f"portal {name}: antenna {antenna!r} is not a number") from None
        if isinstance(antenna, bool) or number < 0:
            raise ConfigError(f"portal {name}: antenna {antenna!r} is not a number")
        if role not in _ROLES:
            raise ConfigError(f"portal {name}: antenna {number} role must be one of {_ROLES}")
        if number in out:
            raise ConfigError(f"portal {name}: antenna {number} is mapped twice")
        out[number] = role
    return tuple(sorted(out.items()))


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    site: str = "site"
    device: str = field(default_factory=hostname_device)
    outbox_path: Path = Path("floorsync-outbox.db")
    outbox_cap_mb: float = 256
    outbox_retention_h: float = 24
    journal_dir: Path | None = None  # doors' read journals; None: beside the outbox
    journal_cap_mb: float = 256  # per door
    sync: SyncSettings = field(default_factory=SyncSettings)
    location_prefixes: tuple[str, ...] = ("LOC:",)
    location_patterns: tuple[str, ...] = ()  # regexes for bin labels, e.g. "[A-Z]-\\d{2}-\\d{2}"
    command_prefix: str = "CMD:"
    receipt_label_prefix: str = "ASN:"  # ASN:{id} selects a receipt in receive mode
    order_label_prefix: str = "ORD:"  # ORD:{id} selects an order in pick mode
    tote_label_prefix: str = "TOTE:"  # TOTE:{tote} selects the open order naming that tote
    pick_to: str = ""  # a staging location every pick-mode pick puts its goods in; "": off
    scanners: tuple[ScannerConfig, ...] = ()
    portals: tuple[PortalConfig, ...] = ()
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    @property
    def journal_directory(self) -> Path:
        """Where the doors' read journals live (``edge.journal``): one file per door."""
        if self.journal_dir is not None:
            return Path(self.journal_dir)
        return self.outbox_path.with_name(self.outbox_path.stem + "-journal")

    def reader_client_id(self, portal: PortalConfig) -> str:
        """A network reader's MQTT client id: stable across restarts, so its session resumes."""
        return portal.client_id or f"floorsync-{self.site}-{self.device}-{portal.name}"

    def validate(self) -> EdgeConfig:
        if not self.journal_cap_mb > 0:
            raise ConfigError("[journal] cap_mb must be positive")
        self.sync.check()  # TLS files only with mqtts://, cert and key together
        self.metrics.check()
        try:
            wire.check_name(self.site, "site")
            wire.check_name(self.device, "device")
        except wire.WireError as exc:
            raise ConfigError(str(exc)) from None
        prefixes = {"command_prefix": self.command_prefix,
                     "receipt_label_prefix": self.receipt_label_prefix,
                     "order_label_prefix": self.order_label_prefix,
                     "tote_label_prefix": self.tote_label_prefix}
        for key, prefix in prefixes.items():
            if not isinstance(prefix, str):
                raise ConfigError(f"[workflow] {key} must be text")
        if not isinstance(self.pick_to, str) or len(self.pick_to) > 256 or "\x00" in self.pick_to \
                or self.pick_to != self.pick_to.strip():
            raise ConfigError("[workflow] pick_to must be a location (text of at most 256"
                              " characters, no surrounding blanks) or empty")
        documents = [p.upper() for p in (self.receipt_label_prefix, self.order_label_prefix,
                                         self.tote_label_prefix) if p]
        if len(set(documents)) != len(documents):
            raise ConfigError("[workflow] receipt_label_prefix, order_label_prefix and"
                              " tote_label_prefix must differ")
        for pattern in self.location_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"[workflow] location pattern {pattern!r}: {exc}") from None
        for s in self.scanners:
            if s.kind not in ("serial", "wedge"):
                raise ConfigError(f"scanner {s.name}: kind must be 'serial' or 'wedge'")
            if s.kind == "wedge" and s.layout not in ("us", "gb", "de", "fr"):
                raise ConfigError(f"scanner {s.name}: layout must be one of us, gb, de, fr")
            if s.suffix not in SUFFIXES:
                raise ConfigError(f"scanner {s.name}: suffix must be one of {sorted(SUFFIXES)}")
            if s.mode not in MODES:
                raise ConfigError(f"scanner {s.name}: mode must be one of {MODES}")
        names = [p.name for p in self.portals]
        for p in self.portals:
            if names.count(p.name) > 1:
                raise ConfigError(f"portal {p.name}: two portals have this name")
            p.check()
        return self


_WORDS = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}
_SECRETS = frozenset({"password", "token", "alert_password"})


def _scalar_types(hint: Any) -> tuple[type, ...] | None:
    """The TOML value types a field annotated ``hint`` takes, where it takes only scalars (and
    None); None for a field of lists or tables, which its own checks read."""
    args = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    allowed: list[type] = []
    for arg in args:
        if arg in (NoneType, int, str, bool):
            allowed.append(arg)
        elif arg is float:
            allowed += [int, float]
        elif arg is Path:
            allowed += [str, Path]
        else:
            return None
    return tuple(allowed)


def _check_types(cls: Any, values: dict[str, Any], where: str,
                 names: dict[str, str] | None = None) -> None:
    """A scalar setting of the wrong type is named with what it must be (a comparison deep in
    a check would otherwise say "'>' not supported between 'list' and 'int'")."""
    hints = get_type_hints(cls)
    for key, value in values.items():
        allowed = _scalar_types(hints.get(key))
        if allowed is None or (value is None and NoneType in allowed):
            continue
        if isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool)):
            continue
        words = [_WORDS[t] for t in allowed if t in _WORDS and not (t is int and float in allowed)]
        wanted = " or ".join(dict.fromkeys(words))
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        if key in _SECRETS:  # a secret is never echoed, even one of the wrong type
            shown = f"a value of type {type(value).__name__}"
        raise ConfigError(f"{where}{(names or {}).get(key, key)} must be {wanted},"
                          f" not {shown}")


def _build(cls: Any, data: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    _check_types(cls, data, f"{where}: ")
    try:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _section(data: Any, where: str, known: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    return data


def load(path: Path | None, **overrides: Any) -> EdgeConfig:
    """Read a TOML file (optional), then apply non-None overrides (command-line options).

    A value of a type no check expects (``[outbox] path = false``, ``broker = []``,
    ``journal_cap_mb = []``) is a ConfigError too, never a TypeError or ValueError from deep
    inside; so is TOML nested past the recursion limit (``a = [[[[...``), which tomllib
    raises as RecursionError (found by tests/fuzz/test_config.py)."""
    try:
        return _load(path, **overrides)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"config {path}: a setting has the wrong type or value: {exc}") from None


def _load(path: Path | None, **overrides: Any) -> EdgeConfig:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
    outbox = _section(data.pop("outbox", {}), "[outbox]", {"path", "cap_mb", "retention_h"})
    journal = _section(data.pop("journal", {}), "[journal]", {"dir", "cap_mb"})
    sync = _build(SyncSettings, data.pop("sync", {}), "[sync]")
    metrics = _build(MetricsSettings, _section(data.pop("metrics", {}), "[metrics]", {
        f.name for f in fields(MetricsSettings)}), "[metrics]")
    scanners = tuple(
        _build(ScannerConfig, s, f"[[scanners]] #{i + 1}")
        for i, s in enumerate(data.pop("scanners", []))
    )
    portals = tuple(
        _build(PortalConfig, p, f"[[portals]] #{i + 1}")
        for i, p in enumerate(data.pop("portals", []))
    )
    workflow = _section(
        data.pop("workflow", {}), "[workflow]",
        {"location_prefixes", "location_patterns", "command_prefix", "receipt_label_prefix",
         "order_label_prefix", "tote_label_prefix", "pick_to"},
    )
    config = _build(EdgeConfig, data, "top level")
    sections = {"outbox_path": ("[outbox] path", outbox.get("path")),
                "outbox_cap_mb": ("[outbox] cap_mb", outbox.get("cap_mb")),
                "outbox_retention_h": ("[outbox] retention_h", outbox.get("retention_h")),
                "journal_dir": ("[journal] dir", journal.get("dir")),
                "journal_cap_mb": ("[journal] cap_mb", journal.get("cap_mb"))}
    sections |= {key: (f"[workflow] {key}", workflow.get(key)) for key in
                 ("command_prefix", "receipt_label_prefix", "order_label_prefix",
                  "tote_label_prefix", "pick_to")}
    _check_types(EdgeConfig, {k: v for k, (_, v) in sections.items() if v is not None}, "",
                 {k: name for k, (name, _) in sections.items()})
    config = replace(
        config,
        sync=sync,
        metrics=metrics,
        scanners=scanners,
        portals=portals,
        outbox_path=Path(outbox.get("path", config.outbox_path)),
        outbox_cap_mb=outbox.get("cap_mb", config.outbox_cap_mb),
        outbox_retention_h=outbox.get("retention_h", config.outbox_retention_h),
        journal_dir=Path(journal["dir"]) if "dir" in journal else config.journal_dir,
        journal_cap_mb=journal.get("cap_mb", config.journal_cap_mb),
        location_prefixes=tuple(workflow.get("location_prefixes", config.location_prefixes)),
        location_patterns=tuple(workflow.get("location_patterns", config.location_patterns)),
        command_prefix=workflow.get("command_prefix", config.command_prefix),
        receipt_label_prefix=workflow.get("receipt_label_prefix", config.receipt_label_prefix),
        order_label_prefix=workflow.get("order_label_prefix", config.order_label_prefix),
        tote_label_prefix=workflow.get("tote_label_prefix", config.tote_label_prefix),
        pick_to=workflow.get("pick_to", config.pick_to),
    )
    sync_overrides = {k: overrides.pop(k) for k in ("broker", "protocol") if k in overrides}
    sync_overrides = {k: v for k, v in sync_overrides.items() if v is not None}
    if sync_overrides:
        config = replace(config, sync=replace(config.sync, **sync_overrides))
    top = {k: v for k, v in overrides.items() if v is not None}
    if "outbox_path" in top:
        top["outbox_path"] = Path(top["outbox_path"])
    return replace(config, **top).validate()
