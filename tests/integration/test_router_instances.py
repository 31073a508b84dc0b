"""Two native engines behind a Router: placement by policy, outputs equal HF."""

import pytest
from test_oracle_tiny import hf_reference, prompts_of

from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine
from sagellm.scheduler_ir.multi_instance import MultiInstanceEngine
from sagellm.scheduler_ir.router import Router

SP = SamplingParams(max_tokens=5, ignore_eos=True)


@pytest.mark.parametrize("policy", ["round_robin", "least_loaded", "prefix_affinity"])
def test_routed_instances_equal_hf(tiny_checkpoint, policy):
    model, folder = tiny_checkpoint("llama")
    engines = [
        NativeEngine.from_pretrained(folder, block_size_tokens=4, enable_prefix_caching=True)
        for _ in range(2)
    ]
    for k, e in enumerate(engines):
        e.instance_id = f"i{k}"
    multi = MultiInstanceEngine(engines, Router(["i0", "i1"], policy))
    prefixes = prompts_of([8, 8], seed=9)
    tails = prompts_of([3, 5, 2, 6], seed=10)
    prompts = [prefixes[i % 2] + t for i, t in enumerate(tails)]  # groups: r0,r2 and r1,r3
    for wave in ((0, 1), (2, 3)):  # the second wave routes against the engines' caches
        for i in wave:
            multi.add_request(Request(f"r{i}", prompts[i], SP))
        while multi.has_unfinished():
            multi.step()
    for i, p in enumerate(prompts):
        assert multi.output_token_ids(f"r{i}") == hf_reference(model, p, SP.max_tokens)[0]
    place = multi.placement
    if policy == "round_robin":
        assert place == {"r0": "i0", "r1": "i1", "r2": "i0", "r3": "i1"}
    elif policy == "least_loaded":
        # r0 (11+5 outstanding) -> i0; r1 -> i1; then both idle: r2 -> i0 (tie), r3 -> i1
        assert place == {"r0": "i0", "r1": "i1", "r2": "i0", "r3": "i1"}
    else:
        assert place["r0"] != place["r1"]  # no cache anywhere: least loaded
        # r3 is added while r2 runs on r0's instance: only its prefix hit sends it to r1's
        assert place["r0"] == place["r2"] and place["r1"] == place["r3"]
        hits = {m.request_id: m.num_cached_tokens for m in multi.request_metrics()}
        assert hits["r2"] == hits["r3"] == 8
