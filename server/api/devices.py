"""Edges as the central service sees them: last contact, presence, backlog."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from floorsync.server.api.deps import SettingsDep, StoreDep
from floorsync.server.auth import READ
from floorsync.server.queries import DeviceRow
from floorsync.server.schemas import Device

router = APIRouter(tags=["devices"])


def is_online(row: DeviceRow, online_after_s: float, now: datetime) -> bool:
    """Retained presence when the edge publishes it; otherwise, heard from recently."""
    if row.online is not None:
        return row.online
    if row.last_seen is None:
        return False
    seen = datetime.fromisoformat(row.last_seen)
    return (now - seen).total_seconds() <= online_after_s


@router.get("/devices", response_model=list[Device], dependencies=READ)
def devices(store: StoreDep, settings: SettingsDep) -> list[Device]:
    now = datetime.now(UTC)
    return [
        Device(
            site=r.site, device=r.device, last_seen=r.last_seen,
            online=is_online(r, settings.online_after_s, now), last_seq=r.last_seq,
            backlog=r.backlog, events=r.events, status_at=r.status_at,
            oldest_unsynced_s=r.oldest_unsynced_s, backlog_at=r.backlog_at,
            topic_mismatches=r.topic_mismatches, topic_mismatch_at=r.topic_mismatch_at,
        )
        for r in store.devices()
    ]
