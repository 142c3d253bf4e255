"""What the floor sends, made by the edge's own code: a case through an RFID dock door."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from floorsync.devices.base import TagRead
from floorsync.devices.sim import sgtin96_hex
from floorsync.edge import wire
from floorsync.edge.config import PortalConfig
from floorsync.edge.portal import Door

OUTSIDE, INSIDE = 1, 2


def dock_door(location: str = "DOCK-A") -> Door:
    config = PortalConfig(name="door-a", location=location,
                          antennas={"1": "outside", "2": "inside"}, include=("0614141",),
                          min_reads=3, quiet_s=1.0)
    config.check()
    return Door(config, tz=UTC)


def door_pass(door: Door, serial: int, *, inbound: bool = True) -> wire.Event:
    """The event a door makes for one case carried through it (outside then inside: a
    receive to the door's location; the other way: a ship from it), its reads just now."""
    tag = sgtin96_hex("0614141", "812345", serial)
    start = datetime.now(UTC) - timedelta(seconds=1.5)
    sides = (OUTSIDE, INSIDE) if inbound else (INSIDE, OUTSIDE)
    for k in range(8):
        door.add(TagRead(door.name, tag, sides[k // 4], -52.0 - k % 3,
                         start + timedelta(milliseconds=100 * k)))
    events = [e for e in door.finish() if e.read is not None and e.read.tag == tag]
    assert len(events) == 1 and events[0].type == ("receive" if inbound else "ship"), events
    return events[0]
