"""Ack timeouts through real mosquitto while the central service is away: the edge sends its
events again every ack_timeout_s, and says so once for the spell (naming the events), not
once per expiry; when the central service is back and acks come, it says that once with the
count of re-sends."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from floorsync.localbroker import Mosquitto
from tests.e2e.conftest import central, edge, wait_until
from tests.factories import event


def test_a_spell_of_ack_timeouts_is_said_once_and_its_end_once(
        tmp_path: Path, mosquitto: Mosquitto, site: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="floorsync.edge.sync")
    with edge(tmp_path, site, "hh-t", mosquitto.url, ack_timeout_s=0.3,
              batch_size=5) as (outbox, syncer):
        wait_until(lambda: syncer.state == "connected", 10, "edge connected")
        sent = outbox.add([event(i) for i in range(3)])
        wait_until(lambda: syncer.stats.resent >= 9, 15, "three re-sends of the three")
        with central(tmp_path / "central.db", mosquitto.url):
            assert syncer.wait_synced(10), outbox.stats()
    said = [r for r in caplog.records if r.levelno >= logging.INFO
            and vars(r).get("state") in ("ack_timeout", "acked")]
    assert [vars(r)["state"] for r in said] == ["ack_timeout", "acked"], [
        r.getMessage() for r in said]
    timeout, back = said
    assert timeout.levelno == logging.WARNING
    assert sorted(vars(timeout)["event_ids"]) == sorted(e.id for e in sent)
    assert back.getMessage().startswith("acks come again: ")
    assert vars(back)["events"] >= 9
    quiet = [r for r in caplog.records if r.levelno == logging.DEBUG
             and r.getMessage().startswith("no ack for")]
    assert len(quiet) >= 2  # the later expiries of the spell, at DEBUG
