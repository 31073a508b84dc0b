"""IRGraph: a step's nodes, their dataflow edges, topological order and cycle detection."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from sagellm.core.types import RequestId
from sagellm.scheduler_ir.types import IRNode


class IRCycleError(ValueError):
    """The graph has a cycle; ``cycle`` lists its node ids, first == last."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(f"IR graph has a cycle: {' -> '.join(cycle)}")


@dataclass(frozen=True)
class IRGraph:
    """Nodes of one scheduling step plus the requests it preempts first.

    Edges come from values: node B depends on node A when B inputs a value A outputs. Each
    value has at most one producer; values nobody produces are graph inputs (e.g. the KV
    already in the cache, ``"kv:r1@8"``). ``preempt`` request ids lose their KV before any
    node runs (recompute later).
    """

    nodes: tuple[IRNode, ...] = ()
    preempt: tuple[RequestId, ...] = ()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        producer: dict[str, str] = {}
        for n in self.nodes:
            if n.node_id in seen:
                raise ValueError(f"node_id {n.node_id!r} appears twice")
            seen.add(n.node_id)
            for v in n.outputs:
                if v in producer:
                    raise ValueError(
                        f"value {v!r} is output by both {producer[v]!r} and {n.node_id!r}"
                    )
                producer[v] = n.node_id

    def node(self, node_id: str) -> IRNode:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(node_id)

    def producers(self) -> dict[str, str]:
        """value name -> id of the node that outputs it."""
        return {v: n.node_id for n in self.nodes for v in n.outputs}

    def deps(self) -> dict[str, list[str]]:
        """node id -> ids of the nodes it depends on (in input order, deduplicated).
        Computed once per graph; do not mutate the result."""
        return self._deps

    @cached_property
    def _deps(self) -> dict[str, list[str]]:
        prod = self.producers()
        out: dict[str, list[str]] = {}
        for n in self.nodes:
            ds = [prod[v] for v in n.inputs if v in prod]
            out[n.node_id] = list(dict.fromkeys(ds))
        return out

    def find_cycle(self) -> list[str] | None:
        """One cycle as node ids ``[a, b, ..., a]``, or None when the graph is acyclic."""
        deps = self.deps()
        color: dict[str, int] = dict.fromkeys(deps, 0)  # 0 new, 1 on stack, 2 done
        for root in deps:
            if color[root]:
                continue
            stack: list[tuple[str, int]] = [(root, 0)]
            path: list[str] = []
            while stack:
                nid, i = stack.pop()
                if i == 0:
                    color[nid] = 1
                    path.append(nid)
                if i < len(deps[nid]):
                    stack.append((nid, i + 1))
                    d = deps[nid][i]
                    if color[d] == 1:
                        cyc = [*path[path.index(d) :], d]
                        return cyc[::-1]  # producer -> consumer order
                    if color[d] == 0:
                        stack.append((d, 0))
                else:
                    color[nid] = 2
                    path.pop()
        return None

    def topological_order(self) -> list[IRNode]:
        """Nodes so every producer precedes its consumers; ties keep insertion order
        (Kahn's algorithm with a heap on insertion index, O(E + N log N); cached per graph).

        Raises :class:`IRCycleError` naming the cycle when there is none.
        """
        return list(self._order)

    def sorted_graph(self) -> IRGraph:
        """The same graph with its nodes in topological order (raises IRCycleError)."""
        return IRGraph.presorted(self._order, self.preempt)

    @staticmethod
    def presorted(nodes: Iterable[IRNode], preempt: tuple[RequestId, ...] = ()) -> IRGraph:
        """A graph whose ``nodes`` the caller guarantees are in topological order (the order
        is cached instead of recomputed)."""
        g = IRGraph(tuple(nodes), preempt)
        g.__dict__["_order"] = g.nodes
        return g

    @cached_property
    def _order(self) -> tuple[IRNode, ...]:
        deps = self.deps()
        index = {n.node_id: i for i, n in enumerate(self.nodes)}
        indeg = [0] * len(self.nodes)
        users: list[list[int]] = [[] for _ in self.nodes]
        for nid, ds in deps.items():
            i = index[nid]
            indeg[i] = len(ds)
            for d in ds:
                users[index[d]].append(i)
        ready = [i for i, k in enumerate(indeg) if k == 0]
        heapq.heapify(ready)
        order: list[IRNode] = []
        while ready:
            i = heapq.heappop(ready)
            order.append(self.nodes[i])
            for u in users[i]:
                indeg[u] -= 1
                if indeg[u] == 0:
                    heapq.heappush(ready, u)
        if len(order) != len(self.nodes):
            raise IRCycleError(self.find_cycle() or [])
        return tuple(order)

    def of_type(self, *types: str) -> list[IRNode]:
        return [n for n in self.nodes if n.node_type in types]

    def with_nodes(self, nodes: Iterable[IRNode]) -> IRGraph:
        return IRGraph(tuple(nodes), self.preempt)
