"""The document publisher's one subscription (to withdraw stale copies) refused by a broker that
really refuses (mosquitto's dynamic security plugin): said once, as an ERROR naming the filter,
and said again once granted after a restart; publishing goes on."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from floorsync.localbroker import Mosquitto
from floorsync.server.docpublish import DOCS_FILTER, DocumentPublisher
from tests.e2e.conftest import wait_until
from tests.edge.test_sync_suback import dynsec_plugin
from tests.server.helpers import api_settings

LOGGER = "floorsync.server.docpublish"


class RefusingDocs(Mosquitto):
    """mosquitto whose dynamic security plugin denies anonymous clients the documents filter."""

    def __init__(self, directory: Path) -> None:
        self.dynsec = directory / "dynsec.json"
        super().__init__(directory / "broker", extra=(
            f"plugin {dynsec_plugin()}\nplugin_opt_config_file {self.dynsec}\n"))
        self.permit(False)

    def permit(self, allowed: bool) -> None:
        self.dynsec.write_text(json.dumps({
            "defaultACLAccess": {"publishClientSend": True, "publishClientReceive": True,
                                 "subscribe": True, "unsubscribe": True},
            "clients": [], "anonymousGroup": "anonymous",
            "groups": [{"groupname": "anonymous", "roles": [{"rolename": "central"}]}],
            "roles": [{"rolename": "central", "acls": [] if allowed else [
                {"acltype": "subscribeLiteral", "topic": DOCS_FILTER, "priority": 0,
                 "allow": False}]}],
        }))


def said(caplog: pytest.LogCaptureFixture, level: int, text: str) -> int:
    return sum(1 for r in caplog.records
               if r.name == LOGGER and r.levelno == level and text in r.getMessage())


def test_a_refused_documents_subscription_is_said_once_then_its_return(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    broker = RefusingDocs(tmp_path)
    broker.start()
    try:
        settings = api_settings(tmp_path / "ledger.db", broker=broker.url,
                                client_id="central-docs-suback")
        publisher = DocumentPublisher(settings, {"receipt": lambda: []}).start()
        try:
            assert publisher.wait_connected(10)
            wait_until(lambda: said(caplog, logging.ERROR, "refused the subscription") == 1,
                       10, "the refusal said")
            assert DOCS_FILTER in caplog.text
            broker.stop()  # paho reconnects: the same refusal, not said again
            broker.start()
            wait_until(lambda: publisher.rounds >= 2, 20, "a second round")
            assert said(caplog, logging.ERROR, "refused the subscription") == 1
            broker.permit(True)
            broker.stop()
            broker.start()
            wait_until(lambda: said(caplog, logging.WARNING, "subscribed to") == 1, 20,
                       "the subscription granted again, said")
            assert said(caplog, logging.ERROR, "refused the subscription") == 1
        finally:
            publisher.stop()
    finally:
        broker.stop()
