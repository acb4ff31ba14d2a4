"""Models of small multi-package projects and of edits on them, for the differential fuzzer.

A :class:`Project` is a pure value: modules (each with a stable ``tag`` used in every name it
defines, so star imports never collide by accident), their imports, per-module options and
which packages are namespace packages. :func:`render` turns it into a ``{path: text}``
mapping; :func:`apply_edit` returns the project after one :class:`Edit`. Hypothesis
strategies for both are at the end (:func:`projects`, :func:`edits`).

What the rendered code exercises: functions with and without annotations whose signature
changes (``sig``), module-level values whose *inferred* type changes (``val``) and
propagates through chains of modules (``CHAIN_*``), classes, generics, protocols,
dataclasses, overloads, import cycles, ``import a.b``, ``from a.b import x``, star imports,
relative imports, imports under ``if TYPE_CHECKING``, namespace packages, ``.pyi`` stubs
next to modules, per-module options and deliberate type errors. Importers reveal the
types they get (``reveal_type``), so a stale cached type shows up in the output.

Edits refer to modules by index modulo the current number of modules, so every edit applies
to every project (which keeps hypothesis' shrinking simple).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from hypothesis import strategies as st

Files = dict[str, str]

PACKAGES: tuple[str, ...] = ("pa", "pa.sub", "pb", "pc")
STYLES: tuple[str, ...] = ("from", "import", "star", "relative", "tc")
FEATURES: tuple[str, ...] = ("generic", "protocol", "dataclass", "overload", "untyped")
OPTIONS: tuple[str, ...] = (
    "disallow_untyped_defs = True",
    "ignore_errors = True",
    "warn_return_any = True",
    "check_untyped_defs = True",
    "strict_optional = False",
    "disallow_any_generics = True",
)
MAX_MODULES = 8
CONFIG = "mypy.ini"


@dataclass(frozen=True)
class Imp:
    """An import of the module called ``name`` (which may no longer exist) in ``style``."""

    name: str
    style: str


@dataclass(frozen=True)
class Mod:
    name: str  # dotted module name, e.g. "pa.sub.m3"
    tag: int  # unique in the project; every name the module defines ends with it
    sig: int = 0
    val: int = 0
    features: frozenset[str] = frozenset()
    imports: tuple[Imp, ...] = ()
    error: bool = False
    stub: bool = False

    @property
    def package(self) -> str:
        return self.name.rpartition(".")[0]


@dataclass(frozen=True)
class Project:
    mods: tuple[Mod, ...]
    namespace: frozenset[str] = frozenset()  # packages without __init__.py
    options: frozenset[tuple[str, str]] = frozenset()  # (module name, option line)
    next_tag: int = 0
    renames: int = 0

    def by_name(self) -> dict[str, Mod]:
        return {m.name: m for m in self.mods}


@dataclass(frozen=True)
class Edit:
    """One edit; ``a``, ``b``, ``c`` select modules/styles/options modulo what exists."""

    kind: str
    a: int = 0
    b: int = 0
    c: int = 0

    def __repr__(self) -> str:
        return f"Edit({self.kind!r}, {self.a}, {self.b}, {self.c})"


# Kinds handled by the test (they act on the tree, not on the model): save the current
# state, switch to a saved one, copy the tree to another path, wait until the files are
# old enough for the source-key memo and the run snapshot to trust their stat (then check),
# check the current state and a saved one at once in two new copies (two processes
# building different versions concurrently on the one store).
TREE_KINDS: tuple[str, ...] = ("save", "swap", "copy", "settle", "race")
MODEL_KINDS: tuple[str, ...] = (
    "sig", "val", "error", "add", "remove", "rename", "move", "cycle", "uncycle",
    "feature", "option", "stub", "style", "namespace",
)
KINDS: tuple[str, ...] = MODEL_KINDS + TREE_KINDS


# ------------------------------------------------------------------------------ rendering


def _ret(sig: int) -> str | None:
    return ("int", "str", "int", None)[sig % 4]


_FUNCS = (
    "def f_{t}(x: int) -> int:\n    return x + 1\n",
    "def f_{t}(x: int, y: str = '') -> str:\n    return str(x) + y\n",
    "def f_{t}(x: str) -> int:\n    return len(x)\n",
    "def f_{t}(x, y=0):\n    return x\n",
)
_METHS = (
    "    def meth(self, y: int) -> int:\n        return y\n",
    "    def meth(self, y: int) -> str:\n        return str(y)\n",
    "    def meth(self, y: int) -> int:\n        return -y\n",
    "    def meth(self, y):\n        return y\n",
)
_VALS = ("1", "'one'", "[1, 2]", "(1, 'a')", "{'k': 1.5}")


def _rel_import(importer: str, target: str) -> str | None:
    """``from <dots><pkg> import <name>`` for ``target`` seen from module ``importer``, or
    None when they are in different top-level packages."""
    ip = importer.split(".")[:-1]
    tp = target.split(".")
    if not ip or ip[0] != tp[0]:
        return None
    k = 0
    while k < min(len(ip), len(tp) - 1) and ip[k] == tp[k]:
        k += 1
    dots = "." * (len(ip) - k + 1)
    rest = tp[k:]
    return f"from {dots}{'.'.join(rest[:-1])} import {rest[-1]}"


def _exported(m: Mod) -> list[str]:
    t = m.tag
    names = [f"f_{t}", f"VAL_{t}", f"CHAIN_{t}", f"C_{t}"]
    if "generic" in m.features:
        names.append(f"BOX_{t}")
    if "protocol" in m.features:
        names.append(f"takes_p_{t}")
    if "dataclass" in m.features:
        names.append(f"D_{t}")
    if "overload" in m.features:
        names.append(f"ov_{t}")
    return names


def render_module(p: Project, m: Mod) -> str:
    t = m.tag
    by_name = p.by_name()
    head = [f'"""Module {m.name}."""', "from typing import TYPE_CHECKING, Any, Generic, "
            "Protocol, TypeVar, overload", "from dataclasses import dataclass"]
    body: list[str] = []
    chain: str | None = None
    tc_lines: list[str] = []
    for n, imp in enumerate(m.imports):
        target = by_name.get(imp.name)
        style = imp.style
        if style == "relative" and _rel_import(m.name, imp.name) is None:
            style = "from"
        alias = f"mod_{n}_{t}"
        if target is None:  # a dangling import: mypy reports it; no uses
            head.append(f"import {imp.name}")
            continue
        names = _exported(target)
        if style == "tc":
            tc_lines.append(f"    from {imp.name} import C_{target.tag}")
            body += [f"def tc_use_{t}_{n}(c: 'C_{target.tag}') -> int:",
                     "    return c.meth(1)", "", ""]
            continue
        if style == "from":
            head.append(f"from {imp.name} import {', '.join(names)}")
            prefix = ""
        elif style == "star":
            head.append(f"from {imp.name} import *")
            prefix = ""
        elif style == "import":
            head.append(f"import {imp.name}")
            prefix = imp.name + "."
        else:  # relative
            head.append(f"{_rel_import(m.name, imp.name)} as {alias}")
            prefix = alias + "."
        u = target.tag
        if chain is None:
            chain = f"{prefix}CHAIN_{u}"
        use = [f"def use_{t}_{n}() -> int:",
               f"    a: int = {prefix}f_{u}(1)",
               f"    reveal_type({prefix}VAL_{u})",
               f"    reveal_type({prefix}CHAIN_{u})",
               f"    reveal_type({prefix}C_{u}().attr)"]
        if "generic" in target.features:
            use.append(f"    reveal_type({prefix}BOX_{u}.get())")
        if "protocol" in target.features:
            use.append(f"    {prefix}takes_p_{u}(C_{t}())")
        if "dataclass" in target.features:
            use.append(f"    {prefix}D_{u}(1, 2)")
        if "overload" in target.features:
            use.append(f"    reveal_type({prefix}ov_{u}(1))")
        use += [f"    return {prefix}C_{u}().meth(0)", "", ""]
        body += use
    if tc_lines:
        head += ["if TYPE_CHECKING:", *tc_lines]
    defs = ["", "", _FUNCS[m.sig % 4].format(t=t), "",
            f"VAL_{t} = {_VALS[m.val % len(_VALS)]}",
            f"CHAIN_{t} = {chain if chain is not None else f'VAL_{t}'}", "", "",
            f"class C_{t}:", f"    attr = VAL_{t}", "", _METHS[m.sig % 4]]
    if "generic" in m.features:
        defs += ["", f"T_{t} = TypeVar('T_{t}')", "", "",
                 f"class Box_{t}(Generic[T_{t}]):",
                 f"    def __init__(self, item: T_{t}) -> None:",
                 "        self.item = item", "",
                 f"    def get(self) -> T_{t}:", "        return self.item", "", "",
                 f"BOX_{t} = Box_{t}(VAL_{t})"]
    if "protocol" in m.features:
        ret = _ret(m.sig) or "int"
        defs += ["", "", f"class P_{t}(Protocol):",
                 f"    def meth(self, y: int) -> {ret}: ...", "", "",
                 f"def takes_p_{t}(p: P_{t}) -> None:", "    pass", "", "",
                 f"takes_p_{t}(C_{t}())"]
    if "dataclass" in m.features:
        btype, bdefault = ("str", "''") if m.sig % 2 else ("int", "0")
        defs += ["", "", "@dataclass", f"class D_{t}:", "    a: int",
                 f"    b: {btype} = {bdefault}"]
    if "overload" in m.features:
        r = "int" if m.sig % 2 == 0 else "float"
        defs += ["", "", "@overload", f"def ov_{t}(x: int) -> {r}: ...", "", "",
                 "@overload", f"def ov_{t}(x: str) -> str: ...", "", "",
                 f"def ov_{t}(x: Any) -> Any:", "    return x"]
    if "untyped" in m.features:
        defs += ["", "", f"def loose_{t}(x):", "    return x + 1"]
    if m.error:
        defs += ["", "", f"ERR_{t}: int = 'oops {m.sig}'"]
    return "\n".join(head + defs + ["", ""] + body).rstrip() + "\n"


def render_stub(m: Mod) -> str:
    """A ``.pyi`` next to the module: its own view of the signatures (shifted by one)."""
    t = m.tag
    ret = _ret(m.sig + 1) or "Any"
    val_type = ("int", "str", "list[int]", "tuple[int, str]", "dict[str, float]")
    return "\n".join([
        "from typing import Any",
        "",
        f"def f_{t}(x: int) -> {ret}: ...",
        f"VAL_{t}: {val_type[m.val % len(val_type)]}",
        f"CHAIN_{t}: {val_type[(m.val + 1) % len(val_type)]}",
        "",
        f"class C_{t}:",
        f"    attr: {val_type[m.val % len(val_type)]}",
        f"    def meth(self, y: int) -> {ret}: ...",
    ]) + "\n"


def packages_of(p: Project) -> set[str]:
    """Every package holding a module, with its parents."""
    out: set[str] = set()
    for m in p.mods:
        parts = m.package.split(".")
        for i in range(1, len(parts) + 1):
            out.add(".".join(parts[:i]))
    return out


def render(p: Project) -> Files:
    files: Files = {}
    for pkg in sorted(packages_of(p)):
        if pkg not in p.namespace:
            files[pkg.replace(".", "/") + "/__init__.py"] = f'"""Package {pkg}."""\n'
    for m in p.mods:
        base = m.name.replace(".", "/")
        files[base + ".py"] = render_module(p, m)
        if m.stub:
            files[base + ".pyi"] = render_stub(m)
    tops = sorted({m.name.split(".")[0] for m in p.mods})
    lines = ["[mypy]", f"files = {', '.join(tops)}" if tops else "files = ",
             "explicit_package_bases = True"]
    by_module: dict[str, list[str]] = {}
    for mod, opt in sorted(p.options):  # one section per module: ini sections are unique
        by_module.setdefault(mod, []).append(opt)
    for mod, opts in by_module.items():
        lines += ["", f"[mypy-{mod}]", *opts]
    files[CONFIG] = "\n".join(lines) + "\n"
    return files


# -------------------------------------------------------------------------------- edits


def _pick(p: Project, i: int) -> Mod:
    return p.mods[i % len(p.mods)]


def _with_mod(p: Project, old: Mod, new: Mod) -> Project:
    return replace(p, mods=tuple(new if m is old else m for m in p.mods))


def _renamed(p: Project, old: Mod, new_name: str, update: bool) -> Project:
    """``old`` becomes ``new_name``; importers follow if ``update``, options too."""
    mods = []
    for m in p.mods:
        if m is old:
            m = replace(m, name=new_name)
        if update:
            m = replace(m, imports=tuple(
                Imp(new_name, i.style) if i.name == old.name else i for i in m.imports))
        mods.append(m)
    options = frozenset((new_name if mod == old.name else mod, o) for mod, o in p.options)
    return replace(p, mods=tuple(mods), options=options, renames=p.renames + 1)


def apply_edit(p: Project, e: Edit) -> Project:
    """The project after the model edit ``e`` (kinds in :data:`MODEL_KINDS`)."""
    if not p.mods and e.kind != "add":
        return p
    k = e.kind
    if k == "sig":
        m = _pick(p, e.a)
        return _with_mod(p, m, replace(m, sig=m.sig + 1 + e.b % 3))
    if k == "val":
        m = _pick(p, e.a)
        return _with_mod(p, m, replace(m, val=m.val + 1 + e.b % 4))
    if k == "error":
        m = _pick(p, e.a)
        return _with_mod(p, m, replace(m, error=not m.error))
    if k == "stub":
        m = _pick(p, e.a)
        return _with_mod(p, m, replace(m, stub=not m.stub))
    if k == "feature":
        m = _pick(p, e.a)
        f = FEATURES[e.b % len(FEATURES)]
        return _with_mod(p, m, replace(m, features=m.features ^ {f}))
    if k == "add":
        if len(p.mods) >= MAX_MODULES:
            return p
        pkg = PACKAGES[e.a % len(PACKAGES)]
        tag = p.next_tag
        imports: tuple[Imp, ...] = ()
        if p.mods:
            imports = (Imp(_pick(p, e.b).name, STYLES[e.c % len(STYLES)]),)
        new = Mod(f"{pkg}.m{tag}", tag, sig=e.c, val=e.b, imports=imports)
        mods = p.mods + (new,)
        if p.mods and e.c % 2:  # an existing module starts importing the new one
            m = _pick(p, e.c)
            mods = tuple(replace(x, imports=x.imports + (Imp(new.name, "from"),))
                         if x is m else x for x in mods)
        return replace(p, mods=mods, next_tag=tag + 1)
    if k == "remove":
        if len(p.mods) == 1:  # keep one module: mypy without targets is a usage error
            return p
        m = _pick(p, e.a)
        mods = tuple(x for x in p.mods if x is not m)
        if e.b % 2:  # importers drop the import too (else they now import a missing module)
            mods = tuple(replace(x, imports=tuple(i for i in x.imports if i.name != m.name))
                         for x in mods)
        return replace(p, mods=mods)
    if k == "rename":
        m = _pick(p, e.a)
        return _renamed(p, m, f"{m.package}.m{m.tag}_{p.renames}", update=e.b % 3 != 0)
    if k == "move":
        m = _pick(p, e.a)
        pkg = PACKAGES[e.b % len(PACKAGES)]
        if pkg == m.package:
            pkg = PACKAGES[(e.b + 1) % len(PACKAGES)]
        leaf = m.name.rpartition(".")[2]
        if f"{pkg}.{leaf}" in p.by_name():
            leaf = f"m{m.tag}_{p.renames}"
        return _renamed(p, m, f"{pkg}.{leaf}", update=e.c % 3 != 0)
    if k == "cycle":
        if len(p.mods) < 2:
            return p
        x = _pick(p, e.a)
        y = _pick(p, e.b)
        if x is y:
            y = p.mods[(p.mods.index(x) + 1) % len(p.mods)]
        sx = STYLES[e.c % len(STYLES)]
        sy = STYLES[(e.c // len(STYLES)) % len(STYLES)]
        cyc: list[Mod] = []
        for m in p.mods:
            if m is x and all(i.name != y.name for i in m.imports):
                m = replace(m, imports=m.imports + (Imp(y.name, sx),))
            elif m is y and all(i.name != x.name for i in m.imports):
                m = replace(m, imports=m.imports + (Imp(x.name, sy),))
            cyc.append(m)
        return replace(p, mods=tuple(cyc))
    if k == "uncycle":
        names = p.by_name()
        edges = [(m, i) for m in p.mods for i in m.imports
                 if i.name in names and any(j.name == m.name for j in names[i.name].imports)]
        if not edges:
            return p
        m, imp = edges[e.a % len(edges)]
        return _with_mod(p, m, replace(m, imports=tuple(i for i in m.imports if i != imp)))
    if k == "option":
        m = _pick(p, e.a)
        opt = (m.name, OPTIONS[e.b % len(OPTIONS)])
        return replace(p, options=p.options ^ {opt})
    if k == "style":
        m = _pick(p, e.a)
        if not m.imports:
            return p
        n = e.b % len(m.imports)
        restyled = list(m.imports)
        restyled[n] = Imp(restyled[n].name, STYLES[e.c % len(STYLES)])
        return _with_mod(p, m, replace(m, imports=tuple(restyled)))
    if k == "namespace":
        pkgs = sorted(packages_of(p))
        pkg = pkgs[e.a % len(pkgs)]
        return replace(p, namespace=p.namespace ^ {pkg})
    raise ValueError(f"not a model edit: {k}")


# --------------------------------------------------------------------------- strategies


@st.composite
def projects(draw: st.DrawFn) -> Project:
    """A project of 2-5 modules in the packages of :data:`PACKAGES`; each imports 0-2
    earlier modules (cycles come from later edits or, sometimes, right away)."""
    n = draw(st.integers(2, 5))
    mods: list[Mod] = []
    for tag in range(n):
        pkg = draw(st.sampled_from(PACKAGES))
        imports: list[Imp] = []
        if mods:
            targets = draw(st.lists(st.sampled_from([m.name for m in mods]), max_size=2,
                                    unique=True))
            imports = [Imp(t, draw(st.sampled_from(STYLES))) for t in targets]
        mods.append(Mod(
            name=f"{pkg}.m{tag}", tag=tag, sig=draw(st.integers(0, 3)),
            val=draw(st.integers(0, 4)),
            features=frozenset(draw(st.lists(st.sampled_from(FEATURES), max_size=2))),
            imports=tuple(imports), error=draw(st.integers(0, 3)) == 0,
            stub=draw(st.integers(0, 5)) == 0))
    if n >= 2 and draw(st.booleans()):  # an import cycle from the start
        first = mods[0]
        mods[0] = replace(first, imports=first.imports + (
            Imp(mods[-1].name, draw(st.sampled_from(STYLES))),))
    p = Project(tuple(mods), next_tag=n)
    namespace = frozenset(draw(st.lists(st.sampled_from(sorted(packages_of(p))), max_size=1)))
    return replace(p, namespace=namespace)


def edits() -> st.SearchStrategy[Edit]:
    small = st.integers(0, 31)
    return st.builds(Edit, st.sampled_from(KINDS), small, small, small)


@dataclass
class Scenario:
    """Where one example's tree lives on disk and what it saved (used by the test)."""

    saved: list[Project] = field(default_factory=list)
    copies: int = 0


def describe(p: Project, files: Mapping[str, str] | None = None) -> str:
    """A compact human description of ``p`` (for failure messages)."""
    lines = [f"namespace={sorted(p.namespace)} options={sorted(p.options)}"]
    for m in p.mods:
        imps = ", ".join(f"{i.name}[{i.style}]" for i in m.imports)
        lines.append(f"  {m.name} tag={m.tag} sig={m.sig % 4} val={m.val % 5} "
                     f"features={sorted(m.features)} error={m.error} stub={m.stub} "
                     f"imports=({imps})")
    return "\n".join(lines)
