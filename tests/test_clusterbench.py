"""The clustered-broker bench runs end to end on a tiny load against a real NATS JetStream
started by the bench (no speed asserts): every batch an edge got PUBACKed is processed by a
replica, with one or two competing consumers, and after one of two is SIGKILLed mid-run.
deploy/cluster/*.conf are exactly what the bench runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from floorsync.bench import cluster
from floorsync.edge.errors import EdgeError

pytestmark = pytest.mark.slow

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "cluster"


def test_nats_replicas_lose_no_batch() -> None:
    try:
        cluster.nats_binary()
    except EdgeError as exc:  # not a skip: CI (this machine) has it, and so must a developer's
        pytest.fail(f"{exc}; the bench and this test need it")
    result = cluster.run(24, ["nats"], cluster=False)["nats"]
    # NATS 2.9 speaks MQTT 3.1.1 only: an edge on its MQTT 5 default is refused at CONNACK
    assert "protocol" in result["mqtt5_connect"].lower()
    for label, _consumers, _kill in cluster.SCENARIOS:
        outcome = result[label]
        assert outcome["lost"] == 0, (label, outcome)
        assert outcome["messages_per_s"] > 0 and outcome["events_per_s"] > 0, (label, outcome)
    assert "SIGKILLed" in result["2 consumers, one SIGKILLed"]["notes"][0]


def test_deploy_configs_are_the_ones_measured() -> None:
    expected = cluster.example_configs()
    assert sorted(p.name for p in DEPLOY.glob("*.conf")) == sorted(expected)
    for name, text in expected.items():
        assert (DEPLOY / name).read_text() == text, name
