"""How a step plan's ``all_reduce`` nodes drive the tensor-parallel forward.

With ``tp_size > 1`` the builder gives every forward chunk ``(r, c)`` one partial-sum output per
layer and part, ``partial:r@c:L<layer>.<attn|mlp>`` (``attn`` = the o_proj output, ``mlp`` =
down_proj's), each consumed by an ``all_reduce`` node; the optimizer's ``bucket`` pass merges the
small ones of one layer-part into one node (``EngineConfig.tp_fuse_all_reduce``).

Execution: a layer's reduction is needed before the next layer runs, so the collectives cannot
wait until the forward node has finished. The forward node therefore issues them itself, at
their layer: each ``all_reduce`` node consuming its partials becomes exactly one collective over
the rows of the chunks it names (``reduction_schedule``), in the plan's node order, on every
rank. At its own place in the order an ``all_reduce`` node has nothing left to do. So the plan
says which collectives run and with how many bytes, and the forward runs those and no others;
``check_plan`` rejects a plan whose forward leaves a partial unreduced, reduces one twice, or
fuses reductions of different layer-parts (the later one depends on the earlier).
"""

from __future__ import annotations

from sagellm.core.errors import PlanRejectedError
from sagellm.scheduler_ir.graph import IRGraph
from sagellm.scheduler_ir.types import FORWARD_TYPES, IRNode

PARTS = ("attn", "mlp")


def parse_partial(value: str) -> tuple[str, int, int, str] | None:
    """``partial:r@c:L<layer>.<part>`` -> ``(r, c, layer, part)``; None for other values."""
    if not value.startswith("partial:"):
        return None
    head, tail = value[len("partial:") :].rsplit(":L", 1)
    rid, c = head.rsplit("@", 1)
    layer, part = tail.split(".", 1)
    return rid, int(c), int(layer), part


def _reductions(graph: IRGraph, fwd: IRNode) -> list[tuple[str, list[tuple[str, int, int, str]]]]:
    """The all_reduce nodes consuming ``fwd``'s partials: (node id, the partials it reduces)."""
    mine = {v for v in fwd.outputs if v.startswith("partial:")}
    out = []
    for n in graph.nodes:
        if n.node_type == "all_reduce" and mine.intersection(n.inputs):
            out.append((n.node_id, [parse_partial(v) for v in n.inputs if v in mine]))
    return out


def check_reductions(graph: IRGraph, num_layers: int) -> str | None:
    """Why the plan's all_reduce nodes do not describe its forwards' reductions (None: they
    do): every partial of every forward-like node reduced exactly once, one layer-part per
    node."""
    for fwd in graph.nodes:
        if fwd.node_type not in FORWARD_TYPES:
            continue
        partials = {v for v in fwd.outputs if v.startswith("partial:")}
        chunks = {p[:2] for p in map(parse_partial, partials)}
        need = {(r, c, i, part) for r, c in chunks for i in range(num_layers) for part in PARTS}
        if not partials or {parse_partial(v) for v in partials} != need:
            return (
                f"forward {fwd.node_id!r} lacks partial sums for every layer of its chunks: "
                f"with tensor parallelism each of its {num_layers} layers' attn and mlp outputs "
                "is reduced by an all_reduce node (build the plan from this engine's snapshot)"
            )
        seen: set[tuple[str, int, int, str]] = set()
        for node_id, parts in _reductions(graph, fwd):
            if len({(p[2], p[3]) for p in parts}) > 1:
                return (
                    f"all_reduce node {node_id!r} fuses reductions of different layers/parts; "
                    "each layer's reduction is needed before the next one runs"
                )
            if seen.intersection(parts):
                return f"all_reduce node {node_id!r} reduces a partial sum a second time"
            seen.update(parts)
        if seen != need:
            return f"forward {fwd.node_id!r}: some partial sums have no all_reduce node"
    return None


def reduction_schedule(
    graph: IRGraph, fwd: IRNode, item_rows: dict[str, tuple[int, int]], num_layers: int
) -> list[list[list[tuple[int, int]]]]:
    """Per row-parallel call of the forward (layer 0 attn, layer 0 mlp, layer 1 attn, ...), the
    collectives to issue: each a list of row ranges ``[lo, hi)`` of the flat batch.

    ``item_rows[r]`` are request ``r``'s rows in the batch (requests the step dropped are
    absent, and so are their rows from every collective). A chunk ``r@c`` spans from its start
    ``c`` to the next chunk of ``r`` or the item's end."""
    starts: dict[str, list[int]] = {}
    for v in fwd.outputs:
        p = parse_partial(v)
        if p is not None:
            starts.setdefault(p[0], []).append(p[1])
    rows: dict[tuple[str, int], tuple[int, int]] = {}
    for rid, cs in starts.items():
        if rid not in item_rows:
            continue
        lo, hi = item_rows[rid]
        cs = sorted(set(cs))
        for i, c in enumerate(cs):
            end = cs[i + 1] - cs[0] if i + 1 < len(cs) else hi - lo
            rows[(rid, c)] = (lo + c - cs[0], lo + end)
    calls: dict[tuple[int, str], list[list[tuple[int, int]]]] = {}
    for _, parts in _reductions(graph, fwd):
        ranges = sorted(rows[p[:2]] for p in parts if p[:2] in rows)
        merged: list[tuple[int, int]] = []
        for lo, hi in ranges:
            if merged and merged[-1][1] == lo:
                merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        if merged:
            calls.setdefault((parts[0][2], parts[0][3]), []).append(merged)
    total = sum(hi - lo for lo, hi in item_rows.values())
    out = []
    for layer in range(num_layers):
        for part in PARTS:
            colls = calls.get((layer, part), [])
            if sum(hi - lo for c in colls for lo, hi in c) != total:
                raise PlanRejectedError(
                    f"forward {fwd.node_id!r}: the plan's all_reduce nodes cover "
                    f"{sum(hi - lo for c in colls for lo, hi in c)} of {total} rows at layer "
                    f"{layer} {part}"
                )
            out.append(colls)
    return out


class ModelForward:
    """The model call of the engine's forward node (a mixin of PlanExecution)."""

    def _model_forward(self, node: IRNode, items, inputs, run):
        """(logits, comm seconds) of one batched forward: the plain call at tp_size 1; with
        TP, rank 0's forward with the workers, the collectives from the plan, and the
        collectives' seconds on rank 0 during it less what overlap hid behind compute (an
        async collective counts only the time rank 0 waited for it), so ``comm_s <=
        compute_s``."""
        if self.tp is None:
            args = (inputs.input_ids, inputs.positions, inputs.meta, self.cache)
            return self.model.forward(*args, inputs.logits_index), 0.0
        item_rows, at = {}, 0
        for seq, n in items:
            item_rows[seq.request_id] = (at, at + n)
            at += n
        schedule = reduction_schedule(run.graph, node, item_rows, self.arch.num_layers)
        stats, rp = self.tp.stats, self.tp.row_parallel
        hidden0 = rp.hidden_s
        stats.begin_step()
        logits = self.tp.forward(self.model, inputs, self.cache, schedule)
        return logits, max(0.0, stats.end_step() - (rp.hidden_s - hidden0))
