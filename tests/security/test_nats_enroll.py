"""``floorsync enroll --nats-users`` and ``floorsync revoke --nats-users`` on the NATS users file
(floorsync/natsusers.py): the exact entry written, the file otherwise byte for byte, refusals
with a reason, revocation as a marked entry whose password matches nothing, and every state of
the file accepted by ``nats-server -t``. What the entries allow on a running cluster:
test_nats_acl.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from floorsync import enroll, natsusers
from floorsync.bench.cluster import nats_binary
from floorsync.cli import main

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "multisite" / "nats" / \
    "floorsync-users.conf"


@pytest.fixture
def users(tmp_path: Path) -> Path:
    """A copy of the shipped file where a node keeps it (mode 0640)."""
    path = tmp_path / "nats" / "floorsync-users.conf"
    path.parent.mkdir()
    path.write_text(SHIPPED.read_text())
    path.chmod(0o640)
    return path


def nats_takes(users: Path) -> None:
    """nats-server -t on a configuration whose authorization includes ``users`` as the
    shipped nats-N.conf does (``nats/floorsync-users.conf`` beside it)."""
    config = users.parent.parent / "nats-server.conf"
    config.write_text('listen: 127.0.0.1:4222\nauthorization {\n  timeout: 5\n'
                      '  include "nats/floorsync-users.conf"\n}\n')
    done = subprocess.run([nats_binary(), "-t", "-c", str(config)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "is valid" in done.stdout + done.stderr, done.stderr


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_shipped_file_is_valid_and_names_only_the_central_service(users: Path) -> None:
    nats_takes(users)
    parsed = natsusers.read_users(users)
    assert parsed.users == {"floorsync-central"} and parsed.entries == {}


def test_enroll_writes_exactly_the_entry_and_the_edge_toml(
        users: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hh-7"
    code, text, err = run(capsys, "enroll", "hh-7", "--site", "wh1", "--nats-users", str(users),
                          "--broker", "mqtts://nats.floorsync.example:8883", "--out", str(out))
    assert code == 0, err
    password = next(line.split(": ", 1)[1] for line in text.splitlines()
                    if "password (shown once" in line)
    assert len(password) >= 32 and text.count(password) == 1
    assert f"NATS: its user added to {users}" in text and "reload nats-server" in text
    assert "ACL" not in text and "mosquitto" not in text
    hashed = natsusers.read_users(users).entries["hh-7"]
    body, shipped = users.read_text(), SHIPPED.read_text()
    close = shipped.rindex("]")
    found = body[close:body.rindex("]")]  # what was added, before the list's "]"
    pw_hash = found.split('password: "')[1].split('"')[0]
    assert body == shipped[:close] + natsusers.delimited("hh-7", "wh1", pw_hash) + "]\n"
    assert found.splitlines()[0:3] == [
        "  # floorsync enroll: hh-7",
        '  {user: "hh-7", password: "' + pw_hash + '", allowed_connection_types: ["MQTT"], '
        "permissions: {",
        '    publish: {allow: ["floorsync.v1.wh1.hh-7.events", "floorsync.v1.wh1.hh-7.status"]}']
    assert '"floorsync.v1.wh1.hh-7.acks", "floorsync.v1.wh1.docs", "floorsync.v1.wh1.docs.>", ' \
        '"$MQTT.sub.>"' in found
    assert pw_hash.startswith("$2b$11$") and len(pw_hash) == 60 and password not in body
    assert hashed.site == "wh1" and not hashed.revoked
    assert stat.S_IMODE(users.stat().st_mode) == 0o640  # mode kept by the atomic replace
    nats_takes(users)
    toml = out / "edge.toml"
    assert stat.S_IMODE(toml.stat().st_mode) == 0o600
    config = tomllib.loads(toml.read_text())
    assert config["sync"] == {"broker": "mqtts://nats.floorsync.example:8883",
                              "protocol": "3.1.1", "username": "hh-7", "password": password}


def test_the_hash_is_one_bcrypt_checks() -> None:
    hashed = natsusers.hash_password("s3cret")
    try:
        import bcrypt
    except ImportError:
        import crypt  # the fallback natsusers uses (Python <= 3.12)

        assert crypt.crypt("s3cret", hashed) == hashed
        assert crypt.crypt("s3creT", hashed) != hashed
    else:
        assert bcrypt.checkpw(b"s3cret", hashed.encode())
        assert not bcrypt.checkpw(b"s3creT", hashed.encode())


def test_revoke_marks_the_entry_and_voids_its_password_and_enroll_again_replaces_it(
        users: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for device in ("hh-1", "hh-2", "hh-3"):
        assert run(capsys, "enroll", device, "--site", "wh1", "--nats-users", str(users),
                   "--out", str(tmp_path / device))[0] == 0
    enrolled = users.read_text()
    code, text, err = run(capsys, "revoke", "hh-2", "--nats-users", str(users))
    assert code == 0, err
    assert "its NATS user (site wh1) revoked" in text and "reload nats-server" in text
    entry = natsusers.read_users(users).entries["hh-2"]
    assert entry.revoked
    lines = users.read_text().splitlines(keepends=True)
    assert "".join(lines[entry.start:entry.end]) == natsusers.tombstone("hh-2", "wh1")
    # everything else byte for byte: the other devices, the central user, the comments
    before = enrolled.splitlines(keepends=True)
    assert lines[:entry.start] == before[:entry.start]
    assert lines[entry.end:] == before[entry.end:]
    nats_takes(users)
    # revoked twice: said, nothing changed
    assert run(capsys, "revoke", "hh-2", "--nats-users", str(users))[0] != 0
    # at the same site again: the same place, a new password
    assert run(capsys, "enroll", "hh-2", "--site", "wh1", "--nats-users", str(users),
               "--out", str(tmp_path / "again"))[0] == 0
    again = natsusers.read_users(users).entries["hh-2"]
    assert not again.revoked and again.start == entry.start
    assert users.read_text().count('user: "hh-2"') == 1
    nats_takes(users)


def test_refusals_say_why_and_change_nothing(
        users: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "enroll", "hh-1", "--site", "wh1", "--nats-users", str(users),
               "--out", str(tmp_path / "hh-1"))[0] == 0
    assert run(capsys, "revoke", "hh-1", "--nats-users", str(users))[0] == 0
    state = users.read_text()
    cases = [
        (["enroll", "hh-1", "--site", "wh2"], "revoked at wh1"),  # the name stays at its site
        (["enroll", "hh.1", "--site", "wh1"], "refuses '.'"),
        (["enroll", "hh-9", "--site", "wh.1"], "refuses '.'"),
        (["enroll", "floorsync-central", "--site", "wh1"], "reserved"),
        (["enroll", "docs", "--site", "wh1"], "reserved"),
        (["enroll", "hh-9", "--site", "wh1", "--cert"], "logs in with a password"),
        (["enroll", "hh-9", "--site", "wh1", "--acl-only"], "--acl-only"),
        (["revoke", "hh-9"], "not enrolled"),
        (["revoke", "floorsync-central"], "reserved"),
    ]
    for argv, why in cases:
        code, _, err = run(capsys, *argv, "--nats-users", str(users))
        assert code != 0 and why in err, (argv, err)
        assert users.read_text() == state, argv
    missing = str(tmp_path / "no.conf")
    code, _, err = run(capsys, "enroll", "hh-9", "--site", "wh1", "--nats-users", missing,
                       "--out", str(tmp_path / "x"))
    assert code != 0 and "no NATS users file" in err and not (tmp_path / "x").exists()


def test_a_hand_written_or_edited_entry_is_refused_not_guessed_at(
        users: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = users.read_text()
    close = text.rindex("]")
    users.write_text(text[:close] + '  {user: "hh-hand", password: "x"}\n' + text[close:])
    code, _, err = run(capsys, "enroll", "hh-hand", "--site", "wh1", "--nats-users", str(users))
    assert code != 0 and "hand-written entry" in err
    code, _, err = run(capsys, "revoke", "hh-hand", "--nats-users", str(users))
    assert code != 0 and "remove it by hand" in err
    users.write_text(text)
    natsusers.add(users, "hh-1", "wh1", "pw-1234567890")
    users.write_text(users.read_text().replace("floorsync.v1.wh1.hh-1.events",
                                               "floorsync.v1.wh1.>"))
    code, _, err = run(capsys, "revoke", "hh-1", "--nats-users", str(users))
    assert code != 0 and "not as floorsync enroll wrote it" in err


def test_the_central_password_is_set_by_its_command(
        users: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert natsusers.main(["central-password", str(users)]) == 0
    out = capsys.readouterr().out
    password = next(line.split(": ", 1)[1] for line in out.splitlines() if "shown once" in line)
    body = users.read_text()
    assert password not in body and "CHANGE-ME" not in body
    hashed = body.split('user: "floorsync-central", password: "')[1].split('"')[0]
    assert hashed.startswith("$2b$11$") and len(hashed) == 60
    assert body.replace(hashed, "") == SHIPPED.read_text().replace(
        "$2b$11$CHANGE-ME.set.by.python.-m.floorsync.natsusers", "")
    nats_takes(users)


def test_an_enrollment_whose_toml_cannot_be_written_leaves_no_user(
        users: Path, tmp_path: Path) -> None:
    out = tmp_path / "readonly"
    out.mkdir()
    (out / "edge.toml").mkdir()  # the TOML cannot replace a directory
    with pytest.raises(enroll.EnrollError, match=r"edge\.toml"):
        enroll.enroll("hh-5", "wh1", out=out, nats_users=users)
    assert users.read_text() == SHIPPED.read_text()
    assert os.path.isdir(out / "edge.toml")


def test_a_failed_enrollment_again_leaves_the_revoked_entry_as_it_was(
        users: Path, tmp_path: Path) -> None:
    """Enrolling a revoked device again replaces its entry; when its TOML then cannot be
    written, the entry goes back to the revoked one, never away (NATS 2.9 crashes on a reload
    that loses a user whose retained presence is stored: see floorsync/natsusers.py)."""
    enroll.enroll("hh-6", "wh1", out=tmp_path / "hh-6", nats_users=users)
    enroll.revoke("hh-6", nats_users=users)
    revoked = users.read_text()
    out = tmp_path / "again"
    out.mkdir()
    (out / "edge.toml").mkdir()  # the TOML cannot replace a directory
    with pytest.raises(enroll.EnrollError, match=r"edge\.toml"):
        enroll.enroll("hh-6", "wh1", out=out, nats_users=users)
    assert users.read_text() == revoked
    assert natsusers.read_users(users).entries["hh-6"].revoked
    nats_takes(users)
