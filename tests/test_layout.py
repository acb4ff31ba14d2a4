"""The package's layout keeps the layers of ARCHITECTURE.md apart, and stays readable.

- :mod:`metastore.store` (SQLite via apsw) knows nothing of mypy nor of the layers above it;
- :mod:`metastore.mypy` (mypy's protocol) knows nothing of SQLite: it reaches the store only
  through :mod:`metastore.store.api` and the protocol types it declares itself;
- :mod:`metastore.config` imports neither mypy nor the store (the start-up hook reads it);
- the seams wire the layers; :mod:`metastore.cli` may use everything, nothing uses it.

Every ``import``/``from ... import`` in a module counts, wherever it stands (inside a
function, under ``TYPE_CHECKING``): a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "metastore"

#: layer -> (forbidden module prefixes, allowed exceptions among them)
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "metastore.store": (("mypy", "metastore.mypy", "metastore.seams", "metastore.cli",
                         "metastore.config"), ()),
    "metastore.mypy": (("apsw", "sqlite3", "metastore.store", "metastore.seams",
                        "metastore.cli", "metastore.config"), ("metastore.store.api",)),
    "metastore.config": (("mypy", "apsw", "sqlite3", "metastore.store", "metastore.mypy",
                          "metastore.seams", "metastore.cli"), ()),
    "metastore.seams": (("metastore.cli",), ()),
}
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(module: str, source: str) -> list[tuple[str, ...]]:
    """What ``source`` (the text of ``module``) imports: one tuple per imported name, of the
    absolute module names it may be (``from pkg import sub`` names ``pkg`` or ``pkg.sub``)."""
    found: list[tuple[str, ...]] = []
    package = module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name,) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found += [(base, f"{base}.{alias.name}") for alias in node.names]
    return found


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(module: str, source: str) -> list[str]:
    """The imports of ``module`` that its layer forbids, as "module imports name"."""
    out = []
    for layer, (forbidden, allowed) in RULES.items():
        if module != layer and not module.startswith(layer + "."):
            continue
        for names in imported(module, source):
            if any(_under(n, allowed) for n in names):
                continue
            if any(_under(n, forbidden) for n in names):
                out.append(f"{module} imports {names[-1]}")
    return out


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_layer_imports_only_what_it_may() -> None:
    found = [v for path in modules()
             for v in violations(module_name(path), path.read_text(encoding="utf-8"))]
    assert found == []


@pytest.mark.parametrize(("module", "line"), [
    ("metastore.store.local", "import mypy.build"),
    ("metastore.store.layer", "from metastore.mypy.units import Manifest"),
    ("metastore.store.scratch", "from ..config import load_config"),
    ("metastore.mypy.protocol", "import apsw"),
    ("metastore.mypy.choosing", "from metastore.store.local import Store"),
    ("metastore.mypy.state", "def f():\n    from metastore.store import sqlite"),
    ("metastore.mypy.reading", "import sqlite3"),
    ("metastore.config.keys", "from mypy import defaults"),
    ("metastore.seams.sql", "from metastore.cli.admin import main"),
])
def test_a_forbidden_import_is_caught(module: str, line: str) -> None:
    """The rules bite: each of these lines, added to a real module of the layer, is one
    violation."""
    path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
    source = path.read_text(encoding="utf-8") + "\n" + line + "\n"
    assert len(violations(module, source)) == 1, violations(module, source)


def test_the_mypy_layer_may_use_the_store_api() -> None:
    assert violations("metastore.mypy.state", "from metastore.store.api import digest") == []


def test_no_module_or_class_too_long_to_read() -> None:
    too_long = []
    for path in modules():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{module_name(path)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    too_long.append(f"{module_name(path)}.{node.name}: {lines} lines")
    assert too_long == []
