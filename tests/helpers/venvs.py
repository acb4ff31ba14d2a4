"""Virtualenvs for the end-to-end tests.

- :func:`build_product_venv`: a venv with the product installed as a user gets it (``pip
  install`` of a copy of the repository, so its ``.pth`` startup hook is in site-packages and
  reaches mypy's parallel workers) plus mypy, apsw and blake3 at given versions.
- :func:`make_bare_venv` + :func:`install_files`: venvs without pip holding a tiny local package
  copied into site-packages (no network), for ``--python-executable``.

Network use is limited to ``pip install`` from the configured package index.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import site
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

PTH_NAME = "mypy_metastore.pth"
_NETWORK_ERRORS = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
    r"resolution|Network is unreachable|ConnectTimeout|ReadTimeout|ProxyError|No route to host"
    r"|Could not fetch URL|connection broken", re.I)


class IndexUnreachable(Exception):
    """pip could not reach the package index (the only reason a venv test may skip)."""


def python_in(venv: Path) -> Path:
    """The interpreter of ``venv``."""
    return venv / "bin" / "python"


def make_bare_venv(venv: Path, *, base_python: str = sys.executable) -> Path:
    """Create ``venv`` without pip (``python -m venv --without-pip``); return its python."""
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True,
                   capture_output=True, text=True, timeout=120)
    return python_in(venv)


def purelib(python: Path | str) -> Path:
    """The site-packages directory of the interpreter ``python``."""
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60, env=_no_pythonpath_env())
    return Path(out.stdout.strip())


def install_files(python: Path | str, files: Mapping[str, str]) -> Path:
    """Write ``files`` (relative paths) into ``python``'s site-packages; return that dir."""
    site_dir = purelib(python)
    for rel, text in files.items():
        target = site_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return site_dir


def _no_pythonpath_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("MYPY")}


def pip_install(python: Path | str, args: Sequence[str], *, timeout: float = 600) -> None:
    """``pip install args`` into the interpreter ``python`` using the running interpreter's
    pip (``pip --python``). Raises :class:`IndexUnreachable` when the failure is a network
    error, ``RuntimeError`` (with pip's output) for any other failure."""
    argv = [sys.executable, "-m", "pip", "--python", str(python), "install",
            "--disable-pip-version-check", "-q", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=_no_pythonpath_env())
    if proc.returncode != 0:
        out = proc.stdout + proc.stderr
        if _NETWORK_ERRORS.search(out):
            raise IndexUnreachable(f"pip could not reach the package index: {out[-1500:]}")
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{out[-4000:]}")


def installed_version(dist: str) -> str:
    """Version of ``dist`` in the running interpreter."""
    return importlib.metadata.version(dist)


def mypy_version() -> tuple[int, int]:
    """(major, minor) of the mypy installed in the running interpreter (the one tested)."""
    major, minor = installed_version("mypy").split(".")[:2]
    return int(major), int(minor)


def copy_source(repo: Path, dest: Path) -> Path:
    """Copy the repository's source (no VCS data, tests, caches or build output) to ``dest``
    so that building it never writes into the work tree."""
    shutil.copytree(repo, dest, ignore=shutil.ignore_patterns(
        ".git", ".tox", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache",
        ".pytest_cache", ".ruff_cache", "tests"))
    return dest


def copy_checkout(repo: Path, dest: Path) -> Path:
    """Copy the files of the checkout ``repo`` as git lists them (tracked ones, and new ones
    it does not ignore) to ``dest``: what a user's clone of the current work would hold,
    without venvs, caches or build output. Returns ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=repo, capture_output=True, check=True,
                            timeout=60).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = repo / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def build_product_venv(venv: Path, repo: Path, *, mypy_spec: str | None = None,
                       extra: Sequence[str] = (), base_python: str = sys.executable) -> Path:
    """Create ``venv`` (from ``base_python``, default the running interpreter) holding the
    product (a non-editable install of ``repo``) and mypy (``mypy_spec``, default: the
    running interpreter's mypy version), apsw and blake3 (the running interpreter's
    versions). Returns the venv's python."""
    python = make_bare_venv(venv, base_python=base_python)
    if mypy_spec is None:
        mypy_spec = f"mypy=={installed_version('mypy')}"
    deps = [mypy_spec, f"apsw=={installed_version('apsw')}",
            f"blake3=={installed_version('blake3')}", *extra]
    pip_install(python, deps)
    src = copy_source(repo, venv.parent / f"{venv.name}-src")
    pip_install(python, ["--no-deps", str(src)])
    return python


def has_installed_product(python: str = sys.executable) -> bool:
    """True if the running interpreter has the product installed with its ``.pth`` hook."""
    if python != sys.executable:
        return False
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return any((Path(d) / PTH_NAME).exists() for d in dirs)
