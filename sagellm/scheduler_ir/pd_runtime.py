"""PDRuntime: serve with prefill on one instance and decode on another, driven by IR plans.

Both instances are engines whose every step is their strategy's plan (``engine.step()``,
``engine.snapshot()``, ``engine.strategy``). Each ``step``:

1. the prefill instance runs a plan of its strategy over its (waiting/prefilling) requests;
2. requests whose prompt is computed and that have not finished (``max_tokens > 1``) are split
   by :class:`PDSeparator`; every ``kv_transfer`` node of the split is executed by ``transfer``
   (``transfer(src_engine, dst_engine, request_id) -> bool``; False = the decode instance has
   no free blocks yet, retried next step);
3. the decode instance runs a plan of its strategy over its requests.

Outputs of both instances are returned together, so a client sees one stream per request.
Request metrics come from the decode instance (timestamps carried over) plus the requests that
finished on the prefill instance (``max_tokens == 1``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from sagellm.core.types import Request, RequestId, RequestOutput
from sagellm.scheduler_ir.pd_separation import PDSeparator
from sagellm.scheduler_ir.protocol import Strategy
from sagellm.scheduler_ir.types import SchedulerState, StepDecision

TransferFn = Callable[[object, object, RequestId], bool]


class PrefillOnly:
    """Wraps a strategy so it never decodes: decode-phase requests are hidden from it (they are
    waiting for their KV transfer to the decode instance)."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner
        self.name = f"prefill_only({inner.name})"

    def decide(self, state: SchedulerState) -> StepDecision:
        keep = tuple(r for r in state.requests if r.phase != "decode")
        return self.inner.decide(replace(state, requests=keep))

    def observe(self, num_prefill_tokens: int, num_decode_tokens: int, step_s: float) -> None:
        self.inner.observe(num_prefill_tokens, num_decode_tokens, step_s)


class PDRuntime:
    """Two engine instances (prefill, decode; distinct ``instance_id`` s) and a KV transfer
    function. The prefill engine's strategy is wrapped in :class:`PrefillOnly`."""

    def __init__(self, prefill, decode, transfer: TransferFn):
        if prefill.instance_id == decode.instance_id:
            raise ValueError(f"prefill and decode share instance_id {prefill.instance_id!r}")
        if not isinstance(prefill.strategy, PrefillOnly):
            prefill.strategy = PrefillOnly(prefill.strategy)
        self.prefill = prefill
        self.decode = decode
        self.transfer = transfer
        bs = decode.config.block_size_tokens
        self.separator = PDSeparator([prefill.instance_id], [decode.instance_id], bs)
        self.engines = {prefill.instance_id: prefill, decode.instance_id: decode}
        self.capabilities = frozenset({"pd_separation", "scheduler_ir"})
        self.arch = getattr(prefill, "arch", None)
        self.device = getattr(prefill, "device", "cpu")
        self.transfer_s = 0.0
        self.num_transfers = 0
        self.splits = []  # PDSplit per step with transfers (kept for inspection)

    def clock(self) -> float:
        return self.prefill.clock()

    def add_request(self, request: Request) -> None:
        self.prefill.add_request(request)

    def abort(self, request_id: RequestId) -> bool:
        return self.prefill.abort(request_id) or self.decode.abort(request_id)

    def has_unfinished(self) -> bool:
        return self.prefill.has_unfinished() or self.decode.has_unfinished()

    def step(self) -> list[RequestOutput]:
        outs = self.prefill.step()
        self._hand_off()
        return outs + self.decode.step()

    def _hand_off(self) -> None:
        state = self.prefill.snapshot()
        ready = [
            r
            for r in state.requests
            if r.running and r.num_computed_tokens >= r.num_prompt_tokens and r.max_tokens > 1
        ]
        if not ready:
            return
        split = self.separator.split(ready)
        self.splits.append(split)
        for node in split.transfers():
            src, dst = self.engines[str(node.get("src"))], self.engines[str(node.get("dst"))]
            t0 = time.perf_counter()
            moved = self.transfer(src, dst, str(node.get("request_id")))
            self.transfer_s += time.perf_counter() - t0
            self.num_transfers += int(moved)

    def output_token_ids(self, request_id: RequestId) -> list[int]:
        try:
            return self.decode.output_token_ids(request_id)
        except KeyError:
            return self.prefill.output_token_ids(request_id)

    def request_metrics(self):
        on_prefill = [m for m in self.prefill.request_metrics() if m.finish_reason is not None]
        return on_prefill + list(self.decode.request_metrics())

    def step_metrics(self):
        steps = [*self.prefill.step_metrics(), *self.decode.step_metrics()]
        return sorted(steps, key=lambda s: s.start_s)

    def reset_metrics(self) -> None:
        self.prefill.reset_metrics()
        self.decode.reset_metrics()
        self.transfer_s = 0.0
        self.num_transfers = 0
        self.splits.clear()

    def stats(self) -> dict[str, float]:
        return {
            "transfer_s": self.transfer_s,
            "num_transfers": float(self.num_transfers),
            "prefill_ir_fraction": self.prefill.ir_stats()["ir_fraction"],
            "decode_ir_fraction": self.decode.ir_stats()["ir_fraction"],
        }
