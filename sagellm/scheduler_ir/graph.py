"""IRGraph: a step's nodes, their dataflow edges, topological order and cycle detection."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
        """node id -> ids of the nodes it depends on (in input order, deduplicated)."""
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
        """Nodes so every producer precedes its consumers; ties keep insertion order.

        Raises :class:`IRCycleError` naming the cycle when there is none.
        """
        deps = self.deps()
        cyc = self.find_cycle()
        if cyc is not None:
            raise IRCycleError(cyc)
        by_id = {n.node_id: n for n in self.nodes}
        indeg = {nid: len(ds) for nid, ds in deps.items()}
        users: dict[str, list[str]] = {nid: [] for nid in deps}
        for nid, ds in deps.items():
            for d in ds:
                users[d].append(nid)
        index = {n.node_id: i for i, n in enumerate(self.nodes)}
        ready = sorted((nid for nid, k in indeg.items() if k == 0), key=index.__getitem__)
        order: list[IRNode] = []
        while ready:
            nid = ready.pop(0)
            order.append(by_id[nid])
            for u in users[nid]:
                indeg[u] -= 1
                if indeg[u] == 0:
                    ready.append(u)
            ready.sort(key=index.__getitem__)
        return order

    def of_type(self, *types: str) -> list[IRNode]:
        return [n for n in self.nodes if n.node_type in types]

    def with_nodes(self, nodes: Iterable[IRNode]) -> IRGraph:
        return IRGraph(tuple(nodes), self.preempt)
