"""PDSeparator: split each request's prefill and decode onto different instances, with a
``kv_transfer`` node carrying the prompt's KV blocks between them (DistServe/Splitwise style).

Per request ``r`` with prompt length ``p`` (nodes' ``device`` = the instance that runs them)::

    [P] prefill r@0 (p tokens) --> kv_store --> kv:r@p --+--> [P->D] kv_transfer --> kv:r@p@D
    [P] sample r (first token) --> token:r --------------+                              |
    [D] decode r@p (1 token) <-- kvctx on D, token:r <-----------------------------------+

``num_blocks = ceil(p / block_size)``: a 1-token prompt moves one block; a prompt of exactly
one block moves one block (the decode instance allocates the next one). A request with
``max_tokens == 1`` finishes on the prefill instance: no transfer and no decode nodes.
Instances are assigned round-robin over the given ids, in request order.
"""

from __future__ import annotations

from dataclasses import dataclass

from sagellm.core.types import RequestId
from sagellm.scheduler_ir.graph import IRGraph
from sagellm.scheduler_ir.types import IRNode, RequestView, node_config


@dataclass(frozen=True)
class PDAssignment:
    """Where one request's phases run; ``decode_instance_id`` is None when there is no decode."""

    request_id: RequestId
    prefill_instance_id: str
    decode_instance_id: str | None
    num_prompt_tokens: int
    num_transfer_blocks: int  # 0 without a decode phase


@dataclass(frozen=True)
class PDSplit:
    graph: IRGraph
    assignments: tuple[PDAssignment, ...]

    def transfers(self) -> list[IRNode]:
        return self.graph.of_type("kv_transfer")


class PDSeparator:
    """``PDSeparator(["p0"], ["d0"], block_size_tokens=16).split(views)`` -> :class:`PDSplit`."""

    def __init__(
        self,
        prefill_instance_ids: list[str],
        decode_instance_ids: list[str],
        block_size_tokens: int,
    ) -> None:
        if not prefill_instance_ids or not decode_instance_ids:
            raise ValueError("prefill_instance_ids and decode_instance_ids must be non-empty")
        if set(prefill_instance_ids) & set(decode_instance_ids):
            raise ValueError("an instance cannot be both a prefill and a decode instance")
        if block_size_tokens < 1:
            raise ValueError(f"block_size_tokens must be >= 1, got {block_size_tokens!r}")
        self.prefill_ids = list(prefill_instance_ids)
        self.decode_ids = list(decode_instance_ids)
        self.block_size = block_size_tokens
        self._next = 0

    def split(self, requests: list[RequestView]) -> PDSplit:
        nodes: list[IRNode] = []
        out: list[PDAssignment] = []
        for r in requests:
            if r.num_prompt_tokens < 1:
                raise ValueError(f"request {r.request_id!r}: num_prompt_tokens must be >= 1")
            p_id = self.prefill_ids[self._next % len(self.prefill_ids)]
            d_id = self.decode_ids[self._next % len(self.decode_ids)]
            self._next += 1
            decode = r.max_tokens > 1
            nb = -(-r.num_prompt_tokens // self.block_size) if decode else 0
            out.append(
                PDAssignment(r.request_id, p_id, d_id if decode else None, r.num_prompt_tokens, nb)
            )
            nodes.extend(self._nodes(r, p_id, d_id if decode else None, nb))
        return PDSplit(IRGraph(tuple(nodes)), tuple(out))

    @staticmethod
    def _nodes(r: RequestView, p_id: str, d_id: str | None, nb: int) -> list[IRNode]:
        rid, p = r.request_id, r.num_prompt_tokens
        nodes = [
            IRNode(f"prefill/{rid}@0", "prefill", (f"tokens:{rid}@0",),
                   (f"hidden:{rid}@0", f"kvnew:{rid}@0"),
                   node_config(request_id=rid, start_tokens=0, num_tokens=p), p_id),
            IRNode(f"kv_store/{rid}@0", "kv_store", (f"kvnew:{rid}@0",), (f"kv:{rid}@{p}",),
                   node_config(request_id=rid, num_tokens=p), p_id),
            IRNode(f"sample/{rid}@0", "sample", (f"hidden:{rid}@0",), (f"token:{rid}",),
                   node_config(request_id=rid), p_id),
        ]  # fmt: skip
        if d_id is None:
            return nodes
        on_d = f"kv:{rid}@{p}@{d_id}"
        nodes += [
            IRNode(f"kv_transfer/{rid}", "kv_transfer", (f"kv:{rid}@{p}", f"token:{rid}"),
                   (on_d, f"token:{rid}@{d_id}"),
                   node_config(request_id=rid, src=p_id, dst=d_id, num_tokens=p,
                               num_blocks=nb), p_id),
            IRNode(f"kv_load/{rid}@{p}", "kv_load", (on_d,), (f"kvctx:{rid}@{p}",),
                   node_config(request_id=rid, num_tokens=p), d_id),
            IRNode(f"decode/{rid}@{p}", "decode", (f"kvctx:{rid}@{p}", f"token:{rid}@{d_id}"),
                   (f"hidden:{rid}@{p}", f"kvnew:{rid}@{p}"),
                   node_config(request_id=rid, start_tokens=p, num_tokens=1), d_id),
        ]  # fmt: skip
        return nodes
