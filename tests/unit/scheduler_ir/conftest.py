"""Factories of request views and instance states for scheduler_ir unit tests (no engine)."""

import pytest

from sagellm.scheduler_ir.types import RequestView, SchedulerState


def view(rid, prompt=8, computed=0, output=0, running=None, blocks=None, bs=4, **kw):
    """A request view; ``running`` defaults to having computed tokens, blocks to fit them."""
    running = computed > 0 if running is None else running
    if blocks is None:
        blocks = -(-computed // bs)
    return RequestView(
        request_id=rid,
        arrival_s=kw.pop("arrival_s", 0.0),
        num_prompt_tokens=prompt,
        num_tokens=prompt + output,
        num_computed_tokens=computed,
        num_output_tokens=output,
        max_tokens=kw.pop("max_tokens", 16),
        running=running,
        num_blocks=blocks,
        **kw,
    )


def state(views, free=100, total=None, seqs=8, budget=64, bs=4, now=0.0, **kw):
    used = sum(v.num_blocks for v in views)
    return SchedulerState(
        instance_id="i0",
        now_s=now,
        requests=tuple(views),
        block_size_tokens=bs,
        num_free_blocks=free,
        num_total_blocks=total if total is not None else free + used,
        max_num_seqs=seqs,
        max_num_batched_tokens=budget,
        **kw,
    )


@pytest.fixture
def mk():
    class Factories:
        pass

    f = Factories()
    f.view = view
    f.state = state
    return f
