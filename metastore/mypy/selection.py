"""Choosing one unit per module so that the chosen units agree with each other.

mypy accepts a module's cached result only if, for each of its dependencies, the
interface hash the unit *recorded* for it equals the interface hash of the unit loaded
for that dependency. mypy's serialized data is not a function of a module's source alone
(type variable ids drawn from a global counter, for one, depend on what the building
process did before), so two builds can leave two valid units for the same source that
exclude each other's dependents. Choosing each module's unit in isolation then strands
whole import cycles; the units have to be chosen as a set.

This is a constraint problem over the module graph: a variable per module, its values the
module's candidate units, and a binary constraint per dependency edge (the dependent's
recorded hash equals the dependency's interface hash). :func:`choose` solves it:

1. *Unit propagation*: modules with one candidate, and the ``fixed`` modules (already given
   to mypy), prune their neighbours' candidates - without ever emptying a domain: a module
   none of whose candidates fits is left to the best-effort step (mypy re-checks it).
2. The modules still ambiguous fall into independent components. In each, strict arc
   consistency, then a depth-first search that maintains it (MAC), trying candidates in
   ``rank`` order, finds a consistent set whenever one exists - within ``budget`` search
   steps for the whole call.
3. Where no consistent set exists (or the budget ran out), a local search from the
   preferred candidates minimises the number of disagreeing edges.

Knows nothing of mypy or of the store: module names, hashes and ranks in; a choice, the
reason for each and the cost out. Deterministic: the same input gives the same output.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import NamedTuple

#: Why a module got its candidate (see :class:`Outcome`).
ONLY = "only"  # the module has one candidate
SETTLED = "settled"  # one candidate was left once the others were ruled out
SEARCHED = "searched"  # chosen by the search, the set is consistent
BEST_EFFORT = "best-effort"  # no consistent set here (or out of budget): fewest mismatches

#: Search steps (tentative assignments) one call may take before it settles for best effort.
DEFAULT_BUDGET = 2000
_LOCAL_SEARCH_ROUNDS = 16


class Candidate(NamedTuple):
    """One unit a module could be given."""

    interface_hash: str
    #: (dependency, the interface hash this unit recorded for it). Dependencies that are
    #: neither in the problem nor ``fixed`` are unconstrained (mypy decides them anew).
    deps: Sequence[tuple[str, str]]
    #: Preference among the module's candidates: lower first (ties: list order).
    rank: tuple[int, ...] = ()
    #: Where the unit comes from (a run, a snapshot); candidates of the cohort of the
    #: already chosen neighbours are tried first in the search. None: no cohort.
    cohort: Hashable = None


class Outcome(NamedTuple):
    """What :func:`choose` decided."""

    chosen: dict[str, int]  # module -> index into its candidate list
    why: dict[str, str]  # module -> ONLY, SETTLED, SEARCHED or BEST_EFFORT
    #: Edges whose recorded hash differs from the chosen (or fixed) dependency's: mypy
    #: re-checks each such dependent. 0 when the choice is consistent.
    mismatches: int
    steps: int  # search steps taken
    ambiguous: int  # modules with more than one candidate left after unit propagation


def choose(candidates: Mapping[str, Sequence[Candidate]], fixed: Mapping[str, str] = {},
           *, budget: int = DEFAULT_BUDGET) -> Outcome:
    """Choose one candidate for each module of ``candidates`` with at least one.

    ``fixed`` maps modules whose unit is already decided (mypy may have read it) to its
    interface hash; they constrain the others and are never changed. A module in both is
    treated as fixed.

    Promise: if a choice exists in which every edge among the modules of ``candidates`` and
    ``fixed`` agrees, and the search finds it within ``budget`` steps, it is returned
    (``mismatches`` 0); among consistent choices the search prefers lower ``rank``. Never
    raises for any input of the declared types.
    """
    if all(len(cands) <= 1 for cands in candidates.values()):
        # Nothing to choose (the usual case in one checkout): no problem to build.
        chosen = {m: 0 for m, cands in candidates.items() if cands and m not in fixed}
        mismatches = mismatched_edges(candidates, fixed, chosen)
        why = dict.fromkeys(chosen, ONLY)
        why.update((m, BEST_EFFORT) for m, _ in mismatches)
        return Outcome(chosen, why, len(mismatches), 0, 0)
    return _Problem(candidates, fixed).solve(budget)


def mismatched_edges(candidates: Mapping[str, Sequence[Candidate]], fixed: Mapping[str, str],
                     chosen: Mapping[str, int]) -> list[tuple[str, str]]:
    """The (dependent, dependency) edges of ``chosen`` whose recorded hash differs from the
    interface hash of the dependency's chosen candidate (or its ``fixed`` hash)."""
    def current(module: str) -> str | None:
        if module in fixed:
            return fixed[module]
        index = chosen.get(module)
        return None if index is None else candidates[module][index].interface_hash

    return [(module, dep) for module, index in sorted(chosen.items())
            for dep, recorded in candidates[module][index].deps
            if dep != module and (have := current(dep)) is not None and have != recorded]


class _Problem:
    def __init__(self, candidates: Mapping[str, Sequence[Candidate]],
                 fixed: Mapping[str, str]) -> None:
        self.fixed = dict(fixed)
        self.cands = {m: list(c) for m, c in candidates.items() if c and m not in self.fixed}
        self.modules = sorted(self.cands)
        # hashes[m][i]; needs[m][i]: dependency -> recorded hash (within the problem);
        # a candidate recording two hashes for one dependency can never be consistent.
        self.hashes = {m: [c.interface_hash for c in cs] for m, cs in self.cands.items()}
        self.needs: dict[str, list[dict[str, str]]] = {}
        self.broken: dict[str, set[int]] = {}
        self.neighbours: dict[str, set[str]] = {m: set() for m in self.modules}
        for m, cs in self.cands.items():
            per: list[dict[str, str]] = []
            for i, c in enumerate(cs):
                need: dict[str, str] = {}
                for dep, recorded in c.deps:
                    if dep == m or (dep not in self.cands and dep not in self.fixed):
                        continue
                    if need.setdefault(dep, recorded) != recorded:
                        self.broken.setdefault(m, set()).add(i)
                    if dep in self.cands:
                        self.neighbours[m].add(dep)
                        self.neighbours[dep].add(m)
                per.append(need)
            self.needs[m] = per
        # Sorted, so that propagation visits arcs in one order whatever the hash seed.
        self.adjacent = {m: sorted(ns) for m, ns in self.neighbours.items()}
        self.settled: dict[str, int] = {}
        self.order = {m: _by_rank(cs) for m, cs in self.cands.items()}
        self.steps = 0

    # -- constraints ---------------------------------------------------------------------

    def fits_fixed(self, m: str, i: int) -> bool:
        if i in self.broken.get(m, ()):
            return False
        return all(self.fixed[dep] == h for dep, h in self.needs[m][i].items()
                   if dep in self.fixed)

    def compatible(self, x: str, i: int, y: str, j: int) -> bool:
        want = self.needs[x][i].get(y)
        if want is not None and want != self.hashes[y][j]:
            return False
        want = self.needs[y][j].get(x)
        return want is None or want == self.hashes[x][i]

    def revise(self, doms: dict[str, list[int]], x: str, y: str) -> bool:
        """Drop the values of ``x`` with no support in ``y``; True if any was dropped."""
        ys = doms[y]
        kept = [i for i in doms[x] if any(self.compatible(x, i, y, j) for j in ys)]
        if len(kept) == len(doms[x]):
            return False
        doms[x] = kept
        return True

    def propagate(self, doms: dict[str, list[int]], queue: deque[tuple[str, str]],
                  scope: set[str] | None = None, soft: bool = False) -> bool:
        """Arc consistency over the arcs in ``queue`` (and those they lead to, within
        ``scope``). False on a wiped-out domain (strict mode). In ``soft`` mode a revision
        that would empty a domain is not made."""
        while queue:
            x, y = queue.popleft()
            before = doms[x]
            if not self.revise(doms, x, y):
                continue
            if not doms[x]:
                if soft:
                    doms[x] = before
                    continue
                return False
            for z in self.adjacent[x]:
                if z != y and (scope is None or z in scope):
                    queue.append((z, x))
        return True

    # -- solving -------------------------------------------------------------------------

    def solve(self, budget: int) -> Outcome:
        why: dict[str, str] = {}
        doms: dict[str, list[int]] = {}
        for m in self.modules:
            fitting = [i for i in self.order[m] if self.fits_fixed(m, i)]
            doms[m] = fitting or list(self.order[m])
            if len(self.cands[m]) == 1:
                why[m] = ONLY
        # Unit propagation from the modules with one candidate left, never emptying.
        queue: deque[tuple[str, str]] = deque(
            (z, m) for m in self.modules if len(doms[m]) == 1 for z in self.adjacent[m])
        self.propagate(doms, queue, soft=True)
        ambiguous = [m for m in self.modules if len(doms[m]) > 1]
        chosen = {m: d[0] for m, d in doms.items() if len(d) == 1}
        self.settled = chosen
        for m in chosen:
            why.setdefault(m, SETTLED)
        remaining = budget
        for component in self.components(ambiguous, doms):
            solution = self.search(component, doms, remaining)
            remaining = max(0, budget - self.steps)
            if solution is not None:
                chosen.update(solution)
                why.update(dict.fromkeys(component, SEARCHED))
            else:
                chosen.update(self.local_search(component, doms, chosen))
                why.update(dict.fromkeys(component, BEST_EFFORT))
        # Modules whose candidate disagrees with anything around it are best effort.
        mismatches = mismatched_edges(self.cands, self.fixed, chosen)
        for m, _ in mismatches:
            why[m] = BEST_EFFORT
        return Outcome(chosen, why, len(mismatches), self.steps, len(ambiguous))

    def components(self, ambiguous: list[str], doms: dict[str, list[int]]) -> list[list[str]]:
        """Connected components of the ambiguous modules (their constraints among each
        other; settled modules separate them), each sorted, in order of their first
        module."""
        inside = set(ambiguous)
        seen: set[str] = set()
        result = []
        for start in ambiguous:
            if start in seen:
                continue
            seen.add(start)
            stack, members = [start], []
            while stack:
                m = stack.pop()
                members.append(m)
                for n in self.adjacent[m]:
                    if n in inside and n not in seen:
                        seen.add(n)
                        stack.append(n)
            result.append(sorted(members))
        return result

    def search(self, component: list[str], doms: dict[str, list[int]], budget: int
               ) -> dict[str, int] | None:
        """A consistent choice for ``component`` (given the settled modules around it), or
        None if there is none or it was not found within ``budget`` steps."""
        scope = set(component)
        # Values disagreeing with a settled neighbour (left by a propagation that could not
        # empty a domain) cannot be part of a consistent set.
        local = {m: [i for i in doms[m]
                     if all(self.compatible(m, i, n, self.settled[n])
                            for n in self.adjacent[m] if n in self.settled)]
                 for m in component}
        if not all(local.values()):
            return None
        arcs = deque((x, y) for x in component for y in self.adjacent[x] if y in scope)
        if not self.propagate(local, arcs, scope):
            return None
        return self._extend(local, scope, self.steps + budget)

    def _extend(self, local: dict[str, list[int]], scope: set[str], limit: int
                ) -> dict[str, int] | None:
        """Depth-first search maintaining arc consistency, from the consistent domains
        ``local``: a consistent choice, or None (none exists, or ``limit`` steps reached)."""
        stack: list[tuple[dict[str, list[int]], str, Iterator[int]]] = []
        current = local
        while True:
            open_ = [m for m in sorted(scope) if len(current[m]) > 1]
            if not open_:
                return {m: d[0] for m, d in current.items()}
            var = min(open_, key=lambda m: (len(current[m]), m))
            stack.append((current, var, iter(self._value_order(var, current))))
            while True:
                if not stack:
                    return None
                base, var, values = stack[-1]
                i = next(values, None)
                if i is None:
                    stack.pop()
                    continue
                if self.steps >= limit:
                    return None
                self.steps += 1
                trial = dict(base)
                trial[var] = [i]
                arcs = deque((z, var) for z in self.adjacent[var] if z in scope)
                if self.propagate(trial, arcs, scope):
                    current = trial
                    break

    def _value_order(self, var: str, local: dict[str, list[int]]) -> list[int]:
        """``var``'s remaining values: those of the cohort most of its settled neighbours
        have first, then by rank."""
        cands = self.cands[var]
        votes: dict[Hashable, int] = {}
        for n in self.adjacent[var]:
            d = local.get(n)
            index = d[0] if d is not None and len(d) == 1 else self.settled.get(n)
            if index is not None:
                cohort = self.cands[n][index].cohort
                if cohort is not None:
                    votes[cohort] = votes.get(cohort, 0) + 1
        position = {i: k for k, i in enumerate(self.order[var])}
        return sorted(local[var], key=lambda i: (-votes.get(cands[i].cohort, 0), position[i]))

    def local_search(self, component: list[str], doms: dict[str, list[int]],
                     settled: Mapping[str, int]) -> dict[str, int]:
        """Fewest mismatches, approximately: start from each module's preferred remaining
        candidate and re-choose, module by module, the candidate taking part in the fewest
        mismatched edges (its own and its dependents'), keeping the current one on ties,
        until nothing changes."""
        choice = {m: doms[m][0] for m in component}

        def hash_of(m: str) -> str | None:
            if m in self.fixed:
                return self.fixed[m]
            index = choice.get(m, settled.get(m))
            return None if index is None else self.hashes[m][index]

        def cost(m: str, i: int) -> int:
            count = sum(1 for dep, want in self.needs[m][i].items()
                        if (have := hash_of(dep)) is not None and have != want)
            mine = self.hashes[m][i]
            for n in self.adjacent[m]:
                index = choice.get(n, settled.get(n))
                if index is not None:
                    want = self.needs[n][index].get(m)
                    if want is not None and want != mine:
                        count += 1
            return count

        for _ in range(_LOCAL_SEARCH_ROUNDS):
            changed = False
            for m in component:
                current = choice[m]
                best = min(doms[m], key=lambda i: (cost(m, i), i != current))
                if best != current:
                    choice[m] = best
                    changed = True
            if not changed:
                break
        return choice


def _by_rank(cands: Sequence[Candidate]) -> list[int]:
    return sorted(range(len(cands)), key=lambda i: (cands[i].rank, i))


__all__ = ["Candidate", "Outcome", "choose", "mismatched_edges", "ONLY", "SETTLED",
           "SEARCHED", "BEST_EFFORT", "DEFAULT_BUDGET"]
