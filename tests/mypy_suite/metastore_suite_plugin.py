"""pytest plugin for mypy's own test harness (``mypy/test/testcheck.py``): routes the SQLite
cache of every ``build.build`` the harness makes in-process to the store, through the seam.

Loaded by ``run_suite.py`` with ``-p metastore_suite_plugin``. Environment:

- ``METASTORE_SUITE_MODE``: ``stock`` (nothing installed: the baseline), ``per-test`` (a new
  store for every test case), ``shared`` (one store for the whole session) or
  ``stock-shared`` (no store; mypy's own cache directory shared by the whole session - what
  ``shared`` is compared with);
- ``METASTORE_SUITE_DIR``: where stores and ``summary.json`` go.

mypy 2.x uses its SQLite cache by default (``Options.sqlite_cache``), so the seam sees
every build except the few cases whose flags say ``--no-sqlite-cache``. ``summary.json``
records, per test case, how many entries the store gained during it (proof that the
seam intercepted the case's builds).

In the two shared modes the harness' ``[rechecked]``/``[stale]`` expectations are recorded
(``deviations`` in ``summary.json``) instead of failing the case, so that the outputs of
all later steps of the case are still compared: with a store shared by every case, a step
may legitimately re-check fewer modules than the case expects.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

MODE = os.environ.get("METASTORE_SUITE_MODE", "stock")
DIR = Path(os.environ.get("METASTORE_SUITE_DIR", "metastore-suite"))
if MODE not in ("stock", "per-test", "shared", "stock-shared"):
    raise pytest.UsageError(f"METASTORE_SUITE_MODE={MODE!r}: expected stock, per-test, shared "
                            "or stock-shared")

_entries: dict[str, int] = {}
_deviations: list[dict[str, Any]] = []
_rechecked: dict[str, int] = {}  # case -> modules its builds re-checked, all steps
_current: list[str] = [""]


def _install(store: Path) -> None:
    from metastore.config import Config, Setting, export_to_environ
    from metastore.seams.sql import install

    source = "mypy-suite plugin"
    config = Config(Setting(True, source), Setting(str(store), source), Setting((), source),
                    Setting(False, source))
    install(config)
    export_to_environ(config, os.environ)  # parallel workers started by the harness


def _count(store: Path) -> int:
    if not store.exists():
        return 0
    from metastore.store.local import Store

    s = Store(str(store), [])
    try:
        return s.stats()[0].entries
    finally:
        s.close()


def _record_module_equivalence(name: str, expected: Iterable[str],
                               actual: Iterable[str]) -> None:
    exp = sorted(expected)
    act = sorted(set(actual).difference({"__main__"}))
    if exp != act:
        _deviations.append({"case": _current[0], "name": name, "expected": exp, "actual": act})


def _wrap_builds(cache_dir: Path | None) -> None:
    """Count what every build of the harness re-checks (per case, all steps), and with
    ``cache_dir`` make every build that writes a cache use that directory."""
    import mypy.build

    build = mypy.build.build

    def counted_build(*args: Any, **kwargs: Any) -> Any:
        options = kwargs.get("options")
        if cache_dir is not None and options is not None and options.cache_dir != os.devnull:
            options.cache_dir = str(cache_dir)
        result = build(*args, **kwargs)
        rechecked = getattr(getattr(result, "manager", None), "rechecked_modules", ())
        _rechecked[_current[0]] = _rechecked.get(_current[0], 0) + len(rechecked)
        return result

    mypy.build.build = counted_build  # type: ignore[assignment]


def pytest_configure(config: pytest.Config) -> None:
    DIR.mkdir(parents=True, exist_ok=True)
    if MODE == "shared":
        _install(DIR / "shared.db")
        _wrap_builds(None)
    elif MODE == "stock-shared":
        _wrap_builds(DIR / "shared-cache")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    _current[0] = item.nodeid
    if MODE == "stock":
        yield
        return
    if MODE == "stock-shared":
        import mypy.test.testcheck as testcheck

        testcheck.assert_module_equivalence = _record_module_equivalence  # type: ignore
        yield
        return
    if MODE == "per-test":
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[-150:]
        store = DIR / "cases" / f"{safe}.db"
        store.parent.mkdir(parents=True, exist_ok=True)
        _install(store)
    else:
        store = DIR / "shared.db"
        import mypy.test.testcheck as testcheck

        testcheck.assert_module_equivalence = _record_module_equivalence  # type: ignore
    before = _count(store)
    yield
    _entries[item.nodeid] = _count(store) - before


def pytest_sessionfinish(session: pytest.Session) -> None:
    with open(DIR / "summary.json", "w", encoding="utf-8") as f:
        json.dump({"mode": MODE, "entries": _entries, "deviations": _deviations,
                   "rechecked": _rechecked}, f, indent=1)
