"""PlanLog: the requests and plans of a run, in order, as JSON lines; replayable offline.

Replaying a log on a fresh engine that loads the same checkpoint gives the same outputs
(greedy or seeded sampling): the plans fix which requests run, how many tokens each and in
what order, and ``NativePlanTarget.check`` rejects any plan whose KV start differs.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from sagellm.core.io import atomic_write_text
from sagellm.core.types import SLO, Request, RequestOutput, SamplingParams
from sagellm.scheduler_ir.executor import ExecutorAPI
from sagellm.scheduler_ir.plan import ExecutionPlan, plan_from_dict, plan_to_dict


def request_to_dict(r: Request) -> dict:
    d = asdict(r)
    d["arrival_s"] = None  # engine-clock times do not carry over to another process
    return d


def request_from_dict(d: dict) -> Request:
    sp = dict(d["sampling"])
    sp["stop_token_ids"] = tuple(sp.get("stop_token_ids", ()))
    return Request(
        request_id=d["request_id"],
        prompt_token_ids=list(d["prompt_token_ids"]),
        sampling=SamplingParams(**sp),
        tenant_id=d["tenant_id"],
        priority=d["priority"],
        slo=SLO(**d["slo"]),
        arrival_s=None,
        model=d["model"],
    )


class PlanLog:
    """An append-only list of ``("add", Request)`` and ``("plan", ExecutionPlan)`` events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Request | ExecutionPlan]] = []

    def add(self, request: Request) -> None:
        self.events.append(("add", request))

    def plan(self, plan: ExecutionPlan) -> None:
        self.events.append(("plan", plan))

    @property
    def plans(self) -> list[ExecutionPlan]:
        return [e for k, e in self.events if k == "plan"]

    def to_jsonl(self) -> str:
        lines = []
        for kind, e in self.events:
            body = request_to_dict(e) if kind == "add" else plan_to_dict(e)
            lines.append(json.dumps({"kind": kind, "body": body}, separators=(",", ":")))
        return "\n".join(lines) + ("\n" if lines else "")

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.to_jsonl())

    @classmethod
    def from_jsonl(cls, text: str) -> PlanLog:
        log = cls()
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
                if ev["kind"] == "add":
                    log.add(request_from_dict(ev["body"]))
                elif ev["kind"] == "plan":
                    log.plan(plan_from_dict(ev["body"]))
                else:
                    raise ValueError(f"unknown kind {ev['kind']!r}")
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"plan log line {i}: {err}") from None
        return log

    @classmethod
    def load(cls, path: str | Path) -> PlanLog:
        return cls.from_jsonl(Path(path).read_text())


def replay(log: PlanLog, engine, executor: ExecutorAPI) -> list[RequestOutput]:
    """Add the logged requests to ``engine`` and run the logged plans through ``executor``.

    Raises ValueError when a plan is rejected or fails (the replay diverged).
    """
    outputs: list[RequestOutput] = []
    for kind, e in log.events:
        if kind == "add":
            engine.add_request(e)
            continue
        st, outs = executor.submit_and_run(e)
        if st.state != "completed":
            raise ValueError(f"replay diverged at plan {e.plan_id!r}: {st.state}: {st.reason}")
        outputs.extend(outs)
    return outputs
