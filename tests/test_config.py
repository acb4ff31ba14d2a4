"""Tests of metastore.config (settings, discovery, argv) and the drop-in's argv/config part."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import metastore.mypy
import metastore.seams
from metastore import config as cfg
from metastore.config import keys as cfg_keys
from metastore.config import sources as cfg_sources
from metastore.seams import dropin
from metastore.config import (
    Config,
    ConfigError,
    Setting,
    default_store_path,
    export_to_environ,
    find_config_file,
    load_config,
    split_argv,
)

# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    """A hermetic environment: only HOME (no XDG_*, no MYPY_METASTORE_*)."""
    return {"HOME": str(home)}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A project root (holds .git, so mypy's upward search stops there)."""
    r = tmp_path / "repo"
    (r / ".git").mkdir(parents=True)
    return r


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(repo: Path, env: dict[str, str], **kw: object) -> Config:
    kw.setdefault("cwd", str(repo))
    return load_config(environ=env, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- defaults


def test_defaults(repo: Path, env: dict[str, str], home: Path) -> None:
    c = load(repo, env)
    assert c.enabled == Setting(False, "default")
    assert c.store == Setting(str(home / ".cache" / "mypy-metastore" / "store.db"), "default")
    assert c.bases == Setting((), "default")
    assert c.stats == Setting(False, "default")
    assert c.config_file is None


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG layout")
def test_default_store_path(tmp_path: Path) -> None:
    xdg = str(tmp_path / "xdg")
    assert default_store_path({"HOME": "/h", "XDG_CACHE_HOME": xdg}) == os.path.join(
        xdg, "mypy-metastore", "store.db"
    )
    # A relative XDG_CACHE_HOME is invalid per the XDG spec and ignored.
    assert default_store_path({"HOME": "/h", "XDG_CACHE_HOME": "rel"}) == (
        "/h/.cache/mypy-metastore/store.db"
    )
    assert default_store_path({"HOME": "/h"}) == "/h/.cache/mypy-metastore/store.db"


# --------------------------------------------------------------------------- discovery


def test_pyproject_section_and_relative_paths(repo: Path, env: dict[str, str]) -> None:
    pp = write(
        repo / "pyproject.toml",
        '[tool.metastore]\nenabled = true\nstore = "cache/s.db"\n'
        'bases = ["../shared/b1.db", "/abs/b2.db"]\nstats = "yes"\n',
    )
    sub = repo / "src" / "pkg"
    sub.mkdir(parents=True)
    c = load(repo, env, cwd=str(sub))  # found by walking up from a subdirectory
    src = f"{pp} [tool.metastore]"
    assert c.config_file == str(pp)
    assert c.enabled == Setting(True, src)
    assert c.store == Setting(str(repo / "cache" / "s.db"), src)  # relative to the file
    assert c.bases == Setting((str(repo.parent / "shared" / "b1.db"), "/abs/b2.db"), src)
    assert c.stats == Setting(True, src)


def test_mypy_ini_section(repo: Path, env: dict[str, str]) -> None:
    ini = write(
        repo / "mypy.ini",
        "[mypy]\nstrict = True\n\n[metastore]\nenabled = on\nstore = s.db\n"
        "bases = a.db, b.db\n  c.db\n",
    )
    # mypy.ini comes first in mypy's order: its [metastore] wins over pyproject's section.
    write(repo / "pyproject.toml", '[tool.metastore]\nstore = "other.db"\n')
    c = load(repo, env)
    src = f"{ini} [metastore]"
    assert c.config_file == str(ini)
    assert c.enabled == Setting(True, src)
    assert c.store == Setting(str(repo / "s.db"), src)
    assert c.bases.value == tuple(str(repo / n) for n in ("a.db", "b.db", "c.db"))


def test_mypy_ini_without_section_uses_sibling_pyproject(repo: Path, env: dict[str, str]) -> None:
    write(repo / "mypy.ini", "[mypy]\nstrict = True\n")
    pp = write(repo / "pyproject.toml", '[tool.metastore]\nstore = "p.db"\n')
    c = load(repo, env)
    assert c.store == Setting(str(repo / "p.db"), f"{pp} [tool.metastore]")


def test_dot_mypy_ini_and_setup_cfg(repo: Path, env: dict[str, str]) -> None:
    # pyproject.toml without [tool.mypy] or [tool.metastore] does not count (as in mypy).
    write(repo / "pyproject.toml", '[project]\nname = "x"\n')
    cfgfile = write(repo / "setup.cfg", "[DEFAULT]\nfoo = 1\n\n[metastore]\nstats = 1\n")
    c = load(repo, env)
    assert c.stats == Setting(True, f"{cfgfile} [metastore]")  # [DEFAULT] keys are not ours
    dot = write(repo / ".mypy.ini", "[mypy]\n")
    assert find_config_file(cwd=str(repo), environ=env) == str(dot)
    assert load(repo, env).stats == Setting(False, "default")  # .mypy.ini has no section


def test_pyproject_with_only_mypy_section_counts(repo: Path, env: dict[str, str]) -> None:
    pp = write(repo / "pyproject.toml", "[tool.mypy]\nstrict = true\n")
    write(repo / "setup.cfg", "[metastore]\nstats = 1\n")
    assert find_config_file(cwd=str(repo), environ=env) == str(pp)
    assert load(repo, env).stats.source == "default"  # mypy reads pyproject: no section


def test_search_stops_at_repository_root(repo: Path, env: dict[str, str]) -> None:
    write(repo.parent / "mypy.ini", "[metastore]\nstats = 1\n")
    assert find_config_file(cwd=str(repo), environ=env) is None
    (repo / ".git").rmdir()
    (repo / ".hg").mkdir()
    assert find_config_file(cwd=str(repo), environ=env) is None
    (repo / ".hg").rmdir()
    assert find_config_file(cwd=str(repo), environ=env) == str(repo.parent / "mypy.ini")


def test_user_config_files(repo: Path, env: dict[str, str], home: Path, tmp_path: Path) -> None:
    dot = write(home / ".mypy.ini", "[metastore]\nstore = ~/stores/s.db\n")
    c = load(repo, env)
    assert c.store == Setting(str(home / "stores" / "s.db"), f"{dot} [metastore]")
    conf = write(home / ".config" / "mypy" / "config", "[metastore]\nstats = true\n")
    assert find_config_file(cwd=str(repo), environ=env) == str(conf)
    xdg = write(tmp_path / "xdg" / "mypy" / "config", "[metastore]\n")
    env2 = {**env, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert find_config_file(cwd=str(repo), environ=env2) == str(xdg)
    # A project file wins over user files.
    ini = write(repo / "mypy.ini", "[mypy]\n")
    assert find_config_file(cwd=str(repo), environ=env2) == str(ini)


def test_config_file_from_argv(repo: Path, env: dict[str, str], tmp_path: Path) -> None:
    write(repo / "pyproject.toml", '[tool.metastore]\nstore = "found.db"\n')
    other = write(tmp_path / "conf" / "my.ini", "[metastore]\nstore = given.db\n")
    given_db = str(tmp_path / "conf" / "given.db")
    rel = os.path.relpath(other, repo)
    for argv in (["--config-file", rel], [f"--config-file={rel}"], ["--config-file", str(other)]):
        c = load(repo, env, mypy_argv=["-p", "x", *argv])
        assert c.store == Setting(given_db, f"{other} [metastore]"), argv
    # Last one wins, as with argparse.
    c = load(repo, env, mypy_argv=["--config-file=nope.ini", f"--config-file={other}"])
    assert c.store.value == given_db
    # --config-file= disables config files, as in mypy.
    assert load(repo, env, mypy_argv=["--config-file="]).store.source == "default"
    # A missing file: no section (mypy reports the missing file itself).
    assert load(repo, env, mypy_argv=["--config-file", "missing.ini"]).store.source == "default"
    # A toml file given explicitly uses [tool.metastore].
    tom = write(tmp_path / "conf" / "x.toml", '[tool.metastore]\nstats = true\n')
    assert load(repo, env, mypy_argv=["--config-file", str(tom)]).stats.value is True
    # After a bare "--", --config-file is a file name, not an option.
    assert load(repo, env, mypy_argv=["--", "--config-file", str(other)]).store.value == str(
        repo / "found.db"
    )


def test_constants_match_installed_mypy() -> None:
    from mypy import defaults

    assert list(cfg_keys._MYPY_CONFIG_NAMES) == list(defaults.CONFIG_NAMES)
    assert list(cfg_keys._MYPY_SHARED_CONFIG_NAMES) == list(defaults.SHARED_CONFIG_NAMES)
    assert cfg_sources._user_config_files(os.environ) == list(defaults.USER_CONFIG_FILES)


@pytest.mark.parametrize(
    "layout",
    [
        {"mypy.ini": "[mypy]\n", "pyproject.toml": "[tool.mypy]\n"},
        {".mypy.ini": "[mypy]\n", "setup.cfg": "[mypy]\n"},
        {"pyproject.toml": "[project]\n", "setup.cfg": "[mypy]\n"},
        {"pyproject.toml": "[tool.mypy]\n", "setup.cfg": "[mypy]\n"},
        {"../mypy.ini": "[mypy]\n", "pyproject.toml": "[project]\n"},
        {"../../mypy.ini": "[mypy]\n"},  # above the repository root: not found
        {},
    ],
)
def test_search_agrees_with_mypy(
    layout: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For files with a mypy section, our search finds what mypy's own search finds."""
    from mypy import config_parser, defaults

    repo = tmp_path / "a" / "repo"
    (repo / ".git").mkdir(parents=True)
    work = repo / "sub"
    work.mkdir()
    for name, text in layout.items():
        write(work / name, text)
    monkeypatch.chdir(work)
    monkeypatch.setattr(defaults, "USER_CONFIG_FILES", [])
    found = config_parser._find_config_file()
    expected = os.path.abspath(found[2]) if found else None
    assert find_config_file(cwd=str(work), environ={"HOME": str(tmp_path / "nohome")}) == expected


# --------------------------------------------------------------------------- precedence


def test_precedence_and_sources(repo: Path, env: dict[str, str], tmp_path: Path) -> None:
    pp = write(
        repo / "pyproject.toml",
        '[tool.metastore]\nenabled = true\nstore = "f.db"\nbases = ["fb.db"]\nstats = false\n',
    )
    fsrc = f"{pp} [tool.metastore]"
    c = load(repo, env)
    assert [c.enabled.source, c.store.source, c.bases.source, c.stats.source] == [fsrc] * 4

    env.update(
        MYPY_METASTORE="0",
        MYPY_METASTORE_STORE="e.db",
        MYPY_METASTORE_BASES=os.pathsep.join(["e1.db", "/x/e2.db", ""]),
        MYPY_METASTORE_STATS="1",
    )
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    c = load(repo, env, cwd=str(cwd))  # env paths are relative to the cwd, not to the file
    assert c.enabled == Setting(False, "env MYPY_METASTORE")
    assert c.store == Setting(str(cwd / "e.db"), "env MYPY_METASTORE_STORE")
    assert c.bases == Setting((str(cwd / "e1.db"), "/x/e2.db"), "env MYPY_METASTORE_BASES")
    assert c.stats == Setting(True, "env MYPY_METASTORE_STATS")

    flags, rest = split_argv(
        ["--metastore-off", "--metastore-store", "x.db", "--metastore-base=b1", "-v",
         "--metastore-base", "b2", "--metastore-stats"]
    )
    assert rest == ["-v"]
    env["MYPY_METASTORE"] = "1"
    c = load(repo, env, flags=flags)
    assert c.enabled == Setting(False, "flag --metastore-off")
    assert c.store == Setting(str(repo / "x.db"), "flag --metastore-store")
    assert c.bases == Setting((str(repo / "b1"), str(repo / "b2")), "flag --metastore-base")
    assert c.stats == Setting(True, "flag --metastore-stats")


def test_empty_env_counts_as_unset(repo: Path, env: dict[str, str]) -> None:
    write(repo / "mypy.ini", "[metastore]\nstats = yes\n")
    env.update(MYPY_METASTORE="", MYPY_METASTORE_STORE="", MYPY_METASTORE_STATS="")
    c = load(repo, env)
    assert c.enabled.source == "default" and c.store.source == "default"
    assert c.stats.value is True and c.stats.source.endswith("[metastore]")


@pytest.mark.parametrize(
    "word,value",
    [(w, True) for w in ("1", "true", "True", "YES", "on")]
    + [(w, False) for w in ("0", "false", "FALSE", "no", "Off")],
)
def test_boolean_words(word: str, value: bool, repo: Path, env: dict[str, str]) -> None:
    write(repo / "mypy.ini", f"[metastore]\nstats = {word}\n")
    env["MYPY_METASTORE"] = word
    c = load(repo, env)
    assert c.stats.value is value and c.enabled.value is value


def test_export_round_trip(repo: Path, env: dict[str, str], tmp_path: Path) -> None:
    write(repo / "pyproject.toml", '[tool.metastore]\nstore = "f.db"\nbases = ["b.db"]\n')
    flags, _ = split_argv(["--metastore-stats"])
    parent = load(repo, env, flags=flags)
    child_env = dict(env)
    export_to_environ(parent, child_env)
    assert child_env["MYPY_METASTORE"] == "0"
    assert child_env["MYPY_METASTORE_STORE"] == str(repo / "f.db")
    assert child_env["MYPY_METASTORE_BASES"] == str(repo / "b.db")
    assert child_env["MYPY_METASTORE_STATS"] == "1"
    elsewhere = tmp_path / "w"
    elsewhere.mkdir()
    child = load(repo, child_env, cwd=str(elsewhere))  # a worker: no flags, any cwd
    for key in ("enabled", "store", "bases", "stats"):
        assert getattr(child, key).value == getattr(parent, key).value, key
    # No bases: exported as empty, which reads back as the same (empty) value.
    write(repo / "pyproject.toml", '[tool.metastore]\nstore = "f.db"\n')
    parent = load(repo, env)
    child_env = dict(env)
    export_to_environ(parent, child_env)
    assert child_env["MYPY_METASTORE_BASES"] == ""
    assert load(repo, child_env).bases.value == ()


# --------------------------------------------------------------------------- errors


def one_line_error(repo: Path, env: dict[str, str], **kw: object) -> str:
    with pytest.raises(ConfigError) as info:
        load(repo, env, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_bad_boolean_in_file(repo: Path, env: dict[str, str]) -> None:
    pp = write(repo / "pyproject.toml", '[tool.metastore]\nstats = "maybe"\n')
    msg = one_line_error(repo, env)
    assert str(pp) in msg and "stats" in msg and "'maybe'" in msg
    assert "true/false" in msg and "yes/no" in msg and "on/off" in msg and "1/0" in msg
    write(repo / "pyproject.toml", "[tool.metastore]\nenabled = 2\n")
    assert "enabled = 2" in one_line_error(repo, env)


def test_bad_boolean_in_ini_and_env(repo: Path, env: dict[str, str]) -> None:
    ini = write(repo / "mypy.ini", "[metastore]\nenabled = sure\n")
    msg = one_line_error(repo, env)
    assert str(ini) in msg and "[metastore] enabled" in msg and "'sure'" in msg
    ini.write_text("[metastore]\n")
    env["MYPY_METASTORE_STATS"] = "please"
    msg = one_line_error(repo, env)
    assert "MYPY_METASTORE_STATS" in msg and "'please'" in msg and "true/false" in msg


def test_unknown_key(repo: Path, env: dict[str, str]) -> None:
    pp = write(repo / "pyproject.toml", '[tool.metastore]\nstroe = "x"\n')
    msg = one_line_error(repo, env)
    assert str(pp) in msg and "'stroe'" in msg and "enabled, store, bases, stats" in msg
    ini = write(repo / "mypy.ini", "[metastore]\nbase = x\n")
    msg = one_line_error(repo, env)
    assert str(ini) in msg and "'base'" in msg and "bases" in msg


def test_bad_types_and_syntax(repo: Path, env: dict[str, str]) -> None:
    write(repo / "pyproject.toml", '[tool.metastore]\nbases = "a.db"\n')
    assert "expected a list of paths" in one_line_error(repo, env)
    write(repo / "pyproject.toml", "[tool.metastore]\nstore = 3\n")
    assert "expected a path" in one_line_error(repo, env)
    write(repo / "pyproject.toml", '[tool.metastore]\nstore = ""\n')
    assert "non-empty" in one_line_error(repo, env)
    write(repo / "pyproject.toml", "[tool.metastore]\nbases = [1]\n")
    assert "bases" in one_line_error(repo, env)
    write(repo / "pyproject.toml", "[tool]\nmetastore = 1\n")
    assert "must be a table" in one_line_error(repo, env)
    pp = write(repo / "pyproject.toml", "[tool.metastore\nstore = \n")
    msg = one_line_error(repo, env)
    assert str(pp) in msg and "invalid TOML" in msg
    (repo / "pyproject.toml").unlink()
    ini = write(repo / "mypy.ini", "no section header\n")
    msg = one_line_error(repo, env)
    assert str(ini) in msg and "invalid ini" in msg


def test_bad_flag_values(repo: Path, env: dict[str, str]) -> None:
    assert "expected a list" in one_line_error(repo, env, flags={"bases": "x"})
    assert "unknown flag key" in one_line_error(repo, env, flags={"nope": 1})


# --------------------------------------------------------------------------- split_argv


def test_split_argv_keeps_mypy_args_in_order() -> None:
    argv = ["-p", "pkg", "--metastore-stats", "--strict", "@args.txt", "--metastore-store=s.db",
            "file.py", "--metastore-base", "b.db", "--no-incremental", "--metastore"]
    flags, rest = split_argv(argv)
    assert flags == {"stats": True, "store": "s.db", "bases": ["b.db"]}
    assert rest == ["-p", "pkg", "--strict", "@args.txt", "file.py", "--no-incremental",
                    "--metastore"]


def test_split_argv_double_dash() -> None:
    flags, rest = split_argv(["--metastore-off", "--", "--metastore-stats", "x.py"])
    assert flags == {"enabled": False}
    assert rest == ["--", "--metastore-stats", "x.py"]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--metastore-stat"], "unknown option '--metastore-stat'"),
        (["--metastore-xyz=1"], "unknown option '--metastore-xyz'"),
        (["--metastore-store"], "needs a value"),
        (["--metastore-store", "--strict"], "needs a value"),
        (["--metastore-base="], "non-empty"),
        (["--metastore-off=1"], "takes no value"),
        (["--metastore-stats=yes"], "takes no value"),
    ],
)
def test_split_argv_errors(argv: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        split_argv(argv)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg
    if "unknown" in needle:
        for flag in ("--metastore-base", "--metastore-off", "--metastore-stats",
                     "--metastore-store"):
            assert flag in msg


mypy_arg = st.text(min_size=1, max_size=8).filter(
    lambda s: not s.startswith("--metastore-") and s != "--"
)
our_flag = st.one_of(
    st.just(["--metastore-stats"]),
    st.just(["--metastore-off"]),
    st.builds(lambda p: ["--metastore-store", "p" + p], st.text(max_size=5)),
    st.builds(lambda p: ["--metastore-base=" + "p" + p], st.text(max_size=5)),
)


@given(st.lists(st.one_of(st.builds(lambda a: [a], mypy_arg), our_flag), max_size=12))
def test_split_argv_property(chunks: list[list[str]]) -> None:
    argv = [a for chunk in chunks for a in chunk]
    flags, rest = split_argv(argv)
    assert rest == [c[0] for c in chunks if not c[0].startswith("--metastore-")]
    bases = [c[0].partition("=")[2] for c in chunks if c[0].startswith("--metastore-base")]
    assert flags.get("bases", []) == bases


# --------------------------------------------------------------------------- drop-in


def test_dropin_forces_enabled_unless_off(repo: Path, env: dict[str, str]) -> None:
    write(repo / "mypy.ini", "[metastore]\nenabled = false\n")
    c = dropin.dropin_config(load(repo, env))
    assert c.enabled.value is True and c.enabled.source == dropin.DROPIN_SOURCE
    off = dropin.dropin_config(load(repo, env, flags={"enabled": False}))
    assert off.enabled == Setting(False, "flag --metastore-off")
    env["MYPY_METASTORE"] = "0"
    assert dropin.dropin_config(load(repo, env)).enabled == Setting(False, "env MYPY_METASTORE")


@pytest.fixture
def fake_seam(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Config]]:
    """Stand-ins for metastore.seams.sql and metastore.mypy.compat (recording install())."""
    installed: list[Config] = []
    seam = types.ModuleType("metastore.seams.sql")
    seam.install = installed.append  # type: ignore[attr-defined]
    compat = types.ModuleType("metastore.mypy.compat")
    compat.unsupported_reason = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "metastore.seams.sql", seam)
    monkeypatch.setitem(sys.modules, "metastore.mypy.compat", compat)
    monkeypatch.setattr(metastore.seams, "sql", seam, raising=False)
    monkeypatch.setattr(metastore.mypy, "compat", compat, raising=False)
    yield installed


def test_prepare_active(
    repo: Path, env: dict[str, str], fake_seam: list[Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo)
    argv, config = dropin.prepare(["--metastore-store=s.db", "-p", "x", "--", "y.py"], env)
    assert argv == ["-p", "x", "--sqlite-cache", "--", "y.py"]
    assert config is not None and fake_seam == [config]
    assert env["MYPY_METASTORE"] == "1" and env["MYPY_METASTORE_STORE"] == str(repo / "s.db")
    argv, _ = dropin.prepare(["x.py"], env)
    assert argv == ["x.py", "--sqlite-cache"]


def test_prepare_inactive(
    repo: Path,
    env: dict[str, str],
    fake_seam: list[Config],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(repo)
    assert dropin.prepare(["--metastore-off", "x.py"], env) == (["x.py"], None)
    assert env["MYPY_METASTORE"] == "0" and capsys.readouterr().err == ""

    env.pop("MYPY_METASTORE")
    write(repo / "pyproject.toml", '[tool.metastore]\nstats = "maybe"\n')
    assert dropin.prepare(["x.py"], env) == (["x.py"], None)
    err = capsys.readouterr().err
    assert err.startswith("mypy-metastore: ") and err.count("\n") == 1
    assert err.rstrip().endswith("; running mypy without the store") and "'maybe'" in err
    assert env["MYPY_METASTORE"] == "0"
    (repo / "pyproject.toml").unlink()

    env.pop("MYPY_METASTORE")
    assert dropin.prepare(["--cache-map", "a.py", "a.meta", "a.data"], env)[1] is None
    assert "--cache-map" in capsys.readouterr().err

    env.pop("MYPY_METASTORE")
    sys.modules["metastore.mypy.compat"].unsupported_reason = (  # type: ignore[attr-defined]
        lambda: "mypy 9.9 is not supported; running mypy without the store"
    )
    assert dropin.prepare(["x.py"], env) == (["x.py"], None)
    assert capsys.readouterr().err == (
        "mypy-metastore: mypy 9.9 is not supported; running mypy without the store\n"
    )
    assert fake_seam == [] and env["MYPY_METASTORE"] == "0"


def test_prepare_install_failure(
    repo: Path,
    env: dict[str, str],
    fake_seam: list[Config],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(repo)

    def boom(config: Config) -> None:
        raise RuntimeError("/x/store.db: read-only file system; use --metastore-store")

    monkeypatch.setattr(sys.modules["metastore.seams.sql"], "install", boom)
    assert dropin.prepare(["x.py"], env) == (["x.py"], None)
    assert capsys.readouterr().err == (
        "mypy-metastore: /x/store.db: read-only file system; use --metastore-store; "
        "running mypy without the store\n"
    )
    assert env["MYPY_METASTORE"] == "0"


def _run(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYPY_", "XDG_"))}
    env["HOME"] = str(home)
    src = os.path.dirname(os.path.dirname(os.path.abspath(metastore.__file__)))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_dropin_runs_mypy(repo: Path, home: Path) -> None:
    import mypy.version

    r = _run(["-m", "metastore.seams.dropin", "--metastore-off", "--version"], repo, home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"mypy {mypy.version.__version__}") and r.stderr == ""

    write(repo / "bad.py", "x: int = 'no'\n")
    r = _run(["-m", "metastore.seams.dropin", "--metastore-off", "--no-incremental", "bad.py"],
             repo, home)
    assert r.returncode == 1 and "bad.py:1: error" in r.stdout, r.stdout + r.stderr

    r = _run(["-m", "metastore.seams.dropin", "--metastore-off", "--no-such-mypy-flag"], repo, home)
    assert r.returncode == 2 and r.stderr.startswith("usage: mypy"), r.stderr

    r = _run(["-m", "metastore.seams.dropin", "--metastore-of", "x.py"], repo, home)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("mypy-metastore: error: unknown option '--metastore-of'")
    assert r.stderr.count("\n") == 1


def test_hook_reads_config_file_named_in_an_argument_file(
    repo: Path, fake_seam: list[Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain ``mypy @args`` where the argument file names the config file that enables the
    store: the startup hook expands the @file as mypy will, and installs the store."""
    from metastore.seams import hook

    monkeypatch.chdir(repo)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MYPY_METASTORE")}
    monkeypatch.setattr(os, "environ", environ)
    write(repo / "conf" / "strict.ini", "[mypy]\n\n[metastore]\nenabled = true\nstore = s.db\n")
    write(repo / "args.txt", "--config-file\nconf/strict.ini\npkg\n")
    monkeypatch.setattr(sys, "argv", ["mypy", "@args.txt"])
    monkeypatch.delitem(sys.modules, "metastore.seams.dropin", raising=False)  # not the drop-in
    hook.activate()
    assert len(fake_seam) == 1
    assert fake_seam[0].store.value == str(repo / "conf" / "s.db")
    assert sys.argv == ["mypy", "@args.txt", "--sqlite-cache"]


def test_verify_bases_default_file_env_and_export(tmp_path: Path) -> None:
    """verify_bases: on by default; the file turns it off; the environment wins over the
    file; export_to_environ carries it to child processes."""
    (tmp_path / "other").mkdir()
    none = cfg.load_config({}, mypy_argv=[], environ={}, cwd=str(tmp_path / "other"))
    tmp_path = tmp_path / "proj"
    tmp_path.mkdir()
    (tmp_path / "mypy.ini").write_text("[mypy]\n\n[metastore]\nverify_bases = false\n")
    assert none.verify_bases.value is True and none.verify_bases.source == "default"
    from_file = cfg.load_config({}, mypy_argv=[], environ={}, cwd=str(tmp_path))
    assert from_file.verify_bases.value is False
    env = {cfg.ENV_VERIFY_BASES: "1"}
    from_env = cfg.load_config({}, mypy_argv=[], environ=env, cwd=str(tmp_path))
    assert from_env.verify_bases.value is True
    assert from_env.verify_bases.source == f"env {cfg.ENV_VERIFY_BASES}"
    out: dict[str, str] = {}
    cfg.export_to_environ(from_file, out)
    assert out[cfg.ENV_VERIFY_BASES] == "0"
    with pytest.raises(cfg.ConfigError, match="MYPY_METASTORE_VERIFY_BASES"):
        cfg.load_config({}, mypy_argv=[], environ={cfg.ENV_VERIFY_BASES: "maybe"},
                        cwd=str(tmp_path))
