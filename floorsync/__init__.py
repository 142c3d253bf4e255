"""floorsync: barcode and RFID capture for warehouses.

Installed, everything lives under this one name: ``floorsync.devices`` (device I/O and code
interpretation), ``floorsync.edge`` (the edge agent), ``floorsync.server`` (the central service),
and in this package itself what composes them (the ``floorsync`` command, the demo, the embedded
broker, the cross-package benchmarks and the fault campaign). In the source tree the three
packages keep their top-level folders; ``floorsync/edge`` and its siblings are symbolic links to
them, so one tree serves the wheel, editable installs, the tests and mypy alike.
"""

__version__ = "0.1.0"
