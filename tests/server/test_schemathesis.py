"""The whole OpenAPI document against the running app: schemathesis' stateless checks.

Every operation, with an admin token, on a fresh SQLite file, a few dozen generated requests
each. ``positive_data_acceptance`` is left out: the schema cannot say everything the service
checks (GTIN check digits, cursors it issued, parents that exist), so a schema-valid request
may rightly get 400, 404 or 409. Everything else applies: no 5xx, documented status codes and
content types, responses matching their schemas, schema-invalid requests refused.
"""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from floorsync.server.app import create_app
from floorsync.server.auth import AuthFailures
from tests.server.helpers import ADMIN_TOKEN, api_settings, bearer


def test_every_operation_conforms_to_the_openapi_document(tmp_path: Path) -> None:
    app = create_app(api_settings(tmp_path / "fuzz.db"))
    # schemathesis' ignored_auth sends a wrong token to every operation and wants its 401: no
    # limit on failed authentications here (it has its own tests: test_login_limits.py)
    app.state.auth_failures = AuthFailures(per_s=0)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers=bearer(ADMIN_TOKEN), excluded_checks=[positive_data_acceptance]
            )

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failures
            failures.append(f"{operation.label}: {exc}")
        tested += 1
    assert tested >= 20
    assert not failures, "\n\n".join(failures)
