"""``/docs`` (Swagger UI) and ``/redoc`` from assets installed with the service, not a CDN.

FastAPI's own pages load Swagger UI and ReDoc from a CDN: on a warehouse network without
internet access ``/docs`` is a blank page. The assets come from the ``fastapi-offline``
package (MIT; Swagger UI 5 and ReDoc 2, which read the OpenAPI 3.1 document FastAPI writes);
only its files are used, the pages and routes are ours. Build the app with ``docs_url=None``
and ``redoc_url=None``, then call ``install``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

from floorsync.server.errors import ConfigError

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def assets_directory() -> Path:
    """Where the installed ``fastapi-offline`` keeps the files; each one checked here, so a
    broken install is a clear error at start-up rather than a blank page later."""
    try:
        folder = Path(str(resources.files("fastapi_offline") / "static"))
    except ModuleNotFoundError:
        raise ConfigError("the API documentation needs the fastapi-offline package: "
                          "pip install 'floorsync[server]'") from None
    missing = [name for name in ASSETS if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"fastapi-offline in {folder} lacks {', '.join(missing)}: reinstall it")
    return folder


def install(app: FastAPI) -> None:
    """The pages, the OAuth2 redirect Swagger UI expects, and the assets under ``ASSETS_URL``.
    URLs are relative to the ASGI root path, so the pages also work behind a proxy prefix."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_directory()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or f"{DOCS_URL}/oauth2-redirect"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            # no validator badge: Swagger UI would fetch it from validator.swagger.io
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
