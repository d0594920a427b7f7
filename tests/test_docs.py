"""docs/paper.md maps the papers onto the code; a rename must not leave it pointing at nothing.

Its convention (stated at its top): a repo-relative path in backticks (`path/to/file.py`, `dir/`),
optionally followed, each separated by one space, by the backticked names that file defines
(`path/to/file.py` `name` `Class.method`)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "paper.md"
PATH = re.compile(r"`([\w.\-/]+(?:\.(?:py|yaml|md|html)|/))`")
NAME = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
REFERENCE = re.compile(r"`([\w.\-/]+\.py)`((?: `" + NAME + r"`)+)")


def _doc() -> str:
    return DOC.read_text()


def _defines(source: str, name: str) -> bool:
    """`def name`, `class name` or `name =` / `name: type =` anywhere in the file (methods and
    class attributes count: `Class.method` checks each part)."""
    n, other = re.escape(name), r"[A-Za-z_]\w*"
    definition = rf"^\s*(?:async\s+)?(?:def|class)\s+{n}\b"
    assignment = rf"^\s*(?:{other}\s*,\s*)*{n}\s*(?:,\s*{other}\s*)*(?::[^=\n]*)?=(?!=)"  # also `a, name = ...`
    return re.search(f"{definition}|{assignment}", source, re.M) is not None


def test_every_path_exists():
    paths = sorted(set(PATH.findall(_doc())))
    assert len(paths) > 40
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"docs/paper.md names paths that do not exist: {missing}"


def test_every_name_is_defined_in_its_file():
    refs = REFERENCE.findall(_doc())
    assert len(refs) > 40
    missing = []
    for path, names in refs:
        file = ROOT / path
        if not file.is_file():
            missing.append(path)
            continue
        source = file.read_text()
        for name in re.findall(r"`(" + NAME + r")`", names):
            missing += [f"{path} {name}" for part in name.split(".") if not _defines(source, part)][:1]
    assert not missing, f"docs/paper.md names what its file does not define: {missing}"


@pytest.mark.parametrize("what", [*(f"eq. {n}" for n in range(1, 14)), *(f"Table {n}" for n in range(1, 7)),
                                  "Figure 4", "Figure 5", "Figure 6", "Figure 7"])
def test_every_equation_table_and_figure_of_onevision_is_mapped(what):
    onevision = _doc().split("## OneSearch")[0]
    assert re.search(rf"\b{re.escape(what)}\b", onevision, re.I), f"docs/paper.md does not map OneVision's {what}"


def test_the_checker_catches_a_bad_reference():
    assert REFERENCE.findall("see `a/b.py` `f` `C.g` here") == [("a/b.py", " `f` `C.g`")]
    assert _defines("class C:\n    def g(self):\n        pass\nX: int = 1\n", "g")
    assert _defines("X: int = 1\n", "X") and _defines("A, B = 1, 2\n", "B") and not _defines("def fx():\n", "f")
    assert not _defines("x == f\n", "x")
