"""Tests of metastore.mypy.selection: choosing one candidate unit per module, consistently.

Unit tests on small synthetic module graphs (modules are strings, hashes like "h1"), then
property tests (hypothesis): a planted consistent solution must be found, a brute-force
oracle over all assignments of small problems, and output invariants on arbitrary input.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from metastore.mypy.selection import (
    BEST_EFFORT, DEFAULT_BUDGET, ONLY, SEARCHED, SETTLED, Candidate, Outcome, choose,
    mismatched_edges)

REPO = Path(__file__).resolve().parent.parent

Problem = dict[str, list[Candidate]]
Graph = Mapping[str, Sequence[str]]


# -- helpers ---------------------------------------------------------------------------------


def cohort_units(graph: Graph, cohort: int, rank: int,
                 differing: Sequence[str] | None = None) -> dict[str, Candidate]:
    """The units one build (``cohort``) leaves for ``graph`` (module -> its dependencies).

    The interface hash of a module in ``differing`` (all modules if None) depends on the
    build ("h<module><cohort>"); the others have the same hash in every build ("h<module>").
    Each unit records the hashes of its own build's dependencies."""
    def hash_of(module: str) -> str:
        if differing is None or module in differing:
            return f"h{module}{cohort}"
        return f"h{module}"

    return {m: Candidate(hash_of(m), [(d, hash_of(d)) for d in deps], (rank,), cohort)
            for m, deps in graph.items()}


def two_cohorts(graph: Graph, first: int = 1, differing: Sequence[str] | None = None
                ) -> Problem:
    """Candidates from two builds (cohorts 1 and 2) for every module; cohort ``first`` has
    the lower rank, but is listed second (so list order alone does not decide)."""
    one = cohort_units(graph, 1, 0 if first == 1 else 1, differing)
    two = cohort_units(graph, 2, 0 if first == 2 else 1, differing)
    return {m: [two[m], one[m]] for m in graph}


def preferred(cands: Sequence[Candidate]) -> int:
    """The index of the best-ranked candidate (ties: list order)."""
    return min(range(len(cands)), key=lambda i: (cands[i].rank, i))


def cohorts_of(candidates: Mapping[str, Sequence[Candidate]],
               chosen: Mapping[str, int]) -> dict[str, Hashable]:
    return {m: candidates[m][i].cohort for m, i in chosen.items()}


def assert_valid(candidates: Mapping[str, Sequence[Candidate]], fixed: Mapping[str, str],
                 out: Outcome) -> None:
    """Invariants of every Outcome, whatever the input."""
    expected = {m for m, cs in candidates.items() if cs and m not in fixed}
    assert set(out.chosen) == expected
    assert set(out.why) == expected
    for m, i in out.chosen.items():
        assert 0 <= i < len(candidates[m]), (m, i)
    assert set(out.why.values()) <= {ONLY, SETTLED, SEARCHED, BEST_EFFORT}
    assert out.mismatches == len(mismatched_edges(candidates, fixed, out.chosen))
    assert out.steps >= 0
    assert 0 <= out.ambiguous <= len(expected)


def count_mismatches(candidates: Mapping[str, Sequence[Candidate]], fixed: Mapping[str, str],
                     assignment: Mapping[str, int]) -> int:
    """Independent oracle: recorded (dependency, hash) entries of the assigned units that
    disagree with the dependency's assigned (or fixed) interface hash. Dependencies that are
    neither assigned nor fixed are unconstrained."""
    count = 0
    for m, i in assignment.items():
        for dep, recorded in candidates[m][i].deps:
            if dep in fixed:
                actual: str | None = fixed[dep]
            elif dep in assignment:
                actual = candidates[dep][assignment[dep]].interface_hash
            else:
                actual = None
            if actual is not None and actual != recorded:
                count += 1
    return count


def brute_force_minimum(candidates: Mapping[str, Sequence[Candidate]],
                        fixed: Mapping[str, str]) -> int:
    modules = sorted(m for m, cs in candidates.items() if cs and m not in fixed)
    return min(count_mismatches(candidates, fixed, dict(zip(modules, combo)))
               for combo in itertools.product(*(range(len(candidates[m])) for m in modules)))


DIAMOND: dict[str, list[str]] = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}
CYCLE: dict[str, list[str]] = {"a": ["b"], "b": ["a", "c"], "c": ["b"]}


# -- diamond -----------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [1, 2])
@pytest.mark.parametrize("differing", [["d"], None], ids=["leaf-only", "cascading"])
def test_diamond_two_cohorts_consistent_and_from_one_cohort(
        first: int, differing: list[str] | None) -> None:
    cands = two_cohorts(DIAMOND, first, differing)
    out = choose(cands)
    assert_valid(cands, {}, out)
    assert out.mismatches == 0
    assert mismatched_edges(cands, {}, out.chosen) == []
    assert set(cohorts_of(cands, out.chosen).values()) == {first}


@pytest.mark.parametrize("first", [1, 2])
def test_diamond_single_candidate_pulls_graph_to_its_cohort(first: int) -> None:
    # Every hash depends on the build: a's only unit (cohort 2) fits only cohort 2's b, c,
    # which fit only cohort 2's d - whichever cohort is ranked first.
    cands = two_cohorts(DIAMOND, first)
    cands["a"] = [c for c in cands["a"] if c.cohort == 2]
    out = choose(cands)
    assert_valid(cands, {}, out)
    assert out.mismatches == 0
    assert cohorts_of(cands, out.chosen) == dict.fromkeys(DIAMOND, 2)
    assert out.why["a"] == ONLY


def test_diamond_single_candidate_cohort_is_tried_first_by_its_neighbours() -> None:
    # Only the leaf's hash differs between the builds, so a's only unit (cohort 2) fits b
    # and c of both cohorts and both {b, c, d} sets are consistent. Candidate.cohort's
    # contract: "candidates of the cohort of the already chosen neighbours are tried first
    # in the search" - a is chosen (ONLY) before the search, so b, c (and then d) should take
    # cohort 2 although cohort 1 is ranked first.
    cands = two_cohorts(DIAMOND, first=1, differing=["d"])
    cands["a"] = [c for c in cands["a"] if c.cohort == 2]
    out = choose(cands)
    assert_valid(cands, {}, out)
    assert out.mismatches == 0
    assert cohorts_of(cands, out.chosen) == dict.fromkeys(DIAMOND, 2), (
        f"cohorts {cohorts_of(cands, out.chosen)}: the cohort of a, settled before the "
        "search, must order its neighbours' candidates")


# -- cycles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [1, 2])
def test_cycle_two_cohorts_consistent(first: int) -> None:
    cands = two_cohorts(CYCLE, first)
    out = choose(cands)
    assert_valid(cands, {}, out)
    assert out.mismatches == 0
    assert set(cohorts_of(cands, out.chosen).values()) == {first}
    assert BEST_EFFORT not in out.why.values()


@pytest.mark.parametrize("first", [1, 2])
@pytest.mark.parametrize("fits", [1, 2])
def test_cycle_fixed_outside_dependency_selects_fitting_cohort(first: int, fits: int) -> None:
    # c imports "ext", outside the problem and already given to mypy (fixed); each build's c
    # recorded that build's ext hash, and only cohort ``fits`` matches the fixed one.
    graph = {**CYCLE, "c": ["b", "ext"]}
    cands = two_cohorts(graph, first)
    fixed = {"ext": f"hext{fits}"}
    out = choose(cands, fixed)
    assert_valid(cands, fixed, out)
    assert out.mismatches == 0
    assert cohorts_of(cands, out.chosen) == dict.fromkeys(CYCLE, fits)


# -- greedy trap -------------------------------------------------------------------------------


def test_choose_consistent_where_rank_first_greedy_choice_mismatches() -> None:
    # Two builds disagree on the leaf d; its dependents p, q, r (and t above them) prefer
    # different builds, so taking every module's best-ranked unit mismatches.
    graph = {"t": ["p", "q", "r"], "p": ["d"], "q": ["d"], "r": ["d"], "d": []}
    cands = two_cohorts(graph, first=1, differing=["d"])
    for m in ("p", "r"):
        cands[m] = [c._replace(rank=(1 - c.rank[0],)) for c in cands[m]]  # prefer cohort 2
    greedy = {m: preferred(cs) for m, cs in cands.items()}
    assert mismatched_edges(cands, {}, greedy) != []  # the trap is real
    out = choose(cands)
    assert_valid(cands, {}, out)
    assert out.mismatches == 0
    assert mismatched_edges(cands, {}, out.chosen) == []
    chosen = cohorts_of(cands, out.chosen)
    assert chosen["p"] == chosen["q"] == chosen["r"] == chosen["d"]


# -- missing units -----------------------------------------------------------------------------


@pytest.mark.parametrize("listed", [False, True], ids=["absent", "empty-list"])
def test_dependency_without_candidates_is_unconstrained(listed: bool) -> None:
    cands: Problem = {
        "a": [Candidate("ha1", [("z", "hz1")], (1,)), Candidate("ha2", [("z", "hz2")], (0,))],
        "b": [Candidate("hb", [("z", "hz3"), ("a", "ha2")])],
    }
    if listed:
        cands["z"] = []
    out = choose(cands)
    assert_valid(cands, {}, out)
    assert "z" not in out.chosen
    assert out.mismatches == 0
    assert mismatched_edges(cands, {}, out.chosen) == []
    assert out.chosen == {"a": 1, "b": 0}


@pytest.mark.parametrize("n_candidates", [1, 2])
def test_fixed_hash_no_candidate_recorded_is_best_effort(n_candidates: int) -> None:
    # m imports f, already given to mypy with a hash none of m's units recorded. n imports
    # m; k is unrelated. Only the edge m -> f can mismatch.
    cands: Problem = {
        "m": [Candidate(f"hm{k}", [("f", f"hf-old{k}")], (k,), k)
              for k in range(1, n_candidates + 1)],
        "n": [Candidate(f"hn{k}", [("m", f"hm{k}")], (k,), k) for k in (1, 2)],
        "k": [Candidate("hk1", [("n", "hn9")], (0,), 1), Candidate("hk2", [], (1,), 2)],
    }
    fixed = {"f": "hf-new"}
    out = choose(cands, fixed)
    assert_valid(cands, fixed, out)
    assert out.mismatches == 1
    assert mismatched_edges(cands, fixed, out.chosen) == [("m", "f")]
    assert out.why["m"] == BEST_EFFORT, (
        f"m's recorded hash of f mismatches, but why[m] == {out.why['m']!r} "
        "(SEARCHED promises a consistent set)")
    assert out.why["n"] != BEST_EFFORT and out.why["k"] != BEST_EFFORT


# -- ranks and determinism -----------------------------------------------------------------------


@pytest.mark.parametrize("first", [1, 2])
def test_lower_rank_wins_among_consistent_sets(first: int) -> None:
    # Both cohorts are consistent for the cycle; an isolated module has three consistent
    # candidates; ties in rank go by list order.
    cands = two_cohorts(CYCLE, first)
    cands["solo"] = [Candidate("s0", [], (2,)), Candidate("s1", [], (0, 5)),
                     Candidate("s2", [], (0, 7))]
    cands["tie"] = [Candidate("t0", [], (1,)), Candidate("t1", [], (0,)),
                    Candidate("t2", [], (0,))]
    out = choose(cands)
    assert_valid(cands, {}, out)
    assert out.mismatches == 0
    assert cohorts_of(cands, {m: out.chosen[m] for m in CYCLE}) == dict.fromkeys(CYCLE, first)
    assert out.chosen["solo"] == 1
    assert out.chosen["tie"] == 1


def _mixed_problem() -> tuple[Problem, dict[str, str]]:
    """Two cycles (one importing a fixed outside module), a greedy trap, a module whose
    recorded hash of a fixed module is stale, and the order-sensitive problem below."""
    cands: Problem = {}
    cands.update(two_cohorts(CYCLE, 2))
    cands.update(two_cohorts({"k": ["l", "ext"], "l": ["n"], "n": ["k"]}, 1))
    graph = {"t": ["g", "h"], "g": ["d"], "h": ["d"], "d": []}
    trap = two_cohorts(graph, 1, differing=["d"])
    trap["g"] = [c._replace(rank=(1 - c.rank[0],)) for c in trap["g"]]
    cands.update(trap)
    cands["stale"] = [Candidate("hst1", [("gone", "old"), ("t", "ht1")], (1,)),
                      Candidate("hst2", [("gone", "older"), ("t", "ht2")], (0,))]
    order_sensitive = _order_sensitive_problem()
    assert not set(order_sensitive) & set(cands)
    cands.update(order_sensitive)
    return cands, {"ext": "hext1", "gone": "hgone"}


def _permuted(cands: Problem, fixed: dict[str, str], seed: int
              ) -> tuple[Problem, dict[str, str]]:
    rng = random.Random(seed)
    keys = list(cands)
    rng.shuffle(keys)
    fixed_keys = list(fixed)
    rng.shuffle(fixed_keys)
    return {k: list(cands[k]) for k in keys}, {k: fixed[k] for k in fixed_keys}


def test_deterministic_same_input_and_permuted_insertion_order() -> None:
    cands, fixed = _mixed_problem()
    first = choose(cands, fixed)
    assert_valid(cands, fixed, first)
    assert first.mismatches > 0  # also covers the best-effort paths
    assert choose(cands, fixed) == first
    for seed in range(20):
        assert choose(*_permuted(cands, fixed, seed)) == first, seed


def _order_sensitive_problem() -> Problem:
    """No consistent set: w needs p1 with q0 or p0 with q1, but s (one unit) forces x1, which
    forces p1 and q1. Unit propagation reaches w from p and from q, and whichever comes first
    decides w: that order must depend neither on the hash seed nor on insertion order."""
    return {
        "s": [Candidate("hs1", [])],
        "x": [Candidate("hx0", [("s", "bad")]), Candidate("hx1", [("s", "hs1")])],
        "p": [Candidate("hp0", [("x", "hx0")]), Candidate("hp1", [("x", "hx1")])],
        "q": [Candidate("hq0", [("x", "hx0")]), Candidate("hq1", [("x", "hx1")])],
        "w": [Candidate("hw0", [("p", "hp1"), ("q", "hq0")]),
              Candidate("hw1", [("p", "hp0"), ("q", "hq1")])],
    }


def test_deterministic_across_processes_with_different_hash_seeds() -> None:
    # "Deterministic: the same input gives the same output" - also in another process, where
    # str hashes (and so set iteration order) differ; and whatever the insertion order (which
    # can change set iteration order, depending on the hash seed).
    cands, fixed = _mixed_problem()
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from metastore.mypy.selection import Candidate, choose\n"
        f"print(choose({_order_sensitive_problem()!r}))\n"
        + "".join(f"print(choose({c!r}, {f!r}))\n"
                  for c, f in [_permuted(cands, fixed, seed) for seed in range(6)])
    )
    outputs: dict[int, list[str]] = {}
    for seed in range(8):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env=env, timeout=60, check=True)
        outputs[seed] = proc.stdout.splitlines()
        assert len(outputs[seed]) == 7
        assert len(set(outputs[seed][1:])) == 1, (
            f"with PYTHONHASHSEED={seed}, choose's outcome depends on insertion order:\n"
            + "\n".join(outputs[seed][1:]))
    assert len({tuple(lines) for lines in outputs.values()}) == 1, (
        "choose's outcome depends on PYTHONHASHSEED:\n"
        + "\n".join(f"  seed {s}: {lines[0]}" for s, lines in outputs.items()))


# -- malformed candidates ------------------------------------------------------------------------


@pytest.mark.parametrize("dep_kind", ["single", "ambiguous", "fixed"])
def test_candidate_recording_two_hashes_for_one_dependency_is_avoided(dep_kind: str) -> None:
    cands: Problem = {
        "a": [Candidate("ha0", [("b", "hb"), ("b", "hx")], (0,)),  # preferred, but broken
              Candidate("ha1", [("b", "hb")], (1,))],
    }
    fixed: dict[str, str] = {}
    if dep_kind == "single":
        cands["b"] = [Candidate("hb", [])]
    elif dep_kind == "ambiguous":
        cands["b"] = [Candidate("hx", [], (0,)), Candidate("hb", [], (1,))]
    else:
        fixed["b"] = "hb"
    out = choose(cands, fixed)
    assert_valid(cands, fixed, out)
    assert out.chosen["a"] == 1
    assert out.mismatches == 0
    if dep_kind == "ambiguous":
        assert out.chosen["b"] == 1


def test_self_dependency_does_not_prevent_consistent_choice() -> None:
    # A unit recording a hash for its own module. choose and mismatched_edges must agree on
    # self edges: either both ignore them, or choose takes a2 - either way no mismatch.
    # mypy itself drops self-imports, so this is an edge case of the API, not of real data.
    cands: Problem = {"a": [Candidate("ha1", [("a", "hzz")], (0,)),
                            Candidate("ha2", [("a", "ha2")], (1,))]}
    out = choose(cands)
    assert_valid(cands, {}, out)
    assert mismatched_edges(cands, {}, {"a": 1}) == []  # a consistent choice exists
    assert out.mismatches == 0, (
        f"chose {out.chosen}, mismatching {mismatched_edges(cands, {}, out.chosen)}")


# -- budget ----------------------------------------------------------------------------------


def _needs_search() -> Problem:
    """Two independent components {a, b} and {c, d}, each with two consistent cohorts and
    arc consistent as given: only search (or luck) decides. Cohort 2 is preferred by b
    and d, cohort 1 by a and c: the preferred candidates mismatch."""
    cands = two_cohorts({"a": ["b"], "b": []}, 1)
    cands.update(two_cohorts({"c": ["d"], "d": []}, 1))
    for m in ("b", "d"):
        cands[m] = [c._replace(rank=(1 - c.rank[0],)) for c in cands[m]]
    return cands


@pytest.mark.parametrize("budget", [0, -5])
def test_no_budget_falls_back_to_best_effort(budget: int) -> None:
    cands = _needs_search()
    out = choose(cands, budget=budget)
    assert_valid(cands, {}, out)
    assert out.steps == 0
    assert out.ambiguous == 4
    assert out.why == dict.fromkeys(cands, BEST_EFFORT)


def test_default_budget_is_consistent() -> None:
    cands = _needs_search()
    out = choose(cands)
    assert_valid(cands, {}, out)
    assert out.mismatches == 0
    assert out.why == dict.fromkeys(cands, SEARCHED)
    assert 0 < out.steps <= DEFAULT_BUDGET


def test_budget_is_shared_by_the_components_of_one_call() -> None:
    cands = _needs_search()
    out = choose(cands, budget=1)
    assert_valid(cands, {}, out)
    assert out.steps == 1
    # The first component (in module order) is solved with the one step, the second not.
    assert out.why == {"a": SEARCHED, "b": SEARCHED, "c": BEST_EFFORT, "d": BEST_EFFORT}
    assert mismatched_edges(cands, {}, {"a": out.chosen["a"], "b": out.chosen["b"]}) == []


# -- mismatched_edges -------------------------------------------------------------------------


def test_mismatched_edges_reports_exactly_the_disagreeing_edges() -> None:
    cands: Problem = {
        "a": [Candidate("ha", [("b", "hb"), ("c", "hc-old"), ("f", "hf"), ("z", "hz")])],
        "b": [Candidate("hb0", [("c", "hc")]), Candidate("hb", [("c", "hc"), ("f", "hf-old")])],
        "c": [Candidate("hc", [("a", "ha")]), Candidate("hc2", [("a", "ha-old")])],
        "e": [],
    }
    fixed = {"f": "hf", "c": "hc"}  # c is fixed: its candidates are not chosen
    chosen = {"a": 0, "b": 1}
    # a -> b agrees, a -> c (fixed hc) differs, a -> f agrees, a -> z unconstrained;
    # b -> c agrees, b -> f differs.
    assert mismatched_edges(cands, fixed, chosen) == [("a", "c"), ("b", "f")]
    assert mismatched_edges(cands, fixed, {"a": 0, "b": 0}) == [("a", "b"), ("a", "c")]
    # Without fixed modules: a -> c, b -> c and c -> a disagree; a -> f, b -> f unconstrained.
    assert mismatched_edges(cands, {}, {"a": 0, "b": 1, "c": 1}) == [
        ("a", "c"), ("b", "c"), ("c", "a")]
    assert mismatched_edges(cands, {}, {"a": 0}) == []  # b, c unchosen: unconstrained
    # Each recorded entry counts: a unit recording two hashes for one dependency.
    dup: Problem = {"x": [Candidate("hx", [("y", "h1"), ("y", "h2"), ("y", "h3")])],
                    "y": [Candidate("h1", [])]}
    assert mismatched_edges(dup, {}, {"x": 0, "y": 0}) == [("x", "y"), ("x", "y")]


def test_settled_neighbour_constrains_the_search() -> None:
    # Minimal case: s (one unit) rules out y0; then x0 loses its support and x settles on x1,
    # which needs y1. y still has y1 and y2 (y2 preferred); y2 contradicts the settled x1.
    cands: Problem = {
        "s": [Candidate("hs1", [])],
        "y": [Candidate("hy0", [("s", "bad")], (2,)), Candidate("hy1", [("s", "hs1")], (1,)),
              Candidate("hy2", [("s", "hs1")], (0,))],
        "x": [Candidate("hx0", [("y", "hy0")]), Candidate("hx1", [("y", "hy1")])],
    }
    assert mismatched_edges(cands, {}, {"s": 0, "y": 1, "x": 1}) == []  # consistent set
    out = choose(cands)
    assert_valid(cands, {}, out)
    assert out.mismatches == 0, (
        f"chose {out.chosen} ({out.why}): mismatched {mismatched_edges(cands, {}, out.chosen)}")
    assert out.chosen == {"s": 0, "y": 1, "x": 1}


# -- property tests ----------------------------------------------------------------------------

ALPHABET = ["h0", "h1", "h2"]
COHORTS: list[Hashable] = [None, 1, 2, "snap"]

PlantedProblem = tuple[Problem, dict[str, str], dict[str, Candidate]]


@st.composite
def planted_problems(draw: st.DrawFn) -> PlantedProblem:
    """A random graph (cycles allowed), a planted unit per module consistent with all the
    others and with the fixed modules, plus 0..3 decoys per module whose hashes come from
    the same small alphabet (their recorded hashes also from the planted ones, so decoys
    often partially agree), random ranks and cohorts, in random order."""
    n = draw(st.integers(2, 12))
    names = [f"m{i}" for i in range(n)]
    deps = {m: draw(st.lists(st.sampled_from([x for x in names if x != m] + ["ext"]),
                             unique=True, max_size=3)) for m in names}
    truth = {m: draw(st.sampled_from(ALPHABET)) for m in names + ["ext"]}
    fixed = {m: truth[m] for m in draw(st.lists(st.sampled_from(names), unique=True,
                                                max_size=n // 3))}
    ranks = st.tuples(st.integers(0, 3))
    cands: Problem = {}
    planted: dict[str, Candidate] = {}
    for m in names:
        true = Candidate(truth[m], [(d, truth[d]) for d in deps[m]], draw(ranks),
                         draw(st.sampled_from(COHORTS)))
        if m in fixed and draw(st.booleans()):
            continue  # a fixed module may or may not have candidates too
        decoys = []
        for _ in range(draw(st.sampled_from([0, 1, 2, 3, 3]))):
            recorded = [(d, draw(st.sampled_from([truth[d], *ALPHABET]))) for d in deps[m]]
            if recorded and draw(st.integers(0, 9)) == 0:
                recorded.append((recorded[0][0], draw(st.sampled_from(ALPHABET))))
            decoys.append(Candidate(draw(st.sampled_from(ALPHABET)), recorded, draw(ranks),
                                    draw(st.sampled_from(COHORTS))))
        cands[m] = list(draw(st.permutations([true, *decoys])))
        planted[m] = true
    order = draw(st.permutations(list(cands)))
    return {m: cands[m] for m in order}, fixed, planted


def random_planted_problem(rng: random.Random) -> PlantedProblem:
    """The same kind of problem as planted_problems, drawn with ``rng`` (uniformly: many
    cheap examples, where hypothesis favours small and simple ones)."""
    n = rng.randint(2, 12)
    names = [f"m{i}" for i in range(n)]
    deps = {m: rng.sample([x for x in names if x != m] + ["ext"], rng.randint(0, min(n, 4)))
            for m in names}
    truth = {m: rng.choice(ALPHABET) for m in names + ["ext"]}
    fixed = {m: truth[m] for m in rng.sample(names, rng.randint(0, n // 3))}
    cands: Problem = {}
    planted: dict[str, Candidate] = {}
    for m in names:
        if m in fixed and rng.random() < 0.5:
            continue
        true = Candidate(truth[m], [(d, truth[d]) for d in deps[m]], (rng.randint(0, 3),),
                         rng.choice(COHORTS))
        units = [true] + [
            Candidate(rng.choice(ALPHABET), [(d, rng.choice(ALPHABET)) for d in deps[m]],
                      (rng.randint(0, 3),), rng.choice(COHORTS))
            for _ in range(rng.randint(0, 3))]
        rng.shuffle(units)
        cands[m] = units
        planted[m] = true
    return cands, fixed, planted


def check_planted(problem: PlantedProblem) -> None:
    cands, fixed, planted = problem
    truth = {m: cands[m].index(c) for m, c in planted.items() if m not in fixed}
    assert count_mismatches(cands, fixed, truth) == 0  # the generator is right
    out = choose(cands, fixed)
    assert_valid(cands, fixed, out)
    assert out.mismatches == 0, (
        f"a consistent set exists ({truth}) but choose returned {out} mismatching "
        f"{mismatched_edges(cands, fixed, out.chosen)} for\n{cands!r}, fixed={fixed!r}")
    assert mismatched_edges(cands, fixed, out.chosen) == []


@settings(max_examples=200, deadline=None)
@given(planted_problems())
def test_property_planted_solution_is_found(problem: PlantedProblem) -> None:
    check_planted(problem)


@settings(max_examples=600, deadline=None)
@given(st.integers(0, 2 ** 64))
def test_property_planted_solution_is_found_uniform(seed: int) -> None:
    check_planted(random_planted_problem(random.Random(seed)))


@st.composite
def small_problems(draw: st.DrawFn, self_deps: bool = False
                   ) -> tuple[Problem, dict[str, str]]:
    """Up to 6 modules with up to 3 candidates each (possibly none), hashes from an alphabet
    of 2 or 3 values, dependencies on each other, on a fixed-only module "fx" and on an
    unknown module "ext"; some problem modules fixed as well. Recorded hashes are drawn
    from the dependency's actual hashes and the alphabet, so that most problems have a
    consistent assignment and the rest come close."""
    alphabet = ALPHABET[:draw(st.integers(2, 3))]
    n = draw(st.integers(1, 6))
    names = [f"m{i}" for i in range(n)]
    fixed = {m: draw(st.sampled_from(alphabet))
             for m in draw(st.lists(st.sampled_from([*names, "fx"]), unique=True, max_size=3))}
    hashes = {m: draw(st.lists(st.sampled_from(alphabet), max_size=3)) for m in names}
    cands: Problem = {}
    for m in names:
        targets = [x for x in names if self_deps or x != m] + ["fx", "ext"]
        deps = draw(st.lists(st.sampled_from(targets), unique=True, max_size=3))
        units = []
        for h in hashes[m]:
            recorded = []
            for d in deps:
                actual = [fixed[d]] if d in fixed else hashes.get(d, [])
                recorded.append((d, draw(st.sampled_from(list(dict.fromkeys(
                    [*actual, *alphabet]))))))
            if recorded and draw(st.integers(0, 9)) == 0:
                recorded.append((recorded[0][0], draw(st.sampled_from(alphabet))))
            units.append(Candidate(h, recorded, (draw(st.integers(0, 2)),),
                                   draw(st.sampled_from(COHORTS))))
        cands[m] = units
    return cands, fixed


@settings(max_examples=200, deadline=None)
@given(small_problems())
def test_property_brute_force_oracle(problem: tuple[Problem, dict[str, str]]) -> None:
    cands, fixed = problem
    best = brute_force_minimum(cands, fixed)
    out = choose(cands, fixed)
    assert_valid(cands, fixed, out)
    assert out.mismatches == count_mismatches(cands, fixed, out.chosen)
    assert out.mismatches >= best
    if best == 0:
        assert out.mismatches == 0, (out, mismatched_edges(cands, fixed, out.chosen))


@settings(max_examples=200, deadline=None)
@given(small_problems(self_deps=True), st.sampled_from([-1, 0, 1, 3, DEFAULT_BUDGET]))
def test_property_chosen_indices_in_range_for_any_input(
        problem: tuple[Problem, dict[str, str]], budget: int) -> None:
    cands, fixed = problem
    out = choose(cands, fixed, budget=budget)  # never raises
    assert_valid(cands, fixed, out)
    assert out.steps <= max(budget, 0)


@settings(max_examples=200, deadline=None)
@given(small_problems())
def test_property_dependents_of_mismatched_edges_are_best_effort(
        problem: tuple[Problem, dict[str, str]]) -> None:
    # Every module but BEST_EFFORT ones comes with a consistency claim (ONLY/SETTLED: nothing
    # contradicts it; SEARCHED: "the set is consistent").
    cands, fixed = problem
    out = choose(cands, fixed)
    for dependent, dependency in mismatched_edges(cands, fixed, out.chosen):
        assert out.why[dependent] == BEST_EFFORT, (dependent, dependency, out)


@settings(max_examples=200, deadline=None)
@given(small_problems())
def test_property_rank_first_choice_kept_when_consistent(
        problem: tuple[Problem, dict[str, str]]) -> None:
    # Without cohorts, the order of preference is rank alone: if every module's best-ranked
    # candidate already agrees with the others, that is the choice.
    cands, fixed = problem
    cands = {m: [c._replace(cohort=None) for c in cs] for m, cs in cands.items()}
    first = {m: preferred(cs) for m, cs in cands.items() if cs and m not in fixed}
    assume(count_mismatches(cands, fixed, first) == 0)
    out = choose(cands, fixed)
    assert out.chosen == first
    assert out.mismatches == 0
