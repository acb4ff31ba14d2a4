"""Shared pytest configuration and fixtures.

Markers: ``slow`` (left out of the quick suite by ``-m "not slow"``), ``e2e`` (runs real mypy
processes).

How the end-to-end tests run the product (fixture ``product``), first match wins:

1. ``METASTORE_E2E_PYTHON=/path/to/python``: that interpreter (the product installed in it);
2. ``METASTORE_E2E_SOURCE=1``: the running interpreter with ``PYTHONPATH=<repo>`` (fast loop
   while developing; mypy's parallel workers then do not get the store, so the ``-n 2`` test
   still uses ``installed_product``);
3. the running interpreter, if the product is installed in it with its ``.pth`` hook (tox);
4. otherwise a venv built once per session: ``pip install`` of a copy of the repository plus
   mypy/apsw/blake3 at the running interpreter's versions (what users run).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from helpers import venvs  # noqa: E402
from helpers.run import Harness, Product  # noqa: E402


# Tests of the patched mypy (patches/) need interpreters that patches/apply-and-test builds
# (tox -e patched); the default suite does not collect them rather than skip them.
collect_ignore = [] if os.environ.get("METASTORE_PATCHED_PYTHON") else ["test_patched.py"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes long; deselect with -m 'not slow'")
    config.addinivalue_line("markers", "e2e: end-to-end test running real mypy processes")


def _mypy_version(python: str, pythonpath: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("MYPY")}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([python, "-c", "import mypy.version; print(mypy.version.__version__)"],
                         capture_output=True, text=True, check=True, env=env, timeout=60)
    return out.stdout.strip()


@pytest.fixture(scope="session")
def installed_product(tmp_path_factory: pytest.TempPathFactory) -> Product:
    """The product installed (non-editable, with its .pth hook) in an interpreter."""
    explicit = os.environ.get("METASTORE_E2E_PYTHON")
    if explicit:
        return Product(explicit, None, f"METASTORE_E2E_PYTHON={explicit}")
    if venvs.has_installed_product():
        return Product(sys.executable, None, f"installed in {sys.executable}")
    venv = tmp_path_factory.mktemp("product") / "venv"
    try:
        python = venvs.build_product_venv(venv, REPO)
    except venvs.IndexUnreachable as e:
        pytest.skip(f"cannot build the product venv: {e}")
    return Product(str(python), None, f"venv {venv}")


@pytest.fixture(scope="session")
def product(request: pytest.FixtureRequest) -> Product:
    """How the e2e tests run the drop-in (see the module docstring)."""
    if os.environ.get("METASTORE_E2E_SOURCE") == "1":
        return Product(sys.executable, str(REPO), f"source tree {REPO} on PYTHONPATH")
    installed: Product = request.getfixturevalue("installed_product")
    return installed


@pytest.fixture()
def harness(tmp_path: Path, product: Product) -> Harness:
    """A :class:`Harness` in ``tmp_path``; oracle and stock mypy use the product's interpreter
    (same mypy, same site-packages), without the product's configuration."""
    return Harness(tmp_path, product, oracle_python=product.python)


@pytest.fixture()
def stock_harness(tmp_path: Path) -> Harness:
    """A :class:`Harness` for tests that run only stock mypy (the running interpreter's)."""
    return Harness(tmp_path, Product(sys.executable, None, "stock only"),
                   oracle_python=sys.executable)


@pytest.fixture(scope="session")
def old_mypy_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """``get(version) -> python``: a venv (built once per session and version) with
    ``mypy==version``, apsw, blake3 and the product (``--no-deps``). Skips only when pip
    cannot reach the package index."""
    built: dict[str, str] = {}

    def get(version: str) -> str:
        if version not in built:
            venv = tmp_path_factory.mktemp(f"mypy-{version}") / "venv"
            try:
                built[version] = str(venvs.build_product_venv(
                    venv, REPO, mypy_spec=f"mypy=={version}"))
            except venvs.IndexUnreachable as e:
                pytest.skip(f"cannot install mypy=={version}: {e}")
        return built[version]

    yield get


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The differential fuzzer's figures (examples, steps, mismatches), if it ran."""
    fuzz = sys.modules.get("test_fuzz_differential")
    line = fuzz.summary() if fuzz is not None else None  # type: ignore[attr-defined]
    if line:
        terminalreporter.write_line(line)
