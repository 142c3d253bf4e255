"""RFID readers behind one interface (`TagReader`), yielding `devices.base.TagRead`.

- `SerialTagReader` + `LineFormat`: serial readers printing one tag per line;
- `parse_impinj`, `parse_zebra`: JSON pushed by Impinj IoT device interface and Zebra IoT
  Connector readers, carried by `MqttTagReader` or `HttpTagReceiver`;
- `ReplayReader`, `PortalSimulator`: recorded files and the scripted dock door;
- `devices.rfid.llrp`: LLRP through sllurp, an optional GPL-3.0 extra, never imported from here.
"""

from devices.rfid.base import Parsed, ParseError, Parser, TagReader, supervise
from devices.rfid.http_receiver import HttpTagReceiver
from devices.rfid.impinj import parse_impinj
from devices.rfid.lineformat import LineFormat
from devices.rfid.mqtt_reader import MqttTagReader
from devices.rfid.replay import PortalSimulator, ReplayReader
from devices.rfid.serial_reader import SerialTagReader
from devices.rfid.zebra import parse_zebra

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
