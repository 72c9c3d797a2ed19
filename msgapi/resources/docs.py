"""The OpenAPI file and the Swagger UI page rendered from it, served without any CDN."""

from __future__ import annotations

from importlib import resources as package_resources
from pathlib import Path

import falcon

# The spec ships inside the package so an installed msgapi serves it too;
# a test keeps it identical to the top-level openapi.yaml.
SPEC_BYTES = package_resources.files("msgapi").joinpath("openapi.yaml").read_bytes()
ASSETS_PREFIX = "/docs/assets"
# Swagger UI, vendored from npm's swagger-ui-dist by scripts/vendor_swagger_ui.py
# (its SHA256SUMS names the version). Only these files are served, and only
# these are vendored, with the licences: not the package's own index.html,
# its OAuth2 redirect page or its source maps.
SWAGGER_UI_DIR = Path(__file__).resolve().parent.parent / "static" / "swagger-ui"
SWAGGER_UI_FILES = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "img-src 'self' data:",
        "style-src 'self' 'unsafe-inline'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)

_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>msgapi</title>
  <link rel="stylesheet" href="{ASSETS_PREFIX}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{ASSETS_PREFIX}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS_PREFIX}/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
""".encode()

# Kept out of the page so a strict Content-Security-Policy (no inline script) can hold.
# The base layout: no top bar offering to load other specs, no online validator badge.
# A token typed into "Authorize" lives only as long as the tab (persistAuthorization
# would keep it in localStorage, readable by any script on this origin).
_INIT = b"""window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.yaml",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
};
"""


class OpenAPISpec:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "application/yaml; charset=utf-8"
        resp.data = SPEC_BYTES

    on_head = on_get


class DocsPage:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        resp.data = _PAGE

    on_head = on_get

    def on_get_init(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "text/javascript; charset=utf-8"
        resp.data = _INIT


class DocsAsset:
    """The Swagger UI files the page loads, by name from a fixed list; anything else is 404."""

    def __init__(self, directory: Path = SWAGGER_UI_DIR) -> None:
        self._directory = directory

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        content_type = SWAGGER_UI_FILES.get(name)
        if content_type is None:
            raise falcon.HTTPNotFound()
        resp.content_type = content_type
        # Read per request: a docs page is rare, and the 1.7 MB bundle need not stay in memory.
        resp.data = (self._directory / name).read_bytes()

    on_head = on_get
