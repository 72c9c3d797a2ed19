"""Re-vendor Swagger UI for the docs page from the npm package ``swagger-ui-dist``.

    python scripts/vendor_swagger_ui.py            # the pinned version
    python scripts/vendor_swagger_ui.py 5.36.0     # another one: then update PINNED_VERSION

Fetches the package with ``npm pack`` (npm checks the registry's integrity hash), copies
only the files the page serves plus the licences into ``msgapi/static/swagger-ui/``,
removes anything else there, and writes ``SHA256SUMS`` naming the version. Nothing is
fetched at run time: the served files are committed and shipped in the wheel.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from msgapi.resources.docs import SWAGGER_UI_DIR, SWAGGER_UI_FILES  # noqa: E402

PACKAGE = "swagger-ui-dist"
PINNED_VERSION = "5.35.0"
# Shipped with the served files, never served: Swagger UI's licence and notice, and the
# licences of what its bundle contains.
LICENCE_FILES = ("LICENSE", "NOTICE", "swagger-ui-bundle.js.LICENSE.txt")
MANIFEST = "SHA256SUMS"


def manifest_text(version: str, directory: Path, names: list[str]) -> str:
    """``SHA256SUMS`` for ``names`` in ``directory``, headed by the package and version."""
    lines = [f"# {PACKAGE} {version} from npm, vendored by scripts/vendor_swagger_ui.py"]
    for name in sorted(names):
        lines.append(f"{hashlib.sha256((directory / name).read_bytes()).hexdigest()}  {name}")
    return "\n".join(lines) + "\n"


def vendor(version: str, target: Path = SWAGGER_UI_DIR) -> None:
    names = sorted({*SWAGGER_UI_FILES, *LICENCE_FILES})
    with tempfile.TemporaryDirectory() as scratch:
        npm = "npm.cmd" if sys.platform == "win32" else "npm"
        packed = subprocess.run(
            [npm, "pack", f"{PACKAGE}@{version}", "--json", "--pack-destination", scratch],
            check=True,
            capture_output=True,
            text=True,
        )
        info = json.loads(packed.stdout)[0]
        if info["version"] != version:
            sys.exit(f"npm gave {PACKAGE} {info['version']}, not {version}")
        with tarfile.open(Path(scratch) / info["filename"]) as archive:
            members = {member.name: member for member in archive.getmembers() if member.isfile()}
            missing = [name for name in names if f"package/{name}" not in members]
            if missing:
                sys.exit(f"{PACKAGE} {version} has no {', '.join(missing)}")
            target.mkdir(parents=True, exist_ok=True)
            for stale in target.iterdir():
                if stale.name not in names and stale.is_file():
                    stale.unlink()
            for name in names:
                data = archive.extractfile(members[f"package/{name}"]).read()
                (target / name).write_bytes(data)
    (target / MANIFEST).write_text(manifest_text(version, target, names), encoding="utf-8", newline="\n")
    print(f"vendored {PACKAGE} {version}: {', '.join(names)} into {target.relative_to(ROOT)}")


if __name__ == "__main__":
    vendor(sys.argv[1] if len(sys.argv) > 1 else PINNED_VERSION)
