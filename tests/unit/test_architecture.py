"""Architecture checks that run with the suite: no import circles among silverlabel's modules."""

import sys

from scripts.check_imports import import_cycles


def test_silverlabel_has_no_import_circles():
    assert import_cycles("silverlabel") == []


def test_the_check_finds_a_circle_hidden_in_a_function(tmp_path, monkeypatch):
    pkg = tmp_path / "circlepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .c import x\n    return x\n")
    (pkg / "c.py").write_text("from .a import b as x\n")
    (pkg / "d.py").write_text("from . import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert import_cycles("circlepkg") == [["circlepkg.a", "circlepkg.b", "circlepkg.c"]]
    finally:
        sys.modules.pop("circlepkg", None)
