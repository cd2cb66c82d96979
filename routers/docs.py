"""The interactive API documentation (Swagger UI 5), served from the installed package: no CDN, so it works offline.

The files come from the `fastapi-swagger` wheel (Swagger UI's `swagger-ui-dist`, Apache-2.0, packaged under MIT);
FastAPI's own /docs would load them from a CDN that an intranet without internet access cannot reach.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from routers.edge import api_router
from service.errors import NotFound

router = api_router(include_in_schema=False)

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


@cache
def _asset(name: str) -> bytes:
    return (resources.files("fastapi_swagger") / "resources" / name).read_bytes()


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over /openapi.json, with every script and style from this server."""
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title="Switchboard API",
        swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs/assets/favicon-32x32.png",
        swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
    )


@router.get("/docs/assets/{name}")
async def swagger_asset(name: str) -> Response:
    """One of Swagger UI's files (cached by browsers for a day)."""
    if name not in ASSETS:
        raise NotFound(f"No documentation asset named '{name}'.")
    return Response(_asset(name), media_type=ASSETS[name], headers={"Cache-Control": "public, max-age=86400"})
