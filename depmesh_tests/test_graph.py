"""Pure graph functions, checked on hand-made graphs and against an
independent traversal on generated meshes (no Dagster involved)."""

from __future__ import annotations

import random

import pytest

from depmesh import graph

DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["d"], "x": []}


def test_downstream_depths_on_a_diamond():
    assert graph.downstream(DIAMOND, "a") == {"b": 1, "c": 1, "d": 2, "e": 3}
    assert graph.downstream(DIAMOND, "x") == {}
    assert graph.downstream(DIAMOND, ["b", "c"]) == {"d": 1, "e": 2}


def test_upstream_depths_on_a_diamond():
    assert graph.upstream(DIAMOND, "e") == {"d": 1, "b": 2, "c": 2, "a": 3}


def test_topological_order_puts_inputs_first_and_is_stable():
    order = graph.topological_order(DIAMOND)
    assert order == ["a", "b", "c", "d", "e", "x"]


def test_cycle_is_found_and_named():
    cyclic = {"a": ["c"], "b": ["a"], "c": ["b"], "d": []}
    cycle = graph.find_cycle(cyclic)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    with pytest.raises(ValueError, match="dependency cycle"):
        graph.topological_order(cyclic)
    assert graph.find_cycle(DIAMOND) is None


def test_deep_chain_needs_no_recursion():
    n = 50_000
    chain = {f"n{i}": ([f"n{i - 1}"] if i else []) for i in range(n)}
    assert graph.longest_chain(chain) == n
    assert len(graph.downstream(chain, "n0")) == n - 1
    assert graph.find_cycle(chain) is None


def random_mesh(n: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    names = [f"node{i:05d}" for i in range(n)]
    return {name: sorted(set(rng.sample(names[:i], k=min(i, rng.randint(0, 3))))) for i, name in enumerate(names)}


def reachable_by_closure(inputs: dict[str, list[str]], start: str) -> set[str]:
    """Independent check: grow the set until nothing new reads from it."""
    found: set[str] = set()
    frontier = {start}
    while frontier:
        frontier = {n for n, ins in inputs.items() if frontier & set(ins)} - found
        found |= frontier
    return found


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_graph_functions_match_an_independent_traversal(seed):
    mesh = random_mesh(300, seed)
    order = graph.topological_order(mesh)
    position = {n: i for i, n in enumerate(order)}
    assert all(position[p] < position[n] for n, ins in mesh.items() for p in ins)
    for start in random.Random(seed).sample(sorted(mesh), 20):
        down = graph.downstream(mesh, start)
        assert set(down) == reachable_by_closure(mesh, start)
        # depth is the shortest path: every node at depth d>1 has an input at depth d-1
        for node, depth in down.items():
            parents = [down.get(p, 0 if p == start else None) for p in mesh[node]]
            assert min(d for d in parents if d is not None) == depth - 1
        up = graph.upstream(mesh, start)
        assert all(start in graph.downstream(mesh, u) for u in up)


def all_paths_brute_force(inputs, source, target):
    """Independent check: extend every partial path by every child, breadth first."""
    children = {n: [c for c, ins in inputs.items() if n in ins] for n in inputs}
    done, frontier = [], [[source]]
    while frontier:
        grown = []
        for path in frontier:
            if path[-1] == target:
                done.append(path)
                continue
            grown.extend(path + [c] for c in children[path[-1]])
        frontier = grown
    return sorted(done, key=lambda p: (len(p), p))


@pytest.mark.parametrize("seed", [4, 5])
def test_paths_and_reach_bitsets_match_brute_force(seed):
    mesh = random_mesh(60, seed)
    order, reach = graph.reach_bitsets(mesh)
    index = {n: i for i, n in enumerate(order)}
    for start in sorted(mesh):
        expected = reachable_by_closure(mesh, start)
        assert {n for n in mesh if reach[start] >> index[n] & 1} == expected
        for target in sorted(expected)[:3]:
            brute = all_paths_brute_force(mesh, start, target)
            assert graph.paths(mesh, start, target, limit=10_000) == brute
            # bounded to the start's downstream region, as impact() asks: the same paths
            assert graph.paths(mesh, start, target, limit=10_000, within=expected | {start}) == brute


def test_paths_respect_the_limit():
    # a ladder of diamonds: 2^10 paths from top to bottom
    inputs = {"n0": []}
    for i in range(10):
        inputs[f"a{i}"] = [f"n{i}"]
        inputs[f"b{i}"] = [f"n{i}"]
        inputs[f"n{i + 1}"] = [f"a{i}", f"b{i}"]
    assert len(graph.paths(inputs, "n0", "n10", limit=10_000)) == 1024
    assert len(graph.paths(inputs, "n0", "n10", limit=50)) == 50
