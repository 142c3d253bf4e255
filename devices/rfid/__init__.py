"""RFID readers behind one interface (`TagReader`), yielding `devices.base.TagRead`.

- `SerialTagReader` + `LineFormat`: serial readers printing one tag per line;
- `parse_impinj`, `parse_zebra`: JSON pushed by Impinj IoT device interface and Zebra IoT
  Connector readers, carried by `MqttTagReader` or `HttpTagReceiver`;
- `ReplayReader`, `PortalSimulator`: recorded files and the scripted dock door;
- `devices.rfid.llrp`: LLRP through sllurp, an optional GPL-3.0 extra, never imported from here.
"""

from floorsync.devices.rfid.base import Parsed, ParseError, Parser, TagReader, supervise
from floorsync.devices.rfid.http_receiver import HttpTagReceiver
from floorsync.devices.rfid.impinj import parse_impinj
from floorsync.devices.rfid.lineformat import LineFormat
from floorsync.devices.rfid.mqtt_reader import MqttTagReader
from floorsync.devices.rfid.replay import PortalSimulator, ReplayReader
from floorsync.devices.rfid.serial_reader import SerialTagReader
from floorsync.devices.rfid.zebra import parse_zebra

__all__ = [
    "HttpTagReceiver",
    "LineFormat",
    "MqttTagReader",
    "ParseError",
    "Parsed",
    "Parser",
    "PortalSimulator",
    "ReplayReader",
    "SerialTagReader",
    "TagReader",
    "parse_impinj",
    "parse_zebra",
    "supervise",
]
