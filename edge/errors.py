"""One error root for the edge agent; foreign errors (sqlite3, paho) are converted at the edge."""


class EdgeError(Exception):
    """Anything the edge agent reports as its own failure."""


class ConfigError(EdgeError):
    """A configuration file or option that cannot be used as given."""


class OutboxError(EdgeError):
    """The outbox could not keep an event."""


class OutboxFull(OutboxError):
    """The outbox reached its byte cap: capture is refused rather than evicting unsynced events."""
