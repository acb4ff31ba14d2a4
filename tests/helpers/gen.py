"""Deterministic generator of small multi-package projects for the end-to-end tests.

Everything here is a pure function of its arguments returning a :data:`Files` mapping
(``{posix relative path: text}``), except :func:`write_tree` and :func:`copy_tree`, which put
a mapping or a tree on disk.

A generated project (:func:`generate`) has ``spec.packages`` packages ``pkg0 … pkgN``, each with
``spec.modules_per_package`` regular modules ``mJ`` that define a class, functions and a constant,
and import the *core* module plus one or two earlier modules, across packages. Special modules:

- ``pkg0/core.py`` (:data:`CORE`): the module whose interface (``Core``, ``core_value``) nearly
  every other module uses; :func:`edit_core` changes that interface.
- ``pkg1/api.py`` (:data:`API`): ``api_fn`` returns ``int`` in version A and ``float`` (with an
  extra parameter) in version B (:func:`version_b`), so its dependents are re-checked on each
  switch between the versions, and the error in :data:`BROKEN` changes.
- ``pkg1/broken.py`` (:data:`BROKEN`): the one deliberate type error (``bad: str = api_fn(1)``).
- ``pkg<last>/leaf.py`` (:data:`leaf_path`): imported by no module; :func:`edit_leaf`.
- ``pkg2/cyc_a.py`` and ``pkg2/cyc_b.py``: an import cycle (an SCC of size 2).
- ``pkg0/loose.py``: an untyped function (an error only with ``--disallow-untyped-defs``).
- ``pkg0/magic.py`` + ``pkg0/magic_user.py``: ``magic()`` whose return type a test plugin
  (:func:`plugin_source`) overrides.
- with ``spec.thirdparty``: ``pkg<last>/uses_tp.py`` using ``thirdparty_pkg`` (see
  :func:`thirdparty_files`), with an error that mentions that package's types.

``mypy.ini`` lists the packages in ``files``, so mypy is run without targets.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

Files = dict[str, str]

CORE = "pkg0/core.py"
API = "pkg1/api.py"
BROKEN = "pkg1/broken.py"
LOOSE = "pkg0/loose.py"
MAGIC = "pkg0/magic.py"
MAGIC_USER = "pkg0/magic_user.py"
CONFIG = "mypy.ini"
MANIFEST = ".generated-files"
THIRDPARTY_PACKAGE = "thirdparty_pkg"


@dataclass(frozen=True)
class ProjectSpec:
    """Shape of a generated project. The same spec always yields the same files."""

    seed: int = 0
    packages: int = 4
    modules_per_package: int = 8
    thirdparty: bool = False

    def __post_init__(self) -> None:
        if self.packages < 3:
            raise ValueError("a project needs at least 3 packages (core, api, cycle)")
        if self.modules_per_package < 2:
            raise ValueError("a package needs at least 2 regular modules")


def leaf_path(spec: ProjectSpec) -> str:
    """Path of the leaf module (imported by no module)."""
    return f"pkg{spec.packages - 1}/leaf.py"


def added_path(spec: ProjectSpec) -> str:
    """Path of the module that exists only in version B."""
    return f"pkg{spec.packages - 1}/added.py"


def uses_thirdparty_path(spec: ProjectSpec) -> str:
    """Path of the module importing ``thirdparty_pkg`` (only with ``spec.thirdparty``)."""
    return f"pkg{spec.packages - 1}/uses_tp.py"


def module_name(path: str) -> str:
    """``pkg1/m2.py`` -> ``pkg1.m2``; ``pkg1/__init__.py`` -> ``pkg1``."""
    parts = path[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _regular(pkg: int, mod: int) -> str:
    return f"pkg{pkg}.m{mod}"


def _fn(mod: str) -> str:
    pkg, m = mod.split(".")
    return f"fn_{pkg[3:]}_{m[1:]}"


def _core_text(extra: int = 0) -> str:
    lines = [
        '"""The core module: its interface is used by most modules of the project."""',
        "",
        "",
        "class Core:",
        '    """Base class of many generated classes."""',
        "",
        "    def base(self, x: int) -> int:",
        "        return x + 1",
        "",
        "",
        "def core_value(x: int) -> int:",
        "    return x * 2",
    ]
    for n in range(1, extra + 1):
        lines += ["", "", f"def core_extra_{n}(x: int, y: str = 'e{n}') -> str:",
                  "    return y * x"]
    return "\n".join(lines) + "\n"


_API_A = '''"""The API module: its signature differs between versions A and B."""


def api_fn(x: int) -> int:
    return x + 3
'''

_API_B = '''"""The API module: its signature differs between versions A and B."""


def api_fn(x: int, scale: float = 1.5) -> float:
    return x * scale
'''

_BROKEN = '''"""The module holding the project's deliberate type error."""
from pkg1.api import api_fn


def fine() -> int:
    return 1


bad: str = api_fn(1)
'''

_LOOSE = '''"""An untyped function: an error only with --disallow-untyped-defs."""


def untyped(x):
    return x


def typed(x: int) -> int:
    return int(untyped(x))
'''

_MAGIC = '''"""magic() is declared to return int; the test plugin may say otherwise."""


def magic() -> int:
    return 0
'''

_MAGIC_USER = '''from pkg0.magic import magic

value: int = magic()
'''

_CYC_A = '''import pkg2.cyc_b


def a_fn(x: int) -> int:
    if x <= 0:
        return 0
    return pkg2.cyc_b.b_fn(x - 1) + 1
'''

_CYC_B = '''import pkg2.cyc_a


def b_fn(x: int) -> int:
    if x <= 0:
        return 0
    return pkg2.cyc_a.a_fn(x - 1) + 2
'''

_USES_TP = '''"""Uses the third-party package installed in a virtualenv."""
from thirdparty_pkg import util
from thirdparty_pkg.shapes import Circle

area: str = Circle(2.0).area()


def scaled(x: float) -> float:
    return util.scale(x, 2)
'''


def _regular_text(name: str, deps: list[str], uses_api: bool, const: int,
                  subclass: bool) -> str:
    pkg, m = name.split(".")
    suffix = f"{pkg[3:]}_{m[1:]}"
    lines = [f'"""Generated module {name}."""', "from pkg0.core import Core, core_value"]
    if uses_api:
        lines.append("from pkg1.api import api_fn")
    lines += [f"import {d}" for d in deps]
    lines += ["", f"CONST_{suffix}: int = {const}", "", ""]
    base = "(Core)" if subclass else ""
    lines += [f"class C{suffix}{base}:", f'    """Class of {name}."""', "",
              f"    def method_{suffix}(self, x: int) -> int:"]
    if subclass:
        lines.append(f"        total = self.base(x) + CONST_{suffix}")
    else:
        lines.append(f"        total = core_value(x) + CONST_{suffix}")
    for d in deps:
        lines.append(f"        total += {d}.{_fn(d)}(x)")
    lines += ["        return total", "", "",
              f"def fn_{suffix}(x: int) -> int:",
              f"    result = core_value(x) + CONST_{suffix}"]
    for d in deps:
        lines.append(f"    result += {d}.{_fn(d)}(x)")
    lines += ["    return result"]
    if uses_api:
        lines += ["", "", f"def api_user_{suffix}(x: int) -> object:", "    return api_fn(x)"]
    return "\n".join(lines) + "\n"


def _leaf_text(spec: ProjectSpec, edit: int, deps: list[str]) -> str:
    lines = ['"""Leaf module: imported by no other module."""']
    lines += [f"import {d}" for d in deps]
    lines += ["", "", "def leaf_fn(x: int) -> int:", "    total = 0"]
    lines += [f"    total += {d}.{_fn(d)}(x)" for d in deps]
    lines += ["    return total"]
    for n in range(1, edit + 1):
        lines += ["", "", f"leaf_value_{n}: int = 'edit {n}'"]
    return "\n".join(lines) + "\n"


def _leaf_deps(spec: ProjectSpec) -> list[str]:
    rng = random.Random(f"leaf-{spec.seed}")
    regulars = [_regular(p, m) for p in range(spec.packages)
                for m in range(spec.modules_per_package)]
    return sorted(rng.sample(regulars, min(3, len(regulars))))


def generate(spec: ProjectSpec = ProjectSpec()) -> Files:
    """Version A of the project described by ``spec`` (deterministic in ``spec``)."""
    rng = random.Random(spec.seed)
    files: Files = {}
    pkgs = [f"pkg{p}" for p in range(spec.packages)]
    for pkg in pkgs:
        files[f"{pkg}/__init__.py"] = f'"""Generated package {pkg}."""\n\nPACKAGE_NAME = "{pkg}"\n'
    files[CORE] = _core_text()
    files[API] = _API_A
    files[BROKEN] = _BROKEN
    files[LOOSE] = _LOOSE
    files[MAGIC] = _MAGIC
    files[MAGIC_USER] = _MAGIC_USER
    files["pkg2/cyc_a.py"] = _CYC_A
    files["pkg2/cyc_b.py"] = _CYC_B
    earlier: list[str] = []
    for m in range(spec.modules_per_package):
        for p in range(spec.packages):
            name = _regular(p, m)
            deps = sorted(rng.sample(earlier, min(len(earlier), rng.randint(1, 2))))
            files[f"pkg{p}/m{m}.py"] = _regular_text(
                name, deps, uses_api=rng.random() < 0.3, const=rng.randint(1, 999),
                subclass=rng.random() < 0.5)
            earlier.append(name)
    files[leaf_path(spec)] = _leaf_text(spec, 0, _leaf_deps(spec))
    if spec.thirdparty:
        files[uses_thirdparty_path(spec)] = _USES_TP
    files[CONFIG] = config_text(spec)
    return files


def config_text(spec: ProjectSpec, extra: Iterable[str] = ()) -> str:
    """``mypy.ini`` listing the packages in ``files``, plus ``extra`` lines in ``[mypy]``."""
    pkgs = ", ".join(f"pkg{p}" for p in range(spec.packages))
    return "\n".join(["[mypy]", f"files = {pkgs}", *extra]) + "\n"


def version_b(files: Mapping[str, str], spec: ProjectSpec = ProjectSpec()) -> Files:
    """Version B of a version-A project: ``api_fn``'s signature changes (its dependents are
    re-checked and the error in :data:`BROKEN` changes) and :func:`added_path` is added."""
    out = dict(files)
    out[API] = _API_B
    out[added_path(spec)] = (
        '"""Only in version B."""\nfrom pkg0.core import Core\n\n\n'
        "class Added(Core):\n    def more(self) -> int:\n        return self.base(1)\n"
    )
    return out


def edit_leaf(files: Mapping[str, str], spec: ProjectSpec, edit: int = 1) -> Files:
    """The project with the leaf module's ``edit``-th variant (each adds an error line)."""
    out = dict(files)
    out[leaf_path(spec)] = _leaf_text(spec, edit, _leaf_deps(spec))
    return out


def edit_core(files: Mapping[str, str], edit: int = 1) -> Files:
    """The project with the core module's interface extended by ``edit`` functions."""
    out = dict(files)
    out[CORE] = _core_text(edit)
    return out


def with_config(files: Mapping[str, str], spec: ProjectSpec, extra: Iterable[str]) -> Files:
    """The project with ``extra`` lines added to ``[mypy]`` in ``mypy.ini``."""
    out = dict(files)
    out[CONFIG] = config_text(spec, extra)
    return out


def plugin_source(return_type: str) -> str:
    """A mypy plugin that makes ``pkg0.magic.magic()`` return ``builtins.<return_type>``."""
    return f'''"""Test plugin: overrides the return type of pkg0.magic.magic."""
from typing import Callable, Optional

from mypy.plugin import FunctionContext, Plugin
from mypy.types import Type


def _magic(ctx: FunctionContext) -> Type:
    return ctx.api.named_generic_type("builtins.{return_type}", [])


class MagicPlugin(Plugin):
    def get_function_hook(self, fullname: str) -> Optional[Callable[[FunctionContext], Type]]:
        if fullname == "pkg0.magic.magic":
            return _magic
        return None


def plugin(version: str) -> type[Plugin]:
    return MagicPlugin
'''


def thirdparty_files() -> Files:
    """A tiny typed package ``thirdparty_pkg`` (paths relative to a site-packages dir)."""
    p = THIRDPARTY_PACKAGE
    return {
        f"{p}/__init__.py": '"""A tiny typed third-party package."""\n__version__ = "1.0"\n',
        f"{p}/py.typed": "",
        f"{p}/shapes.py": (
            "class Shape:\n    def area(self) -> float:\n        return 0.0\n\n\n"
            "class Circle(Shape):\n    def __init__(self, r: float) -> None:\n"
            "        self.r = r\n\n    def area(self) -> float:\n"
            "        return 3.14159 * self.r * self.r\n"
        ),
        f"{p}/util.py": (
            "from thirdparty_pkg.shapes import Shape\n\n\n"
            "def scale(x: float, k: int) -> float:\n    return x * k\n\n\n"
            "def total(shapes: list[Shape]) -> float:\n"
            "    return sum(s.area() for s in shapes)\n"
        ),
    }


def write_tree(root: Path, files: Mapping[str, str]) -> list[str]:
    """Make the tree under ``root`` hold ``files``: writes the files whose content differs
    (like a checkout: unchanged files keep their mtime), deletes files that an earlier
    :func:`write_tree` wrote and ``files`` lacks, and records the file list in ``MANIFEST``.

    A rewritten file's mtime is moved forward by at least 2 s past its previous mtime, so that
    stock mypy, which compares whole-second mtimes and sizes, always sees the change (no
    sleeping). Returns the paths written or deleted, sorted.
    """
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / MANIFEST
    previous = set(manifest.read_text().split()) if manifest.exists() else set()
    changed: list[str] = []
    for rel in sorted(previous - set(files)):
        target = root / rel
        if target.exists():
            target.unlink()
            changed.append(rel)
    for rel, text in sorted(files.items()):
        target = root / rel
        data = text.encode()
        if target.exists():
            if target.read_bytes() == data:
                continue
            old_ns = target.stat().st_mtime_ns
            target.write_bytes(data)
            if target.stat().st_mtime_ns < old_ns + 2_000_000_000:
                new_ns = old_ns + 2_000_000_000
                os.utime(target, ns=(new_ns, new_ns))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        changed.append(rel)
    manifest.write_text("\n".join(sorted(files)) + "\n")
    return sorted(changed)


def copy_tree(src: Path, dst: Path, *, ignore: Iterable[str] = (".mypy_cache",)) -> None:
    """Copy ``src`` to the new directory ``dst`` and give every copied file a fresh mtime
    (later than every mtime in ``src``), like a sandbox or a fresh checkout."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*ignore))
    newest = max((p.stat().st_mtime_ns for p in src.rglob("*") if p.is_file()), default=0)
    fresh = max(newest, time.time_ns()) + 10_000_000_000
    for p in sorted(dst.rglob("*")):
        if p.is_file():
            os.utime(p, ns=(fresh, fresh))
