"""The docs page: only the Swagger UI files it loads are served, vendored verbatim with their licences."""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import re
from pathlib import Path

import pytest
import tomllib

from msgapi.resources.docs import _PAGE, ASSETS_PREFIX, SWAGGER_UI_DIR, SWAGGER_UI_FILES

ROOT = Path(__file__).resolve().parent.parent


def _vendor_script():
    spec = importlib.util.spec_from_file_location("vendor_swagger_ui", ROOT / "scripts" / "vendor_swagger_ui.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(SWAGGER_UI_FILES))
def test_every_listed_asset_is_served_with_its_type(app, name):
    resp = app.get(f"{ASSETS_PREFIX}/{name}")
    assert resp.headers["Content-Type"] == SWAGGER_UI_FILES[name]
    assert resp.body == (SWAGGER_UI_DIR / name).read_bytes()


@pytest.mark.parametrize(
    "name",
    [
        "index.html",  # the stock page, which loads the petstore spec from the internet
        "oauth2-redirect.html",
        "oauth2-redirect.js",
        "swagger-initializer.js",
        "index.j2",
        "swagger-ui-bundle.js.map",
        "swagger-ui.css.map",
        "swagger-ui-standalone-preset.js",
        "swagger-ui.js",
        "LICENSE",
        "SHA256SUMS",
        "..%2F..%2Fapp.py",
    ],
)
def test_anything_else_under_the_assets_prefix_is_404(app, name):
    app.get(f"{ASSETS_PREFIX}/{name}", status=404)


def test_the_page_loads_exactly_the_served_assets():
    loaded = set(re.findall(rf'"{ASSETS_PREFIX}/([^"]+)"', _PAGE.decode()))
    assert loaded == set(SWAGGER_UI_FILES)


def test_the_page_forbids_framing_base_changes_and_inline_script(app):
    policy = app.get("/").headers["Content-Security-Policy"]
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["default-src"] == ["'self'"]
    assert "script-src" not in directives  # scripts fall back to 'self': no inline script, no eval


def test_vendored_files_are_the_pinned_release_byte_for_byte():
    script = _vendor_script()
    manifest = (SWAGGER_UI_DIR / script.MANIFEST).read_text(encoding="utf-8").splitlines()
    assert manifest[0].startswith(f"# {script.PACKAGE} {script.PINNED_VERSION} ")
    listed = dict(reversed(line.split("  ", 1)) for line in manifest[1:])
    assert set(listed) == {*SWAGGER_UI_FILES, *script.LICENCE_FILES}
    for name, digest in listed.items():
        assert hashlib.sha256((SWAGGER_UI_DIR / name).read_bytes()).hexdigest() == digest, name
    on_disk = {path.name for path in SWAGGER_UI_DIR.iterdir()}
    assert on_disk == {*listed, script.MANIFEST}


def test_vendored_swagger_ui_carries_a_patched_dompurify():
    # DOMPurify before 3.2.4 has known XSS bypasses (CVE-2024-45801, CVE-2024-47875, CVE-2025-26791).
    licences = (SWAGGER_UI_DIR / "swagger-ui-bundle.js.LICENSE.txt").read_text(encoding="utf-8")
    version = re.search(r"DOMPurify (\d+)\.(\d+)\.(\d+)", licences)
    assert version, "the bundle's licence list names no DOMPurify"
    assert tuple(map(int, version.groups())) >= (3, 2, 4)


def test_the_wheel_includes_every_vendored_file():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["msgapi"]
    package = ROOT / "msgapi"
    for path in SWAGGER_UI_DIR.iterdir():
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
