"""The central service's broker login, the same for each paho client it makes (the ingest and
the documents' publisher): username and password, and with an ``mqtts://`` broker TLS with
certificate and host name verification, optionally a client certificate (mutual TLS).

paho retries connections in its own thread and reports why one failed only to its log; a TLS
failure (an untrusted broker, our certificate refused) would then look like a broker that is
simply down. So its error lines are logged here, once per distinct error until connected.
"""

from __future__ import annotations

import logging
import ssl
import sys
from typing import Any

from paho.mqtt.client import MQTT_LOG_ERR, Client

from floorsync.server.errors import ConfigError
from floorsync.server.settings import Settings, broker_uses_tls


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Verification always on (no switch turns it off), TLS 1.2 at least."""
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None,
        )
        if settings.mqtt_cert_file is not None:
            context.load_cert_chain(str(settings.mqtt_cert_file),
                                    str(settings.mqtt_key_file) if settings.mqtt_key_file
                                    else None)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"cannot use the broker TLS files: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


MAX_ERRORS_SAID = 8  # distinct errors logged while not connected (one may carry a changing detail)


class _ErrorLog:
    """paho's error lines and failed connection attempts, each distinct one logged once until
    connected (not per retry, even when two errors alternate)."""

    def __init__(self, log: logging.Logger, who: str, tls: bool) -> None:
        self._log, self._who, self._tls = log, who, tls
        self._said: set[str] = set()

    def paho_log(self, _c: Client, _u: Any, level: int, message: str) -> None:
        if level == MQTT_LOG_ERR and " on socket" in message:  # why a connection broke
            self._say(message)

    def connect_fail(self, _c: Client, _u: Any) -> None:
        # paho calls this inside its ``except OSError`` around the attempt: the error is there
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLCertVerificationError):
            self._say(f"TLS: the broker is not trusted ({exc.verify_message}); its certificate "
                      "must be signed by FLOORSYNC_MQTT_CA_FILE's CA and name the broker URL's "
                      "host")
        elif exc is not None:
            self._say(f"cannot connect: {exc}")

    def refused(self, reason: object) -> None:
        """A CONNACK that refused us (not authorized, a bad client id): paho tries again."""
        self._say(f"refused the connection: {reason}")

    def connected(self) -> None:
        self._said.clear()

    def _say(self, message: str) -> None:
        if message not in self._said and len(self._said) < MAX_ERRORS_SAID:
            self._said.add(message)
            hint = (" (with mutual TLS the broker needs FLOORSYNC_MQTT_CERT_FILE and _KEY_FILE "
                    "signed by its CA)" if self._tls and "alert" in message else "")
            self._log.error("%s: broker: %s%s; retrying", self._who, message, hint,
                            extra={"state": "retrying", "error": message})


def configure(client: Client, settings: Settings, log: logging.Logger, who: str) -> _ErrorLog:
    """Login and TLS on ``client``; returns the error log (call ``connected()`` on CONNACK)."""
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
    tls = settings.broker is not None and broker_uses_tls(settings.broker)
    if tls:
        client.tls_set_context(tls_context(settings))
    errors = _ErrorLog(log, who, tls)
    client.on_log = errors.paho_log
    client.on_connect_fail = errors.connect_fail
    return errors
