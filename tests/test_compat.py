"""The supported-version check: the installed mypy's version and the refusal line."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

from metastore.mypy import compat


def test_mypy_version_matches_package_metadata() -> None:
    assert compat.mypy_version() == metadata.version("mypy")


def test_mypy_version_falls_back_when_dist_info_is_ambiguous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two dist-infos beside a ``mypy`` directory that comes first on sys.path (a stale
    uninstall): the directory listing is not trusted; package metadata answers."""
    (tmp_path / "mypy").mkdir()
    (tmp_path / "mypy-1.0.0.dist-info").mkdir()
    (tmp_path / "mypy-9.9.9.dist-info").mkdir()
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    assert compat.mypy_version() == metadata.version("mypy")


def test_mypy_version_reads_the_dist_info_first_on_sys_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mypy").mkdir()
    (tmp_path / "mypy-1.18.2.dist-info").mkdir()
    (tmp_path / "mypy_extensions-1.2.0.dist-info").mkdir()
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    assert compat.mypy_version() == "1.18.2"


@pytest.mark.parametrize("version", ["1.20.2", "2.0.0", "2.4.1", "2.4.1+dev.abc"])
def test_supported_versions_pass(version: str) -> None:
    assert compat.unsupported_reason(version) is None


@pytest.mark.parametrize("version", ["1.18.2", "1.19.1", "2.5.0", "3.0"])
def test_unsupported_versions_get_one_line_with_the_fix(version: str) -> None:
    reason = compat.unsupported_reason(version)
    assert reason is not None and "\n" not in reason
    assert f"mypy {version} is not supported" in reason and "pip install" in reason
