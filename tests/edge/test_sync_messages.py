"""What the syncer does with a message on a topic it did not subscribe to: nothing (counted)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from paho.mqtt.client import MQTTMessage

from floorsync.edge import wire
from floorsync.edge.config import SyncSettings
from floorsync.edge.outbox import Outbox
from floorsync.edge.sync import Syncer
from tests.factories import events


def message(topic: str, payload: bytes) -> MQTTMessage:
    msg = MQTTMessage(topic=topic.encode())
    msg.payload = payload
    return msg


def test_a_foreign_topic_is_ignored_and_our_acks_still_settle(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    with Outbox(tmp_path / "outbox.db") as outbox:
        syncer = Syncer(outbox, "wh1", "hh-01", SyncSettings(broker="mqtt://127.0.0.1:1"))
        (kept,) = outbox.add(events(1))
        outbox.take(10)
        status = wire.encode_status(wire.Status("online", wire.utc_now(), 0, 1))
        syncer._on_message(None, None, message(wire.status_topic("wh1", "dock-1"), status))
        assert syncer.stats.foreign_messages == 1 and caplog.text == ""
        ack = wire.encode_ack(wire.Ack("hh-01", (wire.Result(kept.id, "applied"),)))
        syncer._on_message(None, None, message(wire.acks_topic("wh1", "hh-01"), ack))
        assert syncer.stats.events_acked == 1 and outbox.settled()
