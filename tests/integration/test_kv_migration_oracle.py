"""Migration between KV tiers on the engine's path (``migration_policy: cost_benefit``): greedy
outputs stay equal to HF transformers while the decider demotes a long prefix and drops short
ones, and the decision log carries measured store/load latencies and a missed drop's recompute.

The workload's reuse distance exceeds the 20-block device pool (3-block host tier, 16-block
disk tier): a 41-token prompt, six short prompts, the long prefix again (loaded back from host
and disk), the first short prompt again."""

import statistics

import pytest
import torch

from sagellm.benchmarks.hf_reference import hf_greedy
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine

N_NEW = 6
SP = SamplingParams(max_tokens=N_NEW, ignore_eos=True)


def rand(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n,), generator=g).tolist()


LONG = rand(40, 1)
SHORT = [rand(5, 10 + i) for i in range(6)]  # 2 full blocks each once 6 tokens are generated
PROMPTS = [[*LONG, 7], *SHORT, [*LONG, 9, 9], SHORT[0]]


@pytest.fixture(scope="module")
def llama(tiny_checkpoint):
    return tiny_checkpoint("llama")


def engine(folder, tmp_path):
    return NativeEngine.from_pretrained(
        folder,
        block_size_tokens=4,
        num_kv_blocks=20,
        enable_prefix_caching=True,
        host_tier_blocks=3,
        disk_tier_blocks=16,
        kv_cache_dir=str(tmp_path),
        migration_policy="cost_benefit",
    )


def run_one_by_one(engine, prompts):
    outs = []
    for i, p in enumerate(prompts):
        engine.add_request(Request(f"r{i}", p, SP))
        while engine.has_unfinished():
            engine.step()
        outs.append(engine.output_token_ids(f"r{i}"))
    return outs


def test_measured_rates_drive_the_default_path(llama, tmp_path):
    """No injected rates: the model starts from measurements taken at start (tier copies
    through a private migrator, a matmul) and follows the engine's own steps."""
    model, folder = llama
    eng = engine(folder, tmp_path)
    m = eng.kv.migration.cost_model()
    assert m.flops_per_s > 0 and set(m.bandwidth_bytes_per_s) == {"host", "disk"}
    assert all(bw > 0 for bw in [*m.bandwidth_bytes_per_s.values()])
    assert eng.kv.migrator.stats == {}  # the start-up copies are not the engine's migrations
    outs = run_one_by_one(eng, PROMPTS)
    assert outs == hf_greedy(model, PROMPTS, N_NEW, ignore_eos=True)
    rates = [s.flops / s.compute_s for s in eng.step_metrics() if s.num_prefill_tokens > 0]
    st = eng.stats()
    assert st["migration_flops_per_s"] == pytest.approx(statistics.median(rates[-64:]))
    log = eng.kv.migration_log
    assert log and all(r.predicted_recompute_s is not None for r in log)
    stored = [r.measured_store_s for r in log if r.measured_store_s is not None]
    assert stored and all(t > 0 for t in stored)
    eng.close()


def test_cost_benefit_demotes_long_prefix_drops_short_ones(llama, tmp_path):
    """Injected rates put a block round trip between the recompute of a short prompt's
    deepest block (prefix 8) and the long prompt's deepest one (prefix 44)."""
    model, folder = llama
    eng = engine(folder, tmp_path)
    fm, flops = eng.kv.migration.flop_model, 1e9
    round_trip_s = (fm.block_flops(8, 4) + fm.block_flops(44, 4)) / 2 / flops
    bw = eng.kv.pool.block_bytes / (round_trip_s / 2)
    eng.kv.migration.pin_rates(flops, {"host": bw, "disk": bw}, {"host": bw, "disk": bw})

    outs = run_one_by_one(eng, PROMPTS)
    assert outs == hf_greedy(model, PROMPTS, N_NEW, ignore_eos=True)

    log = eng.kv.migration_log
    demotes = [r for r in log if r.decision.startswith("demote:")]
    drops = [r for r in log if r.decision == "drop" and r.reason == "cost_benefit"]
    assert demotes and drops
    assert all(r.predicted_subtree_recompute_s > r.predicted_transfer_s for r in demotes)
    assert all(r.predicted_subtree_recompute_s < r.predicted_transfer_s for r in drops)
    assert {r.prefix_tokens for r in drops} <= {4, 8}  # only short prompts' blocks go
    # the long prefix came back from the lower tiers, each load timed per block
    assert eng.request_metrics()[7].num_cached_tokens == 40
    loaded = [r for r in demotes if r.measured_load_s is not None]
    assert len(loaded) == eng.stats()["num_loaded_blocks"]  # every load back is in the log
    assert {r.decision for r in loaded} == {"demote:host", "demote:disk"}
    assert all(r.measured_load_s > 0 for r in loaded)
    # SHORT[0]'s first block was dropped: asking again recomputes it (a miss, timed by its
    # step); its second block holds generated tokens no prompt asks for (not a miss)
    assert eng.request_metrics()[8].num_cached_tokens == 0
    missed = [r for r in log if r.missed]
    assert [r.prefix_tokens for r in missed] == [4]
    assert missed[0].measured_recompute_s > 0
    st = eng.stats()
    assert st["num_drop_decisions"] == len(drops) and st["num_demote_decisions"] == len(demotes)
    assert st["num_loaded_back_blocks"] == len(loaded)
    assert st["load_back_measured_s"] == pytest.approx(sum(r.measured_load_s for r in loaded))
    assert st["num_dropped_prefix_misses"] == len(missed) and st["miss_recompute_measured_s"] > 0
    eng.close()
