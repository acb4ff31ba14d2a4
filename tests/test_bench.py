"""``metastore bench`` end to end on a small generated project (a functional test: it checks
the report, never a timing)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import gen
from helpers.run import Product

from metastore.cli.bench import report

pytestmark = pytest.mark.e2e


def test_bench_reports_every_scenario_exact(product: Product, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(gen.ProjectSpec()))
    before = sorted(p.relative_to(proj) for p in proj.rglob("*"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYPY_METASTORE")}
    if product.pythonpath:
        env["PYTHONPATH"] = product.pythonpath
    proc = subprocess.run(
        [product.python, "-m", "metastore", "bench", "--runs", "1", "--concurrency", "2",
         "--json", "--", "."],
        cwd=proj, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress output when stderr is not a terminal
    report = json.loads(proc.stdout)
    rows = {row["scenario"]: row for row in report["scenarios"]}
    assert list(rows) == ["P1", "P2", "P3", "P5", "P7"]
    assert all(row["exact"] for row in rows.values()), rows
    assert rows["P1"]["stock_rechecked"] == rows["P1"]["store_rechecked"] > 40
    assert rows["P1"]["store_written_bytes"] > 0
    assert rows["P2"]["store_rechecked"] == 0 and rows["P3"]["store_rechecked"] == 0
    assert rows["P2"]["store_read_bytes"] > 0
    assert rows["P5"]["store_rechecked"] >= 1
    # Stock mypy sharing one --cache-dir may fail under concurrency (that is what P7 shows);
    # the store may not.
    assert rows["P7"]["store_failures"] == 0 and rows["P7"]["stock_failures"] >= 0
    assert all(row["stock_seconds"] > 0 and row["store_seconds"] > 0 for row in rows.values())
    # The project itself is untouched: no cache, no store, no edit.
    assert sorted(p.relative_to(proj) for p in proj.rglob("*")) == before


def test_bench_refuses_a_tree_without_python(product: Product, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYPY_METASTORE")}
    if product.pythonpath:
        env["PYTHONPATH"] = product.pythonpath
    proc = subprocess.run([product.python, "-m", "metastore", "bench", "--runs", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no .py file" in proc.stderr


_PA = 'pb/m1.py:4: error: Cannot find implementation or library stub for module named "pa"'
_PA_M0 = _PA.replace('"pa"', '"pa.m0"')
_SEE = "pb/m1.py:4: note: See https://mypy.readthedocs.io/en/stable/running_mypy.html#missing-imports"


def test_report_forgives_only_what_stock_incremental_mypy_does() -> None:
    """:func:`report` (and the fuzzer's ``by_file``, which shares its rule) equates the
    lines of one source line in any order - as stock incremental mypy reports them
    (test_fuzz_differential.test_stock_incremental_reorders_errors_of_one_line) - and
    nothing else: not lines of different positions, not the text, not the status."""
    oracle = f"{_PA_M0}\n{_SEE}\n{_PA}\nFound 2 errors in 1 file\n"
    assert report(oracle, 1) == report(f"{_PA}\n{_SEE}\n{_PA_M0}\nFound 2 errors in 1 file\n", 1)
    assert report(oracle, 1) != report(oracle, 0)
    assert report(oracle, 1) != report(oracle.replace('"pa"', '"pb"'), 1)
    assert report(oracle, 1) != report(oracle.replace(f"{_PA}\n", ""), 1)
    lines = "a.py:1: error: A\na.py:2: error: B\n"
    assert report(lines, 1) != report("a.py:2: error: B\na.py:1: error: A\n", 1)
    # Notes of one line go with it, in any order (mypy prints a note both errors of a line
    # would report once, after whichever comes first), but never to another line.
    notes = "a.py:1: error: A\na.py:1: note: n1\na.py:1: error: B\na.py:2: note: n2\n"
    assert report(notes, 1) == report(
        "a.py:1: error: B\na.py:1: note: n1\na.py:1: error: A\na.py:2: note: n2\n", 1)
    assert report(notes, 1) != report(
        "a.py:1: error: A\na.py:1: note: n2\na.py:1: error: B\na.py:2: note: n1\n", 1)
    # A line that names no position ends a run.
    assert report("a.py:1: error: B\na.py: note: x\na.py:1: error: A\n", 1) != report(
        "a.py:1: error: A\na.py: note: x\na.py:1: error: B\n", 1)
    # Columns are part of the line's position, not of a different one.
    assert report("a.py:1:5: error: B\na.py:1:2: error: A\n", 1) == report(
        "a.py:1:2: error: A\na.py:1:5: error: B\n", 1)
