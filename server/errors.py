"""The one root of the central service's own errors, so callers can catch ours and only ours."""

from __future__ import annotations


class ServerError(Exception):
    """Base of every error the central service raises on purpose."""


class ConfigError(ServerError):
    """Settings that cannot work (bad protocol, bad broker URL); raised before anything starts."""


class StoreError(ServerError):
    """The database failed (disk, lock, corruption): nothing was committed, so nothing is acked."""


class BackupError(ServerError):
    """A backup or restore refused or failed (file in use, damaged, newer schema): the database
    and any earlier backup are as they were."""


class BadRequest(ServerError):
    """A client sent something we cannot use; the HTTP layer turns it into problem+json 400."""

    def __init__(self, title: str, detail: str) -> None:
        super().__init__(f"{title}: {detail}")
        self.title = title
        self.detail = detail


class Refused(ServerError):
    """A request the service understood and will not do (unknown id, wrong state): its
    ``status`` (404, 409, 422) and a problem+json title."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(f"{title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail


class MasterDataError(ServerError):
    """A request master data refuses; ``status`` is the HTTP status of its problem+json."""

    status = 400

    def __init__(self, title: str, detail: str) -> None:
        super().__init__(f"{title}: {detail}")
        self.title = title
        self.detail = detail


class Invalid(MasterDataError):
    """The value itself is wrong (format, check digit), whatever the database holds."""


class NotFound(MasterDataError):
    status = 404


class Conflict(MasterDataError):
    """Refused because of what the database holds: a key or label taken, a cycle, a bad parent."""

    status = 409


class Unstorable(Refused):
    """A value the database refused for what it is, not for its state: a NUL (U+0000) in text,
    which PostgreSQL cannot hold. The request's fault, so a 422 like any invalid request, never
    the 503 "retry later" of a ``StoreError`` (a retry would be refused the same way)."""

    def __init__(self, detail: str) -> None:
        super().__init__(422, "invalid request", detail)
