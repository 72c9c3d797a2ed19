"""The OpenAPI file and the Swagger UI page rendered from it, served without any CDN."""

from __future__ import annotations

from importlib import resources as package_resources
from pathlib import Path

import falcon
import swagger_ui_bundle

# The spec ships inside the package so an installed msgapi serves it too;
# a test keeps it identical to the top-level openapi.yaml.
SPEC_BYTES = package_resources.files("msgapi").joinpath("openapi.yaml").read_bytes()
SWAGGER_ASSETS = Path(swagger_ui_bundle.swagger_ui_path)
ASSETS_PREFIX = "/docs/assets"

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
  <script src="{ASSETS_PREFIX}/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
""".encode()

# Kept out of the page so a strict Content-Security-Policy (no inline script) can hold.
_INIT = b"""window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.yaml",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
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
        resp.set_header(
            "Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
        )
        resp.data = _PAGE

    on_head = on_get

    def on_get_init(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "text/javascript; charset=utf-8"
        resp.data = _INIT
