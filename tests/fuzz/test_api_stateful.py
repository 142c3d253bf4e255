"""The HTTP API, stateful: schemathesis' state machine over the links it infers from the
OpenAPI document (an item created, then read, updated; a location, its children, a count on
it; an order, its pick list, its cancel...), with an admin token, on a fresh SQLite file.

tests/server/test_schemathesis.py checks each operation on its own; this chains them, so a
request is made against what an earlier one created. Every response: no 5xx, a documented
status code and content type, a body matching its schema. As there, ``positive_data_acceptance``
is left out: the schema cannot say everything the service checks (GTIN check digits, parents
that exist), so a schema-valid request may rightly get 400, 404 or 409.

The app and its token come from tests/server/helpers.py, so a change in how tokens are made
flows through here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from floorsync.server.app import create_app
from tests.fuzz.test_wire import EVENT_TYPE_LIST, NESTED
from tests.server.helpers import ADMIN_TOKEN, api_client, api_settings, bearer

STEPS = 10  # requests per scenario
# Scenarios at most, whatever the profile: schemathesis' state machine keeps what each scenario
# recorded, and past ~1,000 scenarios (3 GB) garbage collection pauses reach its 10 s read
# timeout. `make fuzz` runs the cap; the ci profile a quarter of its examples.
MAX_SCENARIOS = 300


def test_api_state_machine_with_auth() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        schema = schemathesis.openapi.from_asgi(
            "/openapi.json", create_app(api_settings(Path(tmp) / "schema.db")))
        # Configured, not added per call: a case whose generator dropped the token is then
        # known to carry it (else "schema-violating request accepted" on a request we fixed).
        schema.config.update(headers=bearer(ADMIN_TOKEN))
        base = schema.as_state_machine()
        assert len([r for r in dir(base) if "__" in r and r[0].isupper()]) >= 20  # links found
        scenarios = iter(range(10**9))

        class Workflow(base):  # type: ignore[misc, valid-type]
            """Each scenario on its own empty database: what one scenario created never steers
            the next, so hypothesis can replay (and shrink) a failing one exactly."""

            def setup(self) -> None:
                self.app = create_app(api_settings(Path(tmp) / f"s{next(scenarios)}.db"))

            def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
                return {"app": self.app}

            def validate_response(self, response: Any, case: schemathesis.Case,
                                  additional_checks: Any = None, **kwargs: Any) -> None:
                case.validate_response(response, excluded_checks=[positive_data_acceptance],
                                       transport_kwargs=kwargs)

        current = settings()
        Workflow.run(settings=settings(
            current, max_examples=max(10, min(MAX_SCENARIOS, current.max_examples // 4)),
            stateful_step_count=STEPS,
        ))


def test_bodies_that_broke_the_wire_decoder_are_refused_with_reasons() -> None:
    """Regressions from tests/fuzz/test_wire.py, over HTTP: both were 500s."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(api_settings(Path(tmp) / "regress.db"))
        with api_client(app) as client:
            client: TestClient
            nested = client.post("/api/v1/events", content=NESTED)
            assert nested.status_code == 400, nested.text
            assert "nested too deep" in nested.text
            listed = client.post("/api/v1/events", content=EVENT_TYPE_LIST)
            assert listed.status_code == 200, listed.text
            (result,) = listed.json()["results"]
            assert result["status"] == "rejected" and "type must be one of" in result["reason"]
