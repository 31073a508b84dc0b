"""MultiInstanceEngine: several engine instances behind one engine interface and a Router.

Each instance is an engine whose steps are its strategy's plans (``snapshot``, ``step``,
distinct ``instance_id`` s). ``add_request`` routes the request (the router sees every
instance's snapshot; prefix affinity asks each instance's prefix cache); ``step`` steps
every instance that has work, in instance order, and returns all their outputs. Metrics are
the union of the instances'. On one CPU the instances time-share the cores, so this measures
routing quality (balance, prefix locality), not parallel speedup.
"""

from __future__ import annotations

from sagellm.core.types import Request, RequestId, RequestOutput
from sagellm.scheduler_ir.router import Router


class MultiInstanceEngine:
    def __init__(self, instances: list, router: Router) -> None:
        self.instances = {e.instance_id: e for e in instances}
        if list(self.instances) != router.instance_ids:
            raise ValueError("the router's instance_ids must equal the instances' ids, in order")
        if router.policy == "prefix_affinity" and router.prefix_probe is None:
            router.prefix_probe = lambda i, req: self.instances[i].prefix_hit_tokens(req)
        self.router = router
        self.placement: dict[RequestId, str] = {}
        first = instances[0]
        self.arch = first.arch
        self.device = first.device
        self.capabilities = frozenset({"scheduler_ir", "routing"})

    def clock(self) -> float:
        return next(iter(self.instances.values())).clock()

    def add_request(self, request: Request) -> None:
        states = {i: e.snapshot() for i, e in self.instances.items()}
        choice = self.router.route(request, states)
        self.instances[choice].add_request(request)
        self.placement[request.request_id] = choice

    def abort(self, request_id: RequestId) -> bool:
        where = self.placement.get(request_id)
        return where is not None and self.instances[where].abort(request_id)

    def has_unfinished(self) -> bool:
        return any(pe.has_unfinished() for pe in self.instances.values())

    def step(self) -> list[RequestOutput]:
        outs: list[RequestOutput] = []
        for pe in self.instances.values():
            if pe.has_unfinished():
                outs.extend(pe.step())
        return outs

    def output_token_ids(self, request_id: RequestId) -> list[int]:
        return self.instances[self.placement[request_id]].output_token_ids(request_id)

    def request_metrics(self):
        return [m for pe in self.instances.values() for m in pe.request_metrics()]

    def step_metrics(self):
        steps = [s for pe in self.instances.values() for s in pe.step_metrics()]
        return sorted(steps, key=lambda s: s.start_s)

    def reset_metrics(self) -> None:
        for pe in self.instances.values():
            pe.reset_metrics()

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, _pe in self.instances.items():
            out[f"{i}.num_requests"] = float(sum(1 for v in self.placement.values() if v == i))
        return out
