"""The watermark a dock door is advanced to, kept in the reader's own time.

A door (``edge.portal``) processes its inputs up to a watermark, a promise that nothing older
follows. The agent's ``ReaderClock`` keeps it in the reader's own time: the newest read time
seen minus ``latency_s`` (never past host time minus ``latency_s``), moving on with the host's
elapsed time only once the reader has been online and silent for longer than ``latency_s``; it
holds while the reader is offline. So a backlog flushed after a disconnect (reads with their
original reader timestamps), over however many ticks, or a reader clock behind the host, gives
what the live stream gave.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

_INF = math.inf


class ReaderClock:
    """The watermark the agent gives a door, kept in the reader's own time (not thread-safe).

    ``seen(at, host)`` for every read or GPI change (its reader timestamp, the host's monotonic
    time it arrived); ``online(host)`` when the reader comes (back) online; ``watermark(now,
    host)`` the ``advance`` argument: the newest reader time seen minus ``lag_s``, never past
    host time minus ``lag_s``. Once the reader has been online and silent for longer than
    ``lag_s`` it moves on with the host's elapsed time (passes must end in a quiet door), from
    the reader's time, so a reader clock behind the host does not make its next reads late.
    ``None`` until the first read (a door that never read holds up no other: the arbiter
    stops waiting for it after ``max_wait_s``). While the reader is offline the agent does not
    call it: the watermark holds, and a backlog flushed later, over any number of ticks, lands
    ahead of it as the live stream did. ``caught_up`` (the reader thread's ``caught_up_at``):
    silence counts only up to the moment the reader's thread had handed over everything it had,
    so a reader thread held up (a slow fsync, a busy process) does not let the door run ahead
    of reads that are already on their way.
    """

    def __init__(self, lag_s: float) -> None:
        self.lag_s = lag_s
        self._latest = -_INF  # newest reader timestamp seen
        self._heard = -_INF  # host monotonic time it was seen, or the reader came online

    def seen(self, at: datetime, host: float) -> None:
        t = at.timestamp()
        if t > self._latest:
            self._latest = t
            self._heard = host

    def online(self, host: float) -> None:
        self._heard = host

    def watermark(self, now: datetime, host: float, caught_up: float | None = None
                  ) -> datetime | None:
        lag = self.lag_s
        # Silence counts only up to when the reader's thread had handed over all it had: a
        # reader thread that is behind (a slow disk, a busy process) is not a quiet door.
        silent = (host if caught_up is None else min(host, caught_up)) - self._heard
        cap = now.timestamp() - lag
        if self._latest == -_INF:  # nothing read yet, nothing to process: no promise either
            return None
        t = self._latest - lag + max(0.0, silent - lag)
        return datetime.fromtimestamp(min(t, cap), UTC)
