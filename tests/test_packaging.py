"""What makes msgapi installable and portable: declared dependencies, shipped spec, no POSIX-only code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "msgapi"
# Modules that do not exist on Windows, and os functions that fail there.
POSIX_ONLY_MODULES = {"fcntl", "pwd", "grp", "resource", "termios", "tty", "pty", "posix", "syslog", "crypt", "spwd"}
POSIX_ONLY_OS_CALLS = {"fork", "forkpty", "setsid", "getuid", "geteuid", "getgid", "chown", "killpg", "getpgid", "nice"}


def _requirement_names(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith(("#", "-"))]


def test_pyproject_declares_exactly_the_runtime_requirements():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    requirements = _requirement_names((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    assert sorted(pyproject["project"]["dependencies"]) == sorted(requirements)


def test_console_script_points_at_the_cli():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["scripts"]["msgapi"] == "msgapi.cli:main"
    from msgapi.cli import main

    assert callable(main)


def test_version_matches_the_package():
    import msgapi

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["version"] == msgapi.__version__


def _imports_and_calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield "import", alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield "import", node.module.split(".")[0], node.lineno
            if node.module == "os":
                for alias in node.names:
                    yield "os-call", alias.name, node.lineno
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            yield "os-call", node.attr, node.lineno


def test_the_package_uses_no_posix_only_module_or_call():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for kind, name, line in _imports_and_calls(path):
            if (kind == "import" and name in POSIX_ONLY_MODULES) or (kind == "os-call" and name in POSIX_ONLY_OS_CALLS):
                found.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert found == []


def test_the_scan_itself_catches_posix_only_code(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import fcntl\nimport os\nos.fork()\nfrom os import getuid\n", encoding="utf-8")
    names = {name for _, name, _ in _imports_and_calls(sample)}
    assert {"fcntl", "fork", "getuid"} <= names


def test_paths_go_through_pathlib_not_hard_coded_separators():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"os\.path\.join|['\"][A-Za-z]:\\\\", line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert offenders == []
