"""Run mypy's own incremental tests with the store active and compare with a stock run.

``tox -e mypy-suite`` runs this. Steps:

1. ``pip download`` the sdist of the installed mypy version (``--no-binary mypy``) and
   unpack it: it holds ``test-data/unit/check-incremental.test``, ``check-serialize.test``
   and the fixtures. The harness (``mypy/test/testcheck.py``) is the installed mypy's own
   (compiled mypy ships ``mypy/test``), pointed at the sdist by ``MYPY_TEST_PREFIX`` - the way
   mypy tests its compiled wheels.
2. Run those two files four times (``metastore_suite_plugin.py`` sets the mode): ``stock``
   (no store), ``per-test`` (a new store for every case), ``shared`` (one store for every
   case; ``[rechecked]``/``[stale]`` expectations recorded instead of failing the case) and
   ``stock-shared`` (no store, mypy's own cache directory shared by every case, expectations
   recorded the same way: what sharing does to mypy's own cache).
3. Compare. per-test must pass the cases stock passes, except a case whose only failure is
   a step that re-checked a *subset* of the expected modules (a content-addressed store
   still holds a version the case returns to: issue 2 requires that alternating versions
   re-check nothing); each such case is listed. shared must fail no case stock passes, and
   every recorded deviation must re-check a subset of the expected modules (the shared
   store already held the others), or re-check more only where mypy's own shared cache
   re-checked at least those modules too, or re-checked no fewer modules over the whole
   case (mypy hashes interfaces with the absolute path of the module, so results written
   at another path - another case's temporary directory - look changed after an edit; a
   store that re-used them in an earlier step pays for it in a later one). Prints the
   figures and every deviation with its reason; exit status 0 only if all that holds and
   the store was written in both store modes.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FILES = ("check-incremental.test", "check-serialize.test")
MODES = ("stock", "per-test", "shared", "stock-shared")
# The harness checks a step's output before its [rechecked]/[stale] expectations.
_EXPECTATION = re.compile(r'Actual modules \((.*?)\) do not match expected modules \((.*?)\) '
                          r'for "\[(rechecked|stale)')


def fetch_sdist(version: str, work: Path) -> Path:
    """The unpacked sdist of mypy ``version`` under ``work`` (downloaded once)."""
    root = work / f"mypy-{version}"
    if (root / "test-data" / "unit" / FILES[0]).exists():
        return root
    dl = work / "sdist"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "mypy",
                    "--disable-pip-version-check", "-q", "-d", str(dl), f"mypy=={version}"],
                   check=True)
    archive = dl / f"mypy-{version}.tar.gz"
    with tarfile.open(archive) as tar:
        tar.extractall(work, filter="data") if sys.version_info >= (3, 12) else tar.extractall(
            work)
    return root


def run_mode(mode: str, sdist: Path, work: Path, keyword: str) -> dict[str, tuple[str, str]]:
    """Run the suite in ``mode``; return ``{case: (outcome, message)}`` from the JUnit XML."""
    out = work / mode
    out.mkdir(parents=True, exist_ok=True)
    junit = out / "junit.xml"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MYPY") and k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    env.update({
        "MYPY_TEST_PREFIX": str(sdist),
        "PYTHONPATH": str(HERE),
        "METASTORE_SUITE_MODE": mode,
        "METASTORE_SUITE_DIR": str(out),
        "MYPY_METASTORE": "0" if mode.startswith("stock") else "",
    })
    argv = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider",
            "-p", "metastore_suite_plugin", f"--junitxml={junit}", "--pyargs",
            "mypy.test.testcheck", "-k", keyword]
    print(f"== {mode}: {' '.join(argv[1:])}", flush=True)
    proc = subprocess.run(argv, cwd=sdist, env=env, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1:] or [proc.stderr[-500:]]
    print(f"   {tail[0]}", flush=True)
    if not junit.exists():
        raise SystemExit(f"mypy-suite: pytest wrote no report in mode {mode}:\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results: dict[str, tuple[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", (child.get("message") or "")[:3000]
            elif child.tag == "skipped":
                outcome = "skipped"
        results[name] = (outcome, message)
    return results


def _only_fewer(message: str) -> bool:
    """True if a per-test failure ``message`` is a [rechecked]/[stale] expectation that the
    step met with a subset of the expected modules (its output had matched)."""
    match = _EXPECTATION.search(message)
    if match is None:
        return False
    actual = {m for m in match.group(1).split(", ") if m}
    expected = {m for m in match.group(2).split(", ") if m}
    return actual < expected


def counts(results: dict[str, tuple[str, str]]) -> str:
    c = {k: 0 for k in ("passed", "failed", "skipped")}
    for outcome, _ in results.values():
        c[outcome] += 1
    return f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "mypy-metastore-suite")
    parser.add_argument("-k", dest="keyword",
                        default=" or ".join(FILES), help="pytest -k expression")
    args = parser.parse_args(argv)
    work: Path = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    version = importlib.metadata.version("mypy")
    sdist = fetch_sdist(version, work)
    print(f"mypy {version}; sdist test data {sdist}")
    results = {mode: run_mode(mode, sdist, work, args.keyword) for mode in MODES}
    summaries = {mode: json.loads((work / mode / "summary.json").read_text())
                 for mode in MODES}
    ok = True
    stock_pass = {n for n, (o, _) in results["stock"].items() if o == "passed"}
    print()
    for mode in MODES:
        line = f"{mode:12} {counts(results[mode])}"
        if mode in ("per-test", "shared"):
            entries = summaries[mode]["entries"]
            wrote = sum(1 for v in entries.values() if v > 0)
            line += (f"; store written in {wrote}/{len(entries)} cases, "
                     f"{sum(entries.values())} entries")
            if wrote == 0:
                ok = False
                line += "  <- the store was never written: the seam did not intercept"
        print(line)
    for mode in ("per-test", "shared"):
        passed = {n for n, (o, _) in results[mode].items() if o == "passed"}
        lost, gained = sorted(stock_pass - passed), sorted(passed - stock_pass)
        print(f"{mode}: {len(lost)} cases fail where stock passes:")
        for name in lost:
            message = " ".join(results[mode][name][1].split())
            fewer = _only_fewer(message) if mode == "per-test" else False
            if not fewer:
                ok = False
            reason = ("only on a step that re-checked fewer modules than expected (the store "
                      "still holds the version the case returns to)" if fewer else "FAILURE")
            print(f"  {name.split('::')[-1]}: {reason}: {message[-200:]}")
        for name in gained:
            if mode == "per-test":
                ok = False
            print(f"{mode}: passes where stock does not: {name}")
    mypy_shared = {(d["case"], d["name"]): set(d["actual"]) - set(d["expected"])
                   for d in summaries["stock-shared"]["deviations"]}
    ours_total = summaries["shared"]["rechecked"]
    theirs_total = summaries["stock-shared"]["rechecked"]
    # JUnit names and pytest node ids differ; the case name ends both.
    theirs_passed = {n.split("::")[-1] for n, (o, _) in results["stock-shared"].items()
                     if o == "passed"}
    deviations = summaries["shared"]["deviations"]
    print(f"\nshared store: {len(deviations)} [rechecked]/[stale] expectations not met "
          f"(recorded, the case went on); mypy's own shared cache: "
          f"{len(summaries['stock-shared']['deviations'])}:")
    for d in deviations:
        more = set(d["actual"]) - set(d["expected"])
        theirs = mypy_shared.get((d["case"], d["name"]))
        if not more:
            why = ("re-checked fewer: the shared store already held "
                   + ", ".join(sorted(set(d["expected"]) - set(d["actual"]))))
        elif theirs is not None and more <= theirs:
            why = ("re-checked more (" + ", ".join(sorted(more)) + "), as mypy's own shared "
                   "cache does (" + ", ".join(sorted(theirs)) + ")")
        elif (d["case"].split("::")[-1] in theirs_passed
              and ours_total.get(d["case"], 0) <= theirs_total.get(d["case"], 0)):
            why = (f"re-checked more ({', '.join(sorted(more))}) in this step, no more over "
                   f"the case ({ours_total.get(d['case'], 0)} modules in all its steps; "
                   f"mypy's own shared cache {theirs_total.get(d['case'], 0)})")
        else:
            ok = False
            why = "re-checked MORE than expected and than mypy's own shared cache: " + \
                ", ".join(sorted(more - (theirs or set())))
        print(f"  {d['case'].split('::')[-1]} [{d['name']}] expected {d['expected']} "
              f"got {d['actual']}: {why}")
    print("\nmypy-suite: OK" if ok else "\nmypy-suite: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
