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
