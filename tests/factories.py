"""Events for tests, built through the wire contract."""

from __future__ import annotations

from floorsync.edge import wire


def event(n: int = 0, *, type: str = "receive", qty: float = 1, gtin: str = "09501101530003",
          lot: str | None = "L1", to: str | None = "DOCK-1", from_: str | None = None,
          time: str | None = None) -> wire.Event:
    needs_from = type in ("putaway", "move", "pick", "pack", "ship")
    needs_to = type in ("receive", "return", "putaway", "move")
    return wire.Event(
        id=wire.new_event_id(),
        seq=n + 1,
        time=time or wire.local_now(),
        type=type,
        item=wire.Item(gtin=gtin, lot=lot),
        qty=qty,
        from_=from_ or ("A-01-01" if needs_from else None),
        to=to if needs_to else None,
        operator="op-1",
        read=wire.SourceRead(kind="barcode", raw=f"]C101{gtin}10{lot}", symbology="]C1"),
    )


def events(count: int, **kwargs: object) -> list[wire.Event]:
    return [event(i, **kwargs) for i in range(count)]  # type: ignore[arg-type]
