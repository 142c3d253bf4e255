"""Run the central service under uvicorn (the ``floorsync server`` command calls ``serve``).

HTTPS is uvicorn's own TLS (``ssl_certfile``/``ssl_keyfile`` from ``http_cert_file`` and
``http_key_file``); with ``http_ca_file`` a client must present a certificate issued by that CA
(``ssl_cert_reqs`` CERT_REQUIRED), refused in the handshake otherwise. A reverse proxy that
terminates TLS in front of a loopback-bound service is the alternative (deploy/README.md).
"""

from __future__ import annotations

import contextlib
import gc
import ssl
import sys
from typing import Any

import uvicorn
from uvicorn.main import STARTUP_FAILURE

from floorsync.server import dashboard
from floorsync.server.app import create_app
from floorsync.server.ledger import Store
from floorsync.server.settings import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's keyword arguments for ``settings`` (host, port and TLS)."""
    options: dict[str, Any] = {"host": settings.http_host, "port": settings.http_port}
    if settings.http_cert_file is not None:
        options["ssl_certfile"] = str(settings.http_cert_file)
        options["ssl_keyfile"] = str(settings.http_key_file)
    if settings.http_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.http_ca_file)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def uvicorn_config(settings: Settings, **extra: Any) -> uvicorn.Config:
    """The uvicorn configuration `serve` runs (tests run it with `uvicorn.Server`)."""
    return uvicorn.Config(create_app(settings), **uvicorn_options(settings), **extra)


# The youngest generation is collected after this many more allocations than deallocations of
# tracked objects (CPython's default: 700). Ingest allocates a few objects per event that live
# until the group commits (up to 5,000 events), so at 700 it ran a collection every ~100 events,
# each one promoting and re-traversing the group: ~3.5 us an event of the central CPU (of ~45).
GC_THRESHOLD = (50_000, 20, 100)


def tune_gc() -> None:
    """The central process's collector: what start-up made (modules, the app, the store) frozen
    out of every collection, and collections far apart (``GC_THRESHOLD``). Only cyclic garbage
    waits longer for them; reference counting frees everything else at once."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


class Server(uvicorn.Server):
    """uvicorn's server, ending the dashboard's live streams when told to stop: a graceful
    shutdown waits for every response to finish, and an event stream never would."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        dashboard.close(self.config.app)
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    """Blocks until interrupted; the app's lifespan starts ingest. The store is opened first,
    so a database that cannot serve (a newer schema, a broken file) is the command's one-line
    error rather than a traceback from uvicorn's startup."""
    with Store(settings.database) as store:
        app = create_app(settings, store)
        tune_gc()
        # log_config=None: uvicorn's loggers go through the root handler the command set up
        # (floorsync/logs.py): its lines in the process's format (text or JSON), masked too
        server = Server(uvicorn.Config(app, log_config=None, **uvicorn_options(settings)))
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        if not server.started:  # as uvicorn.run: the port was taken, TLS files unreadable
            sys.exit(STARTUP_FAILURE)
