"""``make demo`` and ``make test`` name every missing prerequisite in one line before installing anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "check_prerequisites.sh"
TOOLS = ("java", "mvn", "go", "apt-get", "apt-cache")
# What the script and the tools' own launchers (mvn is a shell script) run besides them.
BASICS = ("bash", "sh", "sed", "sort", "head", "printf", "uname", "dirname", "basename", "readlink", "expr", "cat")
BASICS += ("tr", "grep", "awk", "cut", "which", "env", "ls", "mkdir", "id")


def machine_with(tmp_path: Path, tools: tuple[str, ...]) -> dict[str, str]:
    """A PATH holding only ``tools`` (links to the real ones) and the basics the script uses."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in (*tools, *BASICS):
        found = shutil.which(tool)
        if found is None:
            pytest.fail(f"{tool} is not installed here: the prerequisites check itself needs it")
        (bin_dir / tool).symlink_to(found)
    return {**os.environ, "PATH": str(bin_dir)}


def check(target: str, env: dict[str, str], python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shutil.which("bash") or "bash", str(SCRIPT), target, python], env=env,
                          capture_output=True, text=True)  # fmt: skip


def test_this_machine_has_everything_make_test_needs(tmp_path: Path):
    done = check("test", machine_with(tmp_path, TOOLS))
    assert (done.returncode, done.stderr) == (0, "")


def test_missing_tools_are_named_in_one_line(tmp_path: Path):
    done = check("test", machine_with(tmp_path, ("java", "apt-get", "apt-cache")))
    assert done.returncode == 1
    assert done.stderr == (
        "make test needs: Maven 3.6+ (e.g. apt-get install maven); "
        "Go 1.26+ (installs helm and kubeconform through the module proxy)\n"
    )


def test_the_demo_does_not_need_the_test_tools(tmp_path: Path):
    assert check("demo", machine_with(tmp_path, ("java", "mvn"))).returncode == 0


def test_a_python_outside_3_11_and_3_12_is_named(tmp_path: Path):
    done = check("demo", machine_with(tmp_path, ("java", "mvn")), python="python2.7-not-here")
    assert done.returncode == 1
    assert done.stderr == "make demo needs: Python 3.11 or 3.12 (python2.7-not-here not found; set PYTHON=...)\n"
