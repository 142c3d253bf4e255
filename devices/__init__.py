"""Device drivers, byte framing, code interpretation and simulated devices for floorsync.

This package imports nothing of ours (only the standard library, pyserial, biip, epcpy, evdev),
so an edge host can use it alone and the rest of the project can treat it as a black box.
"""

from floorsync.devices.base import DeviceError, DeviceGone, ScanRead, TagRead

__all__ = ["DeviceError", "DeviceGone", "ScanRead", "TagRead"]
