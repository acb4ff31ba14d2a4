"""Tests of the admin CLI (metastore.cli.admin): `config` and `stats`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import metastore
from metastore.cli import admin
from metastore.store.api import digest
from metastore.store.local import Store


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd = a fresh repository; HOME in tmp; no MYPY_METASTORE_* / XDG_* variables."""
    for name in list(os.environ):
        if name.startswith(("MYPY_METASTORE", "XDG_")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    monkeypatch.chdir(repo)
    return repo


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        admin.main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def make_store(path: Path, n: int, label: str = "meta", counters: dict[str, int] | None = None,
               ) -> None:
    store = Store(str(path))
    try:
        for i in range(n):
            blob = f"blob {path.name} {i}".encode()
            store.put(
                entries=[(label, f"key{i}".encode(), f"value{i}".encode(), [digest(blob)])],
                blobs=[blob],
                counters=counters or {},
            )
    finally:
        store.close()


# --------------------------------------------------------------------------- config


def test_config_defaults(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["config"], capsys)
    assert code == 0 and err == ""
    home = Path(os.environ["HOME"])
    lines = out.splitlines()
    assert lines[:4] == [
        "enabled = false  (default)",
        f"store = {home / '.cache' / 'mypy-metastore' / 'store.db'}  (default)",
        "bases = (none)  (default)",
        "stats = false  (default)",
    ]
    assert "# config file: none" in out


def test_config_sources(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pp = project / "pyproject.toml"
    pp.write_text('[tool.metastore]\nenabled = true\nbases = ["b1.db", "b2.db"]\n')
    monkeypatch.setenv("MYPY_METASTORE_STATS", "1")
    code, out, err = run(["--store", "rel/s.db", "config"], capsys)
    assert code == 0 and err == ""
    src = f"{pp} [tool.metastore]"
    assert out.splitlines()[:4] == [
        f"enabled = true  ({src})",
        f"store = {project / 'rel' / 's.db'}  (option --store)",
        f"bases = {project / 'b1.db'}, {project / 'b2.db'}  ({src})",
        "stats = true  (env MYPY_METASTORE_STATS)",
    ]
    assert f"# config file: {pp}" in out

    code, out, _ = run(["config", "--json"], capsys)
    data = json.loads(out)
    assert data["bases"] == {"value": [str(project / "b1.db"), str(project / "b2.db")],
                             "source": src}
    assert data["stats"] == {"value": True, "source": "env MYPY_METASTORE_STATS"}
    assert data["config_file"]["value"] == str(pp)


def test_config_error_is_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ini = project / "mypy.ini"
    ini.write_text("[metastore]\nstats = perhaps\n")
    code, out, err = run(["config"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("metastore: ") and err.count("\n") == 1
    assert str(ini) in err and "'perhaps'" in err and "true/false" in err


@pytest.mark.parametrize(
    "argv,needle",
    [([], "required"), (["frobnicate"], "invalid choice"), (["stats", "--bogus"], "--bogus")],
)
def test_usage_errors_are_one_line(
    argv: list[str], needle: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("metastore: ") and err.count("\n") == 1 and needle in err


def test_help_and_version(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "stats" in out and "config" in out
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"metastore {metastore.__version__}"


# --------------------------------------------------------------------------- stats


def test_stats_table_and_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    top = project / "top.db"
    base = project / "base.db"
    make_store(base, 2, label="data")
    make_store(top, 3, counters={"hits": 2})
    base_sha = hashlib.sha256(base.read_bytes()).hexdigest()
    (project / "pyproject.toml").write_text(
        '[tool.metastore]\nstore = "top.db"\nbases = ["base.db"]\n'
    )

    code, out, err = run(["stats"], capsys)
    assert code == 0 and err == "", err
    assert f"top   {top}" in out and f"base  {base}" in out
    top_block, base_block = out.split("\n\n")
    assert "entries         3" in top_block and "meta=3" in top_block
    assert "hits=6" in top_block  # counters are added up over the three puts
    assert "entries         2" in base_block and "data=2" in base_block
    assert "on disk" in top_block and "schema version" in top_block

    code, out, err = run(["stats", "--json"], capsys)
    assert code == 0 and err == ""
    layers = json.loads(out)["layers"]
    assert [(x["role"], x["path"], x["entries"], x["blobs"]) for x in layers] == [
        ("top", str(top), 3, 3),
        ("base", str(base), 2, 2),
    ]
    assert layers[0]["labels"] == {"meta": 3} and layers[0]["counters"] == {"hits": 6}
    assert layers[0]["file_bytes"] > 0 and layers[0]["blob_bytes"] > 0
    assert hashlib.sha256(base.read_bytes()).hexdigest() == base_sha  # never written


def test_stats_store_option_and_missing_store(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = project / "other.db"
    make_store(other, 1)
    code, out, _ = run(["--store", "other.db", "stats", "--json"], capsys)
    assert code == 0 and json.loads(out)["layers"][0]["path"] == str(other)

    missing = project / "nowhere" / "s.db"
    code, out, err = run(["--store", str(missing), "stats"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"metastore: {missing}: no store there yet")
    assert not missing.parent.exists()  # stats creates nothing

    # A missing top with bases: the bases are shown, the top is reported missing.
    monkeypatch.setenv("MYPY_METASTORE_BASES", str(other))
    code, out, err = run(["--store", str(missing), "stats"], capsys)
    assert code == 0, err
    assert f"{missing}  (not created yet" in out and f"base  {other}" in out
    assert not missing.parent.exists()


def test_stats_foreign_file(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    foreign = project / "foreign.db"
    foreign.write_bytes(b"this is not a database at all" * 100)
    code, out, err = run(["--store", str(foreign), "stats"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("metastore: ") and err.count("\n") == 1 and str(foreign) in err


def test_python_dash_m(project: Path) -> None:
    src = os.path.dirname(os.path.dirname(os.path.abspath(metastore.__file__)))
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [sys.executable, "-m", "metastore", "config"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0 and r.stdout.startswith("enabled = false  (default)"), r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "metastore", "--store", str(project / "none.db"), "stats"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- packaging

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    (command,) = [
        line.split("=", 1)[1].strip().strip("'")
        for line in ci.splitlines()
        if line.startswith("TEST_COMMAND=")
    ]
    assert f"   {command}\n" in (ROOT / "README.md").read_text()


def test_version_matches_pyproject() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == metastore.__version__
    assert project["scripts"] == {
        "mypy-metastore": "metastore.seams.dropin:main",
        "metastore": "metastore.cli.admin:main",
    }
