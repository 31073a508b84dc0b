"""Every eviction policy under memory pressure keeps greedy outputs equal to HF fp32: a
multi-turn shared-prefix stream on a 16-block pool (block size 4) evicts cached blocks."""

import pytest
import torch

from sagellm.benchmarks.hf_reference import hf_greedy
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine
from sagellm.kv_policy import EVICTION_POLICIES

N_NEW = 4
SP = SamplingParams(max_tokens=N_NEW, ignore_eos=True)


def rand(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n,), generator=g).tolist()


SYSTEM = rand(24, 1)  # shared by every session
# three sessions of three turns: each turn extends the previous prompt
SESSIONS = [[SYSTEM + rand(6 * (t + 1), 100 * s) for t in range(3)] for s in range(3)]
PROMPTS = [p for t in range(3) for s in SESSIONS for p in [s[t]]]  # interleaved turns


@pytest.fixture(scope="module")
def llama_refs(tiny_checkpoint):
    model, folder = tiny_checkpoint("llama")
    return folder, hf_greedy(model, PROMPTS, N_NEW, ignore_eos=True)


@pytest.mark.parametrize("policy", EVICTION_POLICIES.names())
def test_outputs_equal_hf_under_pressure(llama_refs, policy):
    folder, refs = llama_refs
    eng = NativeEngine.from_pretrained(
        folder,
        block_size_tokens=4,
        num_kv_blocks=16,
        enable_prefix_caching=True,
        eviction_policy=policy,
    )
    outs = []
    for i, p in enumerate(PROMPTS):
        eng.add_request(Request(f"r{i}", p, SP))
        while eng.has_unfinished():
            eng.step()
        outs.append(eng.output_token_ids(f"r{i}"))
    assert outs == refs
    st = eng.stats()
    assert st["num_dropped_entries"] > 0  # the pool was too small to keep everything
    assert sum(m.num_cached_tokens for m in eng.request_metrics()) > 0
    assert len(eng.kv.tracker) == eng.kv.pool.num_cached_blocks  # all idle: every cached block
