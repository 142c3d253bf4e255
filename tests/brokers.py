"""Test brokers live in the package (the benchmark uses them too)."""

from floorsync.localbroker import Mosquitto, free_port, wait_for_port

__all__ = ["Mosquitto", "free_port", "wait_for_port"]
