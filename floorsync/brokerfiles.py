"""Editing a broker's own files (mosquitto's ACL, NATS's users file) safely: one editor at a
time, each change an atomic replacement that keeps the file's mode and owner.

Shared by ``floorsync.enroll`` (mosquitto) and ``floorsync.natsusers`` (NATS), below both.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class EnrollError(Exception):
    """Enrollment or revocation cannot be done as asked (a message for the operator)."""


def replace_file(path: Path, text: str) -> None:
    """Replace a broker's file (ACL, NATS users) atomically, keeping its mode and owner."""
    try:
        st = path.stat()
    except OSError as exc:
        raise EnrollError(f"cannot read {path}: {exc}") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o7777)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EnrollError(f"cannot write {path}: {exc}") from None
    try:  # the rename itself on disk: a revocation must survive a power cut
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise EnrollError(f"wrote {path}, but could not flush its directory: {exc}") from None


@contextmanager
def edit_lock(path: Path) -> Iterator[None]:
    """Serialises edits of one file (two operators enrolling at once): a lock on its
    directory, which the atomic rename leaves in place."""
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise EnrollError(f"cannot use the directory {path.parent}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
