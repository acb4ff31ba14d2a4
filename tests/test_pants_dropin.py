"""The drop-in's handling of what Pants passes: ``@file`` argument lists, the store path in
``[mypy].args`` (relative, through the sandbox's symlinked named cache), and
``--skip-cache-mtime-check``. Unit tests (no mypy process); see test_e2e_pants.py for runs."""

from __future__ import annotations

import argparse
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import metastore
from metastore.seams import dropin
from metastore.config import Config, ConfigError, expand_argfiles, load_config, split_argv

PANTS_TAIL = ["--skip-cache-mtime-check", "--sqlite-cache", "--cache-dir",
              ".tmp_cache/mypy_cache", "@__files.txt"]


@pytest.fixture
def fake_seam(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Config]]:
    """Stand-ins for metastore.seams.sql / metastore.mypy.compat, so prepare() installs nothing in
    this process (recording install() calls)."""
    installed: list[Config] = []
    seam = types.ModuleType("metastore.seams.sql")
    seam.install = installed.append  # type: ignore[attr-defined]
    compat = types.ModuleType("metastore.mypy.compat")
    compat.unsupported_reason = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "metastore.seams.sql", seam)
    monkeypatch.setitem(sys.modules, "metastore.mypy.compat", compat)
    monkeypatch.setattr(metastore, "seam", seam, raising=False)
    monkeypatch.setattr(metastore, "compat", compat, raising=False)
    yield installed


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Pants-like sandbox (cwd) whose ``.cache/mypy_cache`` links to a named cache outside
    it; the link's target does not exist yet."""
    box = tmp_path / "sandbox"
    (box / ".cache").mkdir(parents=True)
    (box / ".git").mkdir()  # stops mypy's upward config search here
    os.symlink(tmp_path / "named_caches" / "mypy_cache", box / ".cache" / "mypy_cache")
    monkeypatch.chdir(box)
    return box


def _argparse_expand(argv: list[str]) -> list[str]:
    """What mypy's own parser does with ``@file`` arguments (argparse, this Python)."""
    parser = argparse.ArgumentParser(fromfile_prefix_chars="@")
    expanded: list[str] = parser._read_args_from_files(argv)
    return expanded


# --------------------------------------------------------------------------- @file lists


def test_expand_argfiles_like_argparse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inner.txt").write_text("--strict\n\n  spaced line  \n")
    (tmp_path / "files.txt").write_text("a.py\n@inner.txt\nsub/b.py")
    argv = ["-v", "@files.txt", "--", "@inner.txt", ""]
    assert expand_argfiles(argv) == _argparse_expand(argv) == [
        "-v", "a.py", "--strict", "", "  spaced line  ", "sub/b.py", "--", "--strict", "",
        "  spaced line  ", ""]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(
    ["x.py", "--strict", "", " a b ", "@f0", "@f1", "-v", "--", "--metastore-stats"]),
    max_size=5), min_size=2, max_size=2),
    st.lists(st.sampled_from(["@f0", "@f1", "@f2", "y.py", "--"]), max_size=4))
def test_expand_argfiles_property(files: list[list[str]], argv: list[str]) -> None:
    """Same result as argparse for random nested files (f1 may include f0, f0 includes
    nothing); a missing file (f2) is left for mypy to report."""
    import tempfile

    files[0] = [line for line in files[0] if not line.startswith("@")]
    files[1] = [line for line in files[1] if line != "@f1"]
    with tempfile.TemporaryDirectory() as d:
        cwd = os.getcwd()
        os.chdir(d)
        try:
            for i, lines in enumerate(files):
                Path(d, f"f{i}").write_text("\n".join(lines))
            ours = expand_argfiles(argv)
            if "@f2" in argv:
                assert "@f2" in ours
            else:
                assert ours == _argparse_expand(argv)
        finally:
            os.chdir(cwd)


def test_expand_argfiles_self_inclusion_is_one_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loop.txt").write_text("x.py\n@loop.txt\n")
    with pytest.raises(ConfigError, match=r"argument file 'loop.txt' nests .* include itself"):
        expand_argfiles(["@loop.txt"])


def test_flags_inside_an_argument_file(
        sandbox: Path, fake_seam: list[Config]) -> None:
    """--metastore-* flags in an @file are honoured and removed; mypy gets the rest."""
    (sandbox / "__files.txt").write_text("src/a.py\nsrc/b.py")
    (sandbox / "args.txt").write_text(
        "--metastore-store\n.cache/mypy_cache/metastore.db\n--metastore-stats\n--strict\n")
    env: dict[str, str] = {}
    argv, config = dropin.prepare(["@args.txt", *PANTS_TAIL], env)
    assert config is not None and fake_seam == [config]
    assert config.stats.value is True
    assert config.store.value == str(sandbox.parent / "named_caches/mypy_cache/metastore.db")
    assert argv == ["--strict", "--sqlite-cache", "--cache-dir", ".tmp_cache/mypy_cache",
                    "src/a.py", "src/b.py", "--sqlite-cache"]


# --------------------------------------------------------------------------- store path


def test_store_in_args_resolves_through_the_named_cache_symlink(
        sandbox: Path, fake_seam: list[Config]) -> None:
    env: dict[str, str] = {}
    named = sandbox.parent / "named_caches" / "mypy_cache"
    for form in (["--metastore-store=.cache/mypy_cache/metastore.db"],
                 ["--metastore-store", ".cache/mypy_cache/metastore.db"],
                 ["--metastore-store=.cache/mypy_cache/../mypy_cache/metastore.db"]):
        _, config = dropin.prepare([*form, "x.py"], env)
        assert config is not None
        # The real location (it outlives the sandbox), also for workers via the environment.
        assert config.store.value == str(named / "metastore.db")
        assert env["MYPY_METASTORE_STORE"] == str(named / "metastore.db")


def test_store_in_the_mypy_config_file(sandbox: Path) -> None:
    """Pants puts the config file in the sandbox: a relative store there is relative to the
    file, i.e. the sandbox, and also resolves to the named cache."""
    (sandbox / "mypy.ini").write_text(
        "[mypy]\nstrict = True\n\n[metastore]\nstore = .cache/mypy_cache/metastore.db\n")
    config = load_config({}, mypy_argv=["--config-file=mypy.ini", "x.py"], environ={})
    assert config.store.value == str(sandbox.parent / "named_caches/mypy_cache/metastore.db")


def test_missing_named_cache_directory_is_created(sandbox: Path) -> None:
    """The store is opened through a dangling ``.cache/mypy_cache`` link: its target is
    created (os.makedirs on the link itself would fail)."""
    from metastore.store.local import Store

    config = load_config({"store": ".cache/mypy_cache/sub/metastore.db"}, environ={})
    store = Store(config.store.value)
    try:
        assert (sandbox.parent / "named_caches/mypy_cache/sub/metastore.db").is_file()
    finally:
        store.close()


# --------------------------------------------------------------------------- mtime checks


@pytest.mark.parametrize("flag", ["--skip-cache-mtime-checks", "--skip-cache-mtime-check",
                                  "--skip-cache"])
def test_skip_cache_mtime_checks_dropped_with_the_store(
        sandbox: Path, fake_seam: list[Config], flag: str) -> None:
    argv, config = dropin.prepare(["--metastore-store=s.db", flag, "x.py", "--", flag], {})
    assert config is not None
    assert argv == ["x.py", "--sqlite-cache", "--", flag]


def test_skip_cache_mtime_checks_kept_without_the_store(
        sandbox: Path, fake_seam: list[Config]) -> None:
    argv, config = dropin.prepare(["--metastore-off", *PANTS_TAIL[:-1], "x.py"], {})
    assert config is None
    assert argv == [*PANTS_TAIL[:-1], "x.py"]


def test_split_argv_unchanged_for_pants_tail() -> None:
    """Pants' own arguments are mypy's: split_argv passes them through in order."""
    flags, rest = split_argv(["--metastore-store=.cache/mypy_cache/m.db", *PANTS_TAIL])
    assert flags == {"store": ".cache/mypy_cache/m.db"} and rest == PANTS_TAIL
