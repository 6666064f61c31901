"""The tree's architecture, as rules on imports: one namespace, rooms that depend on each other one way.

``stream/`` has four rooms, ``tools → worker → inference → kafka``, with ``settings`` and
``metrics`` underneath; ``models/`` (the pure cores) knows nothing of ``stream/``; the product
loads no benchmark or test code. A move that breaks one of these breaks the README's diagram too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"stream": "streamrec.stream", "models": "streamrec.models", "bench": "streamrec.bench"}
# Each room may import the rooms listed, and itself.
ALLOWED = {
    "stream.tools": {
        "stream.worker",
        "stream.inference",
        "stream.kafka",
        "stream.settings",
        "stream.metrics",
        "models",
    },
    "stream.worker": {"stream.inference", "stream.kafka", "stream.settings", "stream.metrics", "models"},
    "stream.inference": {"stream.kafka", "stream.settings", "stream.metrics", "models"},
    "stream.kafka": {"stream.settings", "stream.metrics"},
    "stream.metrics": {"stream.settings"},
    "models": set(),
}


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(REPO).with_suffix("").parts
    return ".".join([PACKAGES.get(folder, folder), *[p for p in rest if p != "__init__"]])


def room_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "streamrec" or len(parts) < 2:
        return None
    if parts[1] == "stream":
        return "stream." + parts[2] if len(parts) > 2 else "stream"
    return parts[1]


def imports(path: Path) -> Iterator[tuple[str, int, bool]]:
    """``(module, line, at_module_level)`` for every import in ``path``, relative ones resolved."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            names = [".".join(p for p in (base, node.module or "") if p)]
        else:
            continue
        for name in names:
            yield name, node.lineno, node.col_offset == 0


def product_files() -> list[Path]:
    return sorted([*(REPO / "stream").rglob("*.py"), *(REPO / "models").rglob("*.py")])


def test_nothing_is_imported_under_a_bare_top_level_name():
    offenders = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for folder in ("stream", "models", "bench", "tests", "deploy")
        for path in (REPO / folder).rglob("*.py")
        for name, line, _ in imports(path)
        if name.split(".")[0] in PACKAGES
    ]
    assert not offenders


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_each_room_imports_only_the_rooms_below_it(room: str):
    offenders = []
    for path in product_files():
        if room_of(module_name(path)) != room:
            continue
        for name, line, _ in imports(path):
            target = room_of(name)
            if target is None or target == room or target in ALLOWED[room]:
                continue
            if room == "stream.tools" and target == "bench" and path.name == "cli.py":
                continue  # `streamrec bench`, imported inside the command (checked below)
            offenders.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not offenders


def test_settings_build_the_kafka_security_and_not_the_other_way_round():
    settings = {name for name, _, _ in imports(REPO / "stream" / "settings.py") if name.startswith("streamrec")}
    security = {
        name for name, _, _ in imports(REPO / "stream" / "kafka" / "security.py") if name.startswith("streamrec")
    }
    assert settings == {"streamrec.stream.kafka.security"}
    assert security == set()


def test_the_product_imports_no_benchmark_or_test_code_until_streamrec_bench_runs():
    for path in product_files():
        for name, line, top_level in imports(path):
            assert name.split(".")[0] != "tests", f"{path.relative_to(REPO)}:{line} imports {name}"
            if room_of(name) == "bench":
                assert not top_level, f"{path.relative_to(REPO)}:{line} imports {name} at import time"
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, streamrec.stream.tools.cli, streamrec.stream.worker.app; "
         "print(sorted(m for m in sys.modules if m.startswith(('streamrec.bench', 'tests'))))"],
        capture_output=True, text=True, check=True, cwd="/",
    ).stdout.strip()  # fmt: skip
    assert loaded == "[]"


def test_every_package_folder_is_listed_for_the_wheel():
    """pyproject lists the packages by hand (the folders are mapped into one namespace, which
    setuptools' discovery cannot follow): a new sub-package missing there would be missing from
    the installed product while every test run from the checkout still passed."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {module_name(init) for folder in PACKAGES for init in (REPO / folder).rglob("__init__.py")}
    data_only = listed - folders  # folders of package data (setuptools treats every folder as a package)
    for package in data_only:
        folder = REPO / package.removeprefix("streamrec.").replace(".", "/")
        assert folder.is_dir() and not list(folder.glob("*.py")), package
    assert folders <= listed
    assert {package.rsplit(".", 1)[0] for package in data_only} <= folders
