"""The layers hold: `lint-imports` (import-linter, contracts in pyproject.toml) passes on the tree,
and the same contracts fail on a copy of it with one deliberate upward import or cycle."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("onevision", "onevision_cli", "pipelines", "training", "serving", "streaming", "features", "infra")
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def copy_tree(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "web"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize("where, line, broken", [
    ("onevision/generator/upward.py", "import serving.app\n", "Layers"),  # the library reaching up
    ("streaming/upward.py", "from training import dpo\n", "Layers"),  # a lower floor reaching up
    ("serving/sideways.py", "import training.generator\n", "Layers"),  # siblings stay independent
    ("onevision/generator/decode/cycle.py", "from onevision.generator.rank import searcher\n", "cycles"),
])
def test_a_deliberate_upward_import_or_cycle_fails(tmp_path, where, line, broken):
    root = copy_tree(tmp_path)
    (root / where).write_text(line)
    out = lint(root)
    assert out.returncode != 0, out.stdout
    assert "1 broken" in out.stdout and broken in out.stdout.split("Broken contracts")[1], out.stdout
