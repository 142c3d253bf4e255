"""The central service refused by its broker (a wrong password): paho asks again and again; the
ingest says so once until it is connected, not a refusal and a "disconnected" line per
attempt."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from floorsync.server.ingest import MqttIngest
from floorsync.server.ledger import Store
from floorsync.server.settings import Settings
from tests.brokerkit import ProductionBroker

CENTRAL = "floorsync-central"


def test_a_refused_login_is_said_once_however_many_attempts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="floorsync.server")
    with ProductionBroker.build(tmp_path, {CENTRAL: "right-pw-1"}) as broker, \
            Store(tmp_path / "ledger.db") as store:
        settings = Settings(database=tmp_path / "ledger.db", broker=broker.url,
                            mqtt_username=CENTRAL, mqtt_password="wrong-pw-2")
        with MqttIngest(store, settings) as ingest:
            deadline = time.monotonic() + 20
            while broker.log().count("not authorised") < 3:
                assert time.monotonic() < deadline, broker.log()
                time.sleep(0.1)
            assert not ingest.wait_ready(0.1)
    said = [r for r in caplog.records
            if r.name == "floorsync.server.ingest" and r.levelno >= logging.INFO]
    assert [(r.levelname, r.getMessage()) for r in said] == [
        ("ERROR", "ingest: broker: refused the connection: Not authorized; retrying")]
    assert getattr(said[0], "state", None) == "retrying"
    assert "wrong-pw-2" not in caplog.text
