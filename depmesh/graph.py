"""Pure graph functions over the mesh: plain mappings in, plain data out.

The graph is given as ``inputs``: node -> the nodes it reads from. Every
function here is iterative (no recursion), so a deep mesh costs memory in
proportion to its size, not Python stack frames. Nothing here imports
Dagster; the asset graph is built from the same mapping at the edge.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

Inputs = Mapping[str, Sequence[str]]


def children_of(inputs: Inputs) -> dict[str, list[str]]:
    """Invert ``inputs`` into node -> the nodes that read it (sorted)."""
    children: dict[str, list[str]] = {name: [] for name in inputs}
    for name, ins in inputs.items():
        for parent in ins:
            children.setdefault(parent, []).append(name)
    for kids in children.values():
        kids.sort()
    return children


def find_cycle(inputs: Inputs) -> list[str] | None:
    """Return one dependency cycle as ``[a, b, ..., a]`` (each node reads
    the next one), or None when the graph is acyclic.
    Inputs naming unknown nodes are ignored here (the loader reports them)."""
    white, grey, black = 0, 1, 2
    colour = {name: white for name in inputs}
    for start in sorted(inputs):
        if colour[start] != white:
            continue
        colour[start] = grey
        path = [start]
        stack = [iter(sorted(inputs[start]))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                colour[path.pop()] = black
                continue
            if nxt not in colour:
                continue
            if colour[nxt] == grey:
                return path[path.index(nxt):] + [nxt]
            if colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                stack.append(iter(sorted(inputs[nxt])))
    return None


def topological_order(inputs: Inputs) -> list[str]:
    """Every node after all of its inputs; ties broken by name, so the order
    is stable. Raises ValueError naming a cycle if there is one."""
    indegree = {name: sum(1 for p in ins if p in inputs) for name, ins in inputs.items()}
    children = children_of(inputs)
    ready = [name for name, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for child in children.get(name, ()):
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, child)
    if len(order) != len(indegree):
        cycle = find_cycle(inputs) or []
        raise ValueError("dependency cycle: " + " -> ".join(cycle))
    return order


def _bfs(adjacency: Mapping[str, Sequence[str]], starts: Iterable[str]) -> dict[str, int]:
    depth: dict[str, int] = {}
    queue = deque((s, 0) for s in starts)
    seen = set(s for s, _ in queue)
    while queue:
        name, d = queue.popleft()
        for nxt in adjacency.get(name, ()):
            if nxt not in seen:
                seen.add(nxt)
                depth[nxt] = d + 1
                queue.append((nxt, d + 1))
    return depth


def downstream(inputs: Inputs, nodes: str | Iterable[str], children: Mapping[str, Sequence[str]] | None = None) -> dict[str, int]:
    """Every node reachable downstream of ``nodes`` -> its shortest depth
    (1 = reads the node directly). The start nodes themselves are excluded.
    Pass ``children`` (from children_of) when querying one mesh many times."""
    starts = [nodes] if isinstance(nodes, str) else list(nodes)
    found = _bfs(children if children is not None else children_of(inputs), starts)
    return {n: d for n, d in found.items() if n not in starts}


def upstream(inputs: Inputs, nodes: str | Iterable[str]) -> dict[str, int]:
    """Every node ``nodes`` read from, directly or not -> its shortest depth."""
    starts = [nodes] if isinstance(nodes, str) else list(nodes)
    found = _bfs(inputs, starts)
    return {n: d for n, d in found.items() if n not in starts}


def longest_chain(inputs: Inputs) -> int:
    """The number of nodes on the longest dependency chain (1 for a lone node)."""
    return len(longest_chain_path(inputs))


def longest_chain_path(inputs: Inputs) -> list[str]:
    """The nodes of one longest dependency chain, from its source down."""
    length: dict[str, int] = {}
    best_parent: dict[str, str | None] = {}
    for name in topological_order(inputs):
        parents = [p for p in inputs[name] if p in length]
        parent = max(parents, key=lambda p: (length[p], p), default=None)
        best_parent[name] = parent
        length[name] = 1 + (length[parent] if parent else 0)
    if not length:
        return []
    node: str | None = max(length, key=lambda n: (length[n], n))
    chain = []
    while node is not None:
        chain.append(node)
        node = best_parent[node]
    return chain[::-1]


def paths(inputs: Inputs, source: str, target: str, limit: int = 100,
          children: Mapping[str, Sequence[str]] | None = None, within: set[str] | None = None) -> list[list[str]]:
    """Up to ``limit`` simple paths from ``source`` down to ``target``, shortest
    first (an explicit stack, no recursion). A mesh with many diamonds has
    exponentially many paths; callers say when the limit cut them. ``within``
    (the source and everything downstream of it, when the caller has it) bounds
    the search for the target's ancestors to the nodes a path can pass."""
    children = children if children is not None else children_of(inputs)
    if within is None:
        can_reach = set(upstream(inputs, target)) | {target}
    else:
        can_reach, stack = {target}, [target]
        while stack:
            for parent in inputs.get(stack.pop(), ()):
                if parent in within and parent not in can_reach:
                    can_reach.add(parent)
                    stack.append(parent)
    if source not in can_reach:
        return []
    found: list[list[str]] = []
    stack: list[tuple[str, list[str]]] = [(source, [source])]
    while stack and len(found) < limit:
        node, path = stack.pop()
        if node == target:
            found.append(path)
            continue
        for child in reversed(children.get(node, ())):
            if child in can_reach and child not in path:
                stack.append((child, path + [child]))
    return sorted(found, key=lambda p: (len(p), p))


def reach_bitsets(inputs: Inputs) -> tuple[list[str], dict[str, int]]:
    """For every node at once, the set of nodes downstream of it, as Python
    int bitsets over the returned order: one pass in reverse topological order,
    so all-nodes impact figures cost O(edges) big-int ORs, not a BFS per node."""
    order = topological_order(inputs)
    index = {name: i for i, name in enumerate(order)}
    children = children_of(inputs)
    reach: dict[str, int] = {}
    for name in reversed(order):
        bits = 0
        for child in children.get(name, ()):
            bits |= (1 << index[child]) | reach[child]
        reach[name] = bits
    return order, reach
