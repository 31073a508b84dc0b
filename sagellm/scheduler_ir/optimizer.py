"""IROptimizer: validates a step's graph and rewrites it for execution.

Passes, in order (each keeps the graph acyclic and its external inputs/outputs intact):

1. ``validate``     topological order; a cycle raises :class:`IRCycleError` naming it.
2. ``merge_chunks`` consecutive prefill chunks of one request become one prefill while their
                    sum stays within ``max_num_batched_tokens``; the kv_store/kv_load pairs
                    between merged chunks disappear.
3. ``fuse``         forward nodes with no forward between them (a "wave") become one batched
                    ``forward`` whose ``items`` keep their order; the wave's ``sample`` and
                    ``kv_store`` nodes fuse likewise. A chain that does not fit one wave (a
                    request's chunks beyond the budget) gives further waves, run in order.
4. ``bucket``       ``all_reduce`` nodes under ``small_all_reduce_bytes`` with the same
                    producers, layer and part merge into buckets of at most ``bucket_bytes``
                    (never across layers: a layer's reduction is needed before the next
                    layer runs, so only the per-request reductions of one layer can share
                    a collective).
5. ``hoist``        ``kv_load`` nodes that read only pre-existing KV go first, flagged
                    ``hoisted`` so an executor may overlap them with the previous forward.
"""

from __future__ import annotations

from collections.abc import Iterable

from sagellm.scheduler_ir.graph import IRGraph
from sagellm.scheduler_ir.types import IRNode, node_config


def contract(nodes: list[IRNode], node_id: str, node_type: str, config) -> IRNode:
    """One node standing for ``nodes``: values produced and consumed inside disappear."""
    produced = {v for n in nodes for v in n.outputs}
    consumed = {v for n in nodes for v in n.inputs}
    ins = [v for n in nodes for v in n.inputs if v not in produced]
    outs = [v for n in nodes for v in n.outputs if v not in consumed]
    return IRNode(
        node_id,
        node_type,
        tuple(dict.fromkeys(ins)),
        tuple(dict.fromkeys(outs)),
        config,
        nodes[0].device,
    )


class IROptimizer:
    """``IROptimizer(max_num_batched_tokens).optimize(graph)`` -> executable graph."""

    def __init__(
        self,
        max_num_batched_tokens: int | None = None,
        small_all_reduce_bytes: int = 1 << 20,
        bucket_bytes: int = 4 << 20,
    ) -> None:
        if max_num_batched_tokens is not None and max_num_batched_tokens < 1:
            raise ValueError(
                f"max_num_batched_tokens must be None or >= 1, got {max_num_batched_tokens!r}"
            )
        if small_all_reduce_bytes < 0 or bucket_bytes < 1:
            raise ValueError("small_all_reduce_bytes must be >= 0 and bucket_bytes >= 1")
        self.max_tokens = max_num_batched_tokens
        self.small_bytes = small_all_reduce_bytes
        self.bucket_bytes = bucket_bytes

    def optimize(self, graph: IRGraph) -> IRGraph:
        """All passes; those with nothing to do (no request split into chunks, no all-reduce)
        are skipped, so the common step costs two topological sorts."""
        graph = self.validate(graph)
        prefills = [str(n.get("request_id")) for n in graph.nodes if n.node_type == "prefill"]
        if len(set(prefills)) < len(prefills):
            graph = self.merge_chunks(graph)
        graph = self.fuse(graph, presorted=True)
        if any(n.node_type == "all_reduce" for n in graph.nodes):
            graph = self.bucket(graph)
        return self.hoist(graph)

    def validate(self, graph: IRGraph) -> IRGraph:
        """The same nodes in topological order (raises IRCycleError)."""
        return graph.sorted_graph()

    # ---------------------------------------------------------------- chunk merging

    def merge_chunks(self, graph: IRGraph) -> IRGraph:
        chains: dict[str, list[IRNode]] = {}
        for n in graph.topological_order():
            if n.node_type == "prefill":
                chains.setdefault(str(n.get("request_id")), []).append(n)
        nodes = list(graph.nodes)
        for chain in chains.values():
            for group in self._groups(chain):
                if len(group) > 1:
                    nodes = self._merge_group(nodes, group)
        return graph.with_nodes(nodes)

    def _groups(self, chain: list[IRNode]) -> Iterable[list[IRNode]]:
        group: list[IRNode] = []
        total = 0
        for n in chain:
            k = int(n.get("num_tokens"))
            contiguous = group and int(group[-1].get("start_tokens")) + int(
                group[-1].get("num_tokens")
            ) == int(n.get("start_tokens"))
            if group and contiguous and (self.max_tokens is None or total + k <= self.max_tokens):
                group.append(n)
                total += k
            else:
                if group:
                    yield group
                group, total = [n], k
        if group:
            yield group

    def _merge_group(self, nodes: list[IRNode], group: list[IRNode]) -> list[IRNode]:
        inner_kv = {v for g in group[:-1] for v in g.outputs if v.startswith("kvnew:")}
        stores = [n for n in nodes if n.node_type == "kv_store" and set(n.inputs) & inner_kv]
        stored = {v for s in stores for v in s.outputs}
        loads = [n for n in nodes if n.node_type == "kv_load" and set(n.inputs) & stored]
        first = group[0]
        merged = contract(
            [*group, *stores, *loads],
            first.node_id,
            "prefill",
            node_config(
                request_id=first.get("request_id"),
                start_tokens=first.get("start_tokens"),
                num_tokens=sum(int(g.get("num_tokens")) for g in group),
            ),
        )
        drop = {n.node_id for n in (*group, *stores, *loads)}
        out = []
        for n in nodes:
            if n.node_id == first.node_id:
                out.append(merged)
            elif n.node_id not in drop:
                out.append(n)
        return out

    # ---------------------------------------------------------------- fusion

    def fuse(self, graph: IRGraph, presorted: bool = False) -> IRGraph:
        """Fused graph; its nodes are in topological order unless ``presorted`` (the caller
        sorts later, e.g. ``hoist``) and ``graph`` must already be in topological order."""
        nodes = list(graph.nodes) if presorted else graph.topological_order()
        waves = self._waves(graph, nodes)
        for k, wave in enumerate(waves):
            nodes = self._fuse_wave(nodes, wave, k)
        fused = graph.with_nodes(nodes)
        return fused if presorted or not waves else fused.with_nodes(fused.topological_order())

    @staticmethod
    def _waves(graph: IRGraph, order: list[IRNode]) -> list[list[IRNode]]:
        """Forward nodes grouped by how many forwards precede them on a dependency path."""
        deps = graph.deps()
        by_id = {n.node_id: n for n in order}
        depth: dict[str, int] = {}
        waves: list[list[IRNode]] = []
        for n in order:
            d = 0
            for p in deps[n.node_id]:
                extra = by_id[p].node_type in ("prefill", "decode", "verify")
                d = max(d, depth[p] + extra)
            depth[n.node_id] = d
            if n.node_type in ("prefill", "decode", "verify"):
                while len(waves) <= d:
                    waves.append([])
                waves[d].append(n)
        return waves

    @staticmethod
    def _fuse_wave(nodes: list[IRNode], wave: list[IRNode], k: int) -> list[IRNode]:
        outs = {v for n in wave for v in n.outputs}
        items = tuple(
            (n.get("request_id"), n.get("start_tokens"), n.get("num_tokens"), n.node_type)
            for n in wave
        )
        fwd = contract(wave, f"forward/{k}", "forward", node_config(items=items))
        fused: list[IRNode] = [fwd]
        gone = {n.node_id for n in wave}
        for typ in ("sample", "kv_store"):
            group = [n for n in nodes if n.node_type == typ and set(n.inputs) & outs]
            gone.update(n.node_id for n in group)
            if len(group) > 1:
                rids = tuple(n.get("request_id") for n in group)
                fused.append(contract(group, f"{typ}/{k}", typ, node_config(request_ids=rids)))
            else:
                fused.extend(group)
        return [n for n in nodes if n.node_id not in gone] + fused

    # ---------------------------------------------------------------- all-reduce buckets

    def bucket(self, graph: IRGraph) -> IRGraph:
        deps = graph.deps()
        groups: dict[tuple, list[IRNode]] = {}
        for n in graph.nodes:
            if n.node_type == "all_reduce" and int(n.get("bytes", 0)) < self.small_bytes:
                key = (*deps[n.node_id], n.get("layer"), n.get("part"))
                groups.setdefault(key, []).append(n)
        replace: dict[str, IRNode | None] = {}
        k = 0
        for members in groups.values():
            bucket: list[IRNode] = []
            size = 0
            for n in [*members, None]:
                b = 0 if n is None else int(n.get("bytes", 0))
                if bucket and (n is None or size + b > self.bucket_bytes):
                    if len(bucket) > 1:
                        node = contract(
                            bucket,
                            f"all_reduce_bucket/{k}",
                            "all_reduce",
                            node_config(
                                bytes=size,
                                num_fused=len(bucket),
                                layer=bucket[0].get("layer"),
                                part=bucket[0].get("part"),
                            ),
                        )
                        k += 1
                        replace[bucket[0].node_id] = node
                        replace.update({m.node_id: None for m in bucket[1:]})
                    bucket, size = [], 0
                if n is not None:
                    bucket.append(n)
                    size += b
        out = [replace.get(n.node_id, n) for n in graph.nodes]
        return graph.with_nodes(n for n in out if n is not None)

    # ---------------------------------------------------------------- hoisting

    def hoist(self, graph: IRGraph) -> IRGraph:
        produced = set(graph.producers())
        first: list[IRNode] = []
        rest: list[IRNode] = []
        for n in graph.topological_order():
            if n.node_type == "kv_load" and not set(n.inputs) & produced:
                first.append(
                    IRNode(
                        n.node_id,
                        "kv_load",
                        n.inputs,
                        n.outputs,
                        tuple(sorted({**dict(n.config), "hoisted": True}.items())),
                        n.device,
                    )
                )
            else:
                rest.append(n)
        # loads with no producer may move first: the order stays topological
        return IRGraph.presorted([*first, *rest], graph.preempt)
