"""An edge whose broker refuses its login (a wrong password): it retries with its backoff, not
at once (it reconnected in a tight loop: the TCP connection opened, so its attempt count went
back to zero before the CONNACK refused it), and it says so once, without the password."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from floorsync.edge.outbox import Outbox
from floorsync.edge.sync import Syncer, SyncSettings
from tests.brokerkit import ProductionBroker
from tests.e2e.conftest import wait_until

RIGHT, WRONG = "right-password-1", "wrong-password-2"


def test_a_refused_login_is_retried_with_backoff_and_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="floorsync.edge.sync")
    with ProductionBroker.build(tmp_path, {"hh-01": RIGHT}, {"hh-01": "wh1"}) as broker, \
            Outbox(tmp_path / "outbox.db") as outbox:
        settings = SyncSettings(broker=f"mqtt://127.0.0.1:{broker.port}", username="hh-01",
                                password=WRONG, backoff_max_s=0.5)
        with Syncer(outbox, "wh1", "hh-01", settings) as syncer:
            wait_until(lambda: syncer.stats.connect_attempts >= 1, 10, "a refusal")
            started, first = time.monotonic(), syncer.stats.connect_attempts
            time.sleep(3.0)
            attempts = syncer.stats.connect_attempts - first
            elapsed = time.monotonic() - started
            assert syncer.state == "retrying" and syncer.stats.connects == 0
    # waits of 50 ms doubling to 0.5 s, each 0.5-1.0 of that: at most ~3/0.25 + a few
    assert 2 <= attempts <= elapsed / 0.25 + 5, attempts
    said = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [getattr(r, "state", None) for r in said] == ["connecting", "retrying"], [
        r.getMessage() for r in said]
    assert "Not authorized" in said[1].getMessage()
    assert WRONG not in caplog.text and RIGHT not in caplog.text
