"""The built wheel works without the checkout: installed into a fresh virtual environment, run elsewhere.

A user who runs ``pip install streamrec`` has no ``deploy/``, ``schemas/`` or ``bench/`` folder
next to the package. So the wheel is built here, installed into a new virtual environment in a
temporary directory, and its ``streamrec`` command is run from that directory: the broker's pom,
the schemas and the dashboard must come from inside the package (``importlib.resources``), and
``streamrec bench`` must find its suite. The dependencies (torch alone is several GB) are not
installed again: the fresh environment sees this one's ``site-packages`` as a plain path entry,
which does not run this environment's ``.pth`` files, so the checkout's editable finder is not
loaded and only the wheel provides ``streamrec``.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the sources: a build in the checkout would leave ``build/`` behind, and
    setuptools reuses ``build/lib``, so a module deleted since would still end up in the wheel."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("stream", "models", "bench"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (built,) = out.glob("streamrec-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the wheel; returns its ``bin`` folder."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return env_dir / "bin"


def run(bin_dir: Path, cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_") and k != "PYTHONPATH"}
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]], cwd=cwd, env={**clean, **(env or {})},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_the_wheel_holds_one_streamrec_namespace_with_its_data(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.startswith("streamrec-")}
    assert tops == {"streamrec"}
    for expected in (
        "streamrec/stream/kafka/pom.xml",
        "streamrec/stream/worker/schemas/interaction.schema.json",
        "streamrec/stream/worker/schemas/catalogue-item.schema.json",
        "streamrec/stream/dashboards/streamrec.json",
        "streamrec/bench/suite.py",
        "streamrec/models/recommender/__init__.py",
    ):
        assert expected in names, expected
    assert not [name for name in names if "/results/" in name or "__pycache__" in name]


def test_the_installed_command_runs_outside_the_checkout(installed: Path, tmp_path: Path):
    where = run(installed, tmp_path, "python", "-c", "import streamrec.stream, sys; print(streamrec.stream.__file__)")
    assert where.returncode == 0, where.stderr
    assert not where.stdout.startswith(str(REPO)) and "site-packages" in where.stdout
    bare = run(installed, tmp_path, "python", "-c", "import stream")
    assert bare.returncode == 1 and "No module named 'stream'" in bare.stderr

    usage = run(installed, tmp_path, "streamrec", "--help")
    assert usage.returncode == 0, usage.stderr
    for command in ("kafka", "worker", "demo", "bench", "schemas", "dashboard"):
        assert command in usage.stdout

    bench = run(installed, tmp_path, "streamrec", "bench", "--help")
    assert bench.returncode == 0 and "--quick" in bench.stdout, bench.stderr


def test_the_installed_command_writes_the_packaged_schemas_and_dashboard(installed: Path, tmp_path: Path):
    done = run(installed, tmp_path, "streamrec", "schemas", "--out", "contract")
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in (tmp_path / "contract").iterdir())
    assert written == ["catalogue-item.schema.json", "interaction.schema.json"]
    for name in written:
        packaged = json.loads((REPO / "stream" / "worker" / "schemas" / name).read_text())
        assert json.loads((tmp_path / "contract" / name).read_text()) == packaged

    board = run(installed, tmp_path, "streamrec", "dashboard")
    assert board.returncode == 0, board.stderr
    assert json.loads(board.stdout) == json.loads((REPO / "stream" / "dashboards" / "streamrec.json").read_text())


def test_the_installed_command_fetches_the_broker_with_its_packaged_pom(installed: Path, tmp_path: Path):
    """Maven resolves the broker's jars from its local repository when they are there (fast), else Central."""
    cache = tmp_path / "cache"
    done = run(installed, tmp_path, "streamrec", "kafka", "fetch", env={"STREAMREC_CACHE_DIR": str(cache)})
    assert done.returncode == 0, done.stdout + done.stderr
    jars = sorted(p.name for p in cache.rglob("libs/*.jar"))
    assert any(name.startswith("kafka_2.13-") for name in jars) and any(
        name.startswith("kafka-clients-") for name in jars
    )
    assert "pom not found" not in done.stdout + done.stderr
