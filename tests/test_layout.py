"""The package's shape, as the design asks: ssl_core never imports gradio, and no module grows past
400 lines (one concern a module; a bigger one is split, as data.py was into data.py and folders.py)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ssl_core"
MAX_LINES = 400


def test_no_module_of_the_core_is_over_400_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_core_never_imports_gradio() -> None:
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "gradio" for n in names), f"{path.name} imports gradio"
