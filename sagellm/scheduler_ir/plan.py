"""ExecutionPlan: an optimized IR graph bound to an instance, plus JSON (de)serialization.

A plan is self-contained: replaying the same plans, in order, on a fresh engine that received
the same requests reproduces the outputs (greedy, or seeded sampling). ``lower`` reduces a plan
to what a single-instance engine executes: preemptions, then one forward per wave.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sagellm.core.types import RequestId
from sagellm.scheduler_ir.graph import IRGraph
from sagellm.scheduler_ir.types import FORWARD_TYPES, ForwardItem, IRNode


@dataclass(frozen=True)
class ExecutionPlan:
    """What one instance runs for one step.

    ``request_ids`` are every request the graph touches (forwards and preemptions), in first-use
    order; ``target_instance_id`` names the instance (``ExecutorAPI`` rejects unknown ones).
    """

    plan_id: str
    ir_graph: IRGraph
    request_ids: tuple[RequestId, ...]
    target_instance_id: str

    @classmethod
    def of(cls, plan_id: str, graph: IRGraph, instance_id: str) -> ExecutionPlan:
        rids: list[RequestId] = list(graph.preempt)
        for n in graph.nodes:
            if n.get("request_id") is not None:
                rids.append(str(n.get("request_id")))
            for rid in n.get("request_ids") or ():
                rids.append(str(rid))
            for item in n.get("items") or ():
                rids.append(str(item[0]))
        return cls(plan_id, graph, tuple(dict.fromkeys(rids)), instance_id)


def lower(graph: IRGraph) -> list[tuple[ForwardItem, ...]]:
    """One tuple of forward items per forward-like node, in topological order."""
    waves = []
    for n in graph.topological_order():
        if n.node_type not in FORWARD_TYPES:
            continue
        if n.node_type == "forward":
            items = tuple(ForwardItem(str(r), int(c), int(k)) for r, c, k, *_ in n.get("items"))
        else:
            items = (
                ForwardItem(
                    str(n.get("request_id")), int(n.get("start_tokens")), int(n.get("num_tokens"))
                ),
            )
        waves.append(items)
    return waves


def _jsonable(v):
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


def _tupled(v):
    if isinstance(v, list):
        return tuple(_tupled(x) for x in v)
    return v


def plan_to_dict(plan: ExecutionPlan) -> dict:
    g = plan.ir_graph
    return {
        "plan_id": plan.plan_id,
        "target_instance_id": plan.target_instance_id,
        "request_ids": list(plan.request_ids),
        "preempt": list(g.preempt),
        "nodes": [
            {
                "node_id": n.node_id,
                "node_type": n.node_type,
                "inputs": list(n.inputs),
                "outputs": list(n.outputs),
                "config": {k: _jsonable(v) for k, v in n.config},
                "device": n.device,
            }
            for n in g.nodes
        ],
    }


def plan_from_dict(d: dict) -> ExecutionPlan:
    nodes = tuple(
        IRNode(
            n["node_id"],
            n["node_type"],
            tuple(n["inputs"]),
            tuple(n["outputs"]),
            tuple(sorted((k, _tupled(v)) for k, v in n["config"].items())),
            n["device"],
        )
        for n in d["nodes"]
    )
    graph = IRGraph(nodes, tuple(d["preempt"]))
    return ExecutionPlan(d["plan_id"], graph, tuple(d["request_ids"]), d["target_instance_id"])


def plan_to_json(plan: ExecutionPlan) -> str:
    return json.dumps(plan_to_dict(plan), separators=(",", ":"))


def plan_from_json(text: str) -> ExecutionPlan:
    return plan_from_dict(json.loads(text))
