"""``floorsync edge status``: what the edge host knows, with the broker down or the agent stopped.

Two sources, both beside the outbox:

- the outbox database, read-only: depth per state, bytes against the cap, the oldest event the
  central service has not yet confirmed;
- the documents' tallies (``edge.documents``), read from the same database: per open
  document, what it expects and what this edge counted against it, per door and handheld;
- ``<outbox>-status.json``, written by the running agent's syncer (atomic rename, on a change of
  broker state or ack, at most once a second): broker state and since when, the last error, a
  subscription the broker refuses (acks or documents, with its reason), the last application
  ack. ``<outbox>-sync.lock`` is locked while a syncer runs, so a stale file
  from a stopped (or killed) agent is told apart from a live one.

Standard library and edge modules only: it runs on an edge host without the server.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from floorsync.edge.documents import format_tallies, read_tallies
from floorsync.edge.journal import read_stats as journal_stats
from floorsync.edge.outbox import OutboxStats, read_stats


def status_path(outbox: Path | str) -> Path:
    return Path(f"{outbox}-status.json")


def lock_path(outbox: Path | str) -> Path:
    return Path(f"{outbox}-sync.lock")


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def hold_lock(outbox: Path | str) -> IO[bytes] | None:
    """Lock ``<outbox>-sync.lock`` for as long as the returned file stays open (None: another
    syncer holds it, or it cannot be made; syncing goes on, ``edge status`` may then say less)."""
    try:
        handle = open(lock_path(outbox), "ab")  # noqa: SIM115 - held open on purpose
    except OSError:
        return None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def agent_running(outbox: Path | str) -> bool:
    """True while a syncer holds the lock (flock: released when its process ends, even killed)."""
    try:
        handle = open(lock_path(outbox), "rb")  # noqa: SIM115
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def write_status(path: Path, data: dict[str, Any]) -> None:
    """Whole or not at all: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def journal_depth(outbox: Path | str, config: Any = None) -> dict[str, Any] | None:
    """Each journaled door's read journal (``edge.journal``): reads kept (not yet turned into
    movements in the outbox, or of passes still going), their bytes, the oldest read's time.
    None without a config naming doors that read through a journal."""
    del outbox
    portals = [p.name for p in getattr(config, "portals", ()) if p.reader != "sim"]
    if not portals:
        return None
    cap = int(config.journal_cap_mb * 1024 * 1024)
    out: dict[str, Any] = {}
    for door, found in journal_stats(config.journal_directory, portals).items():
        out[door] = None if found is None else {
            "reads": found.rows, "bytes": found.bytes, "cap_bytes": cap,
            "oldest": found.oldest.isoformat(timespec="milliseconds") if found.oldest else None,
        }
    return out


def report(outbox: Path | str, cap_bytes: int, now: float | None = None, config: Any = None
           ) -> dict[str, Any]:
    """Everything ``edge status`` shows, as one JSON-ready dict."""
    now = time.time() if now is None else now
    stats: OutboxStats = read_stats(outbox, cap_bytes)
    written = read_status(status_path(outbox))
    running = agent_running(outbox)
    if written is not None and isinstance(written.get("cap_bytes"), int):
        stats = read_stats(outbox, written["cap_bytes"])  # the running agent's own cap
    age = stats.oldest_unsynced_age(now)
    out: dict[str, Any] = {
        "outbox": {
            "path": str(outbox), "pending": stats.pending, "sent": stats.sent,
            "acked": stats.acked, "held": stats.held, "rejected": stats.rejected,
            "backlog": stats.backlog, "bytes": stats.bytes, "cap_bytes": stats.cap_bytes,
            "used": round(stats.bytes / stats.cap_bytes, 4) if stats.cap_bytes else None,
            "last_seq": stats.last_seq,
        },
        "oldest_unsynced": None if age is None else {
            "seq": stats.oldest_unsynced_seq, "captured_at": iso(stats.oldest_unsynced_at),
            "age_s": round(age, 3),
        },
        "agent": {
            "running": running,
            "pid": written.get("pid") if written else None,
            "started_at": written.get("started_at") if written else None,
            "status_written_at": written.get("written_at") if written else None,
        },
        "broker": None,
        "last_ack_at": written.get("last_ack_at") if written else None,
        "journal": journal_depth(outbox, config),
        "documents": read_tallies(outbox),
    }
    if written is not None:
        out["broker"] = {
            "url": written.get("broker"),
            # a stopped or killed agent's last word is history, not the state now
            "state": written.get("state") if running else "not running",
            "since": written.get("since"),
            "last_state": written.get("state"),
            "last_error": written.get("last_error"),
            "connect_attempts": written.get("connect_attempts"),
            # a subscription the broker refused (its SUBACK's reason), None when granted
            "acks_topic": written.get("acks_topic"),
            "acks_refused": written.get("acks_refused"),
            "documents_filter": written.get("documents_filter"),
            "documents_refused": written.get("documents_refused"),
        }
    return out


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_report(data: dict[str, Any]) -> str:
    o, agent, broker = data["outbox"], data["agent"], data["broker"]
    lines = [f"outbox      {o['path']}"]
    lines.append(
        f"depth       {o['pending']} pending, {o['sent']} sent (not acked), {o['acked']} acked"
        + (f" ({o['held']} held by a count)" if o.get("held") else "")
        + f", {o['rejected']} rejected; last seq {o['last_seq']}")
    used = f" ({o['used'] * 100:.1f} %)" if o["used"] is not None else ""
    lines.append(f"bytes       {o['bytes']:,} of {o['cap_bytes']:,}{used}")
    oldest = data["oldest_unsynced"]
    lines.append("oldest      none: every event is acked" if oldest is None else
                 f"oldest      seq {oldest['seq']}, captured {_age(oldest['age_s'])} ago"
                 f" ({oldest['captured_at']})")
    for door, j in (data.get("journal") or {}).items():  # the doors' read journals
        lines.append(f"journal     {door}: " + ("none yet" if j is None else
                     f"{j['reads']} read(s) kept, {j['bytes']} of {j['cap_bytes']} bytes"
                     + (f", oldest read {j['oldest']}" if j["oldest"] else "")))
    lines.extend(format_tallies(data.get("documents") or []))
    if agent["running"]:
        lines.append(f"agent       running (pid {agent['pid']}, since {agent['started_at']})")
    elif agent["status_written_at"]:
        lines.append(f"agent       not running (it last wrote its state at"
                     f" {agent['status_written_at']})")
    else:
        lines.append("agent       not running (no state written beside this outbox)")
    if broker is None:
        lines.append("broker      unknown (no agent has written its state here)")
    else:
        state = broker["state"] if agent["running"] else (
            f"not running (last: {broker['last_state']})")
        lines.append(f"broker      {state} since {broker['since']} ({broker['url']})")
        if broker.get("acks_refused"):
            lines.append(f"refused     acks subscription refused: {broker['acks_refused']}"
                         f" ({broker.get('acks_topic')}): nothing is sent until the broker"
                         " grants it")
        if broker.get("documents_refused"):
            lines.append(f"refused     documents subscription refused:"
                         f" {broker['documents_refused']} ({broker.get('documents_filter')}):"
                         " events still flow, documents do not")
        if broker.get("last_error"):
            lines.append(f"last error  {broker['last_error']}")
    lines.append(f"last ack    {data['last_ack_at'] or 'none since the agent started'}")
    return "\n".join(lines)
