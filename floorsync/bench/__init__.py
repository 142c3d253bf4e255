"""Benchmarks that need the whole product: processes, brokers and the central service.

``e2e``: the durable path edge -> broker -> central service -> ack, beside raw paho and raw
SQLite. ``reader``: a network reader's messages through the edge agent process, beside raw paho.
The benchmarks of one package live beside what they measure: ``floorsync.devices.bench``,
``floorsync.edge.floorbench`` and ``floorsync.edge.dockbench``, ``floorsync.server.bench``.
"""
