"""MigrationDecider: recompute-versus-transfer decisions, calibration and the decision log."""

import pytest
import torch

from sagellm.core import ConfigError, parse_config
from sagellm.core.types import Request, RequestMetrics, SamplingParams, StepMetrics
from sagellm.engines.native.calibrate import measure_tier_bandwidth
from sagellm.engines.native.kv_manager import AllocStatus, NativeKVManager
from sagellm.engines.native.kv_migration import MigrationDecider
from sagellm.engines.native.sequence import Sequence
from sagellm.kv_policy import PrefillFlopModel
from sagellm.kv_runtime import HierarchyManager, KVMigrator, KVPool, MigrationPlan
from sagellm.prefix_reuse import PrefixEntry, PrefixReuseIndex

FM = PrefillFlopModel(num_params=1000, num_layers=2, attn_dim=8)
BLOCK_BYTES = 16  # [1 layer, K|V, 1 head, 2 tokens, 1 dim] fp32
# at 1000 FLOP/s a 2-token block costs 4.192 s at prefix 2, 9.056 s at prefix 40; a round
# trip through a 16/3-bytes/s tier costs 3 + 3 = 6 s
RATE = BLOCK_BYTES / 3


def tiers(tmp_path, host=4, disk=4, num_blocks=8):
    pool = KVPool(torch.zeros(1, 2, num_blocks, 1, 2, 1), block_dim=2)
    h = HierarchyManager.build(pool, (1, 2, 1, 2, 1), torch.float32, host, disk, tmp_path)
    return h, KVMigrator(h)


def decider(tmp_path, steps=None, **rates):
    d = MigrationDecider("cost_benefit", FM, lambda: 1000.0, steps)
    d.bind(*tiers(tmp_path), block_tokens=2)
    d.pin_rates(
        flops_per_s=1000.0,
        store_bytes_per_s=rates.get("store", {"host": RATE}),
        load_bytes_per_s=rates.get("load", {"host": RATE}),
    )
    return d


def entry(i, prefix_tokens, block=0, tier="device"):
    return PrefixEntry(i, 100 + i, prefix_tokens, (block,), tier=tier)


def test_cheap_block_dropped_expensive_one_demoted(tmp_path):
    d = decider(tmp_path)
    cheap, dear = entry(1, 2, block=0), entry(2, 40, block=1)
    out = d.decide([cheap, dear], "device", {"host": 4, "disk": 4})
    assert [(c.entry.entry_id, c.dst) for c in out] == [(1, None), (2, "host")]
    assert out[0].predicted_recompute_s == pytest.approx(4.192)
    assert out[1].predicted_recompute_s == pytest.approx(9.056)
    assert out[0].predicted_transfer_s == out[1].predicted_transfer_s == pytest.approx(6.0)
    recs = {r.entry_id: r for r in d.records()}  # in decision order: deepest first
    assert list(recs) == [2, 1]
    drop, demote = recs[1], recs[2]
    assert (drop.decision, drop.reason, drop.src_tier) == ("drop", "cost_benefit", "device")
    assert demote.decision == "demote:host" and demote.prefix_tokens == 40
    assert d.stats()["num_drop_decisions"] == 1 and d.stats()["num_demote_decisions"] == 1


def test_no_room_means_drop_and_room_goes_to_the_dearest(tmp_path):
    d = decider(tmp_path)
    dear = [entry(1, 40, 0), entry(2, 80, 1)]
    assert [c.dst for c in d.decide(dear, "device", {"host": 0, "disk": 0})] == [None, None]
    out = d.decide(dear, "device", {"host": 1, "disk": 0})
    assert [c.dst for c in out] == [None, "host"]  # the deeper block is worth more


def test_a_drop_counts_the_descendants_it_orphans(tmp_path):
    d = decider(tmp_path)
    index = PrefixReuseIndex(2)
    chain = index.insert(list(range(8)), [0, 1, 2, 3])  # prefixes 2, 4, 6, 8
    root = chain[0]
    alone = d.decide([root], "device", {"host": 4, "disk": 4})[0]
    assert alone.dst is None  # 4.192 s < 6 s round trip
    kept = d.decide([root], "device", {"host": 4, "disk": 4}, index)[0]
    assert kept.dst == "host"  # with the 3 blocks below it recompute is ~17 s
    want = sum(FM.block_flops(p, 2) for p in (2, 4, 6, 8)) / 1000.0
    assert kept.predicted_recompute_s == pytest.approx(want)
    assert d.records()[-1].predicted_recompute_s == pytest.approx(4.192)  # the block alone
    # decided together, deepest first: the leaf (prefix 8, 4.96 s) goes, then the prefix-6
    # block alone (4.704 s) goes, ... so the root no longer carries them and is dropped too
    out = d.decide(chain, "device", {"host": 4, "disk": 4}, index)
    assert [c.dst for c in out] == [None, None, None, None]


def test_demote_policy_always_goes_one_tier_down_without_predictions(tmp_path):
    d = MigrationDecider()
    d.bind(*tiers(tmp_path), block_tokens=2)
    out = d.decide([entry(1, 2, 0)], "device", {"host": 0, "disk": 0})
    assert out[0].dst == "host" and out[0].predicted_recompute_s is None
    assert d.decide([entry(2, 4, 1, tier="host")], "host", {"disk": 0})[0].dst == "disk"
    assert d.cost_model() is None and "migration_flops_per_s" not in d.stats()


def test_bad_names_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown migration_policy 'lru'; known: cost_benefit"):
        MigrationDecider("lru")
    with pytest.raises(ValueError, match="needs flop_model and measured FLOP/s"):
        MigrationDecider("cost_benefit")
    with pytest.raises(ConfigError, match="unknown migration policy 'lru'; known: cost_benefit"):
        parse_config({"engine": {"migration_policy": "lru"}})
    assert parse_config({}).engine.migration_policy == "demote"


def test_start_up_measurement_is_real_and_private(tmp_path):
    h, mig = tiers(tmp_path)
    bw = measure_tier_bandwidth(h)
    assert set(bw) == {
        ("device", "host"),
        ("host", "device"),
        ("device", "disk"),
        ("disk", "device"),
    }
    assert all(v > 0 for v in bw.values())
    assert mig.stats == {}  # the engine's migrator saw nothing
    assert h.tier("host").num_free_blocks == 4 and h.tier("disk").num_free_blocks == 4
    assert not list(h.tier("disk").dir.glob("blk-*"))


def step(compute_s, tokens, flops, prefill=True):
    n = tokens if prefill else 0
    return StepMetrics(0, 0.0, 1, tokens, n, tokens - n, 0.0, compute_s, 0.0, flops=flops)


def test_rates_come_from_measurements_then_running_totals(tmp_path):
    steps = []
    d = MigrationDecider("cost_benefit", FM, lambda: 123.0, lambda: steps)
    h, mig = tiers(tmp_path)
    d.bind(h, mig, block_tokens=2)
    m = d.cost_model()
    assert m.flops_per_s == 123.0  # the start-up matmul, until a prefill step has run
    assert set(m.bandwidth_bytes_per_s) == set(m.load_bandwidth_bytes_per_s) == {"host", "disk"}
    steps += [step(2.0, 10, 1000.0), step(1.0, 1, 9e9, prefill=False)]  # decode: not counted
    assert d.cost_model().flops_per_s == pytest.approx(500.0)
    h.tier("device").allocate(2)
    res = mig.migrate(MigrationPlan("device", "host", (0, 1), free_src=False))
    assert d.cost_model().bandwidth_bytes_per_s["host"] == pytest.approx(
        res.num_bytes / res.latency_s
    )


def seq(rid, tokens):
    req = Request(rid, list(tokens), SamplingParams(max_tokens=4))
    return Sequence(req, list(tokens), len(tokens), RequestMetrics(rid, 0.0, len(tokens)), None)


def run(m, s):
    need = -(-len(s.token_ids) // 2) - len(s.block_ids)
    assert m.allocate(s, need) is AllocStatus.OK
    s.num_computed_tokens = len(s.token_ids)
    m.commit(s)
    m.free(s)


def test_manager_logs_measured_store_load_and_a_missed_drop(tmp_path):
    """A 4-block device pool with a 2-block host tier; a round trip costs 4.4 s. The chain
    [1, 2 | 3, 4] is kept (its leaf costs 4.448 s, its root carries the leaf), the lone
    block [5, 6] (4.192 s) is dropped, and recomputing it later is a measured miss."""
    steps = []
    d = MigrationDecider("cost_benefit", FM, lambda: 1000.0, lambda: steps)
    m = NativeKVManager(
        torch.zeros(1, 2, 4, 1, 2, 1), 2, enable_prefix_caching=True, host_blocks=2, migration=d
    )
    d.pin_rates(1000.0, {"host": BLOCK_BYTES / 2.2}, {"host": BLOCK_BYTES / 2.2})
    run(m, seq("a", [1, 2, 3, 4, 0]))  # caches [1,2] and [1,2,3,4]
    run(m, seq("b", [5, 6, 0]))  # caches [5,6]
    run(m, seq("c", [7, 8, 9, 0]))  # evicts a's leaf: demoted
    run(m, seq("d", [9, 9, 9]))  # evicts a's root (demoted) and b's block (dropped)
    log = m.migration_log
    assert [(r.prefix_tokens, r.decision) for r in log] == [
        (4, "demote:host"),
        (2, "demote:host"),
        (2, "drop"),
    ]
    demoted, drop = log[:2], log[2]
    assert all(r.measured_store_s > 0 for r in demoted)
    assert drop.reason == "cost_benefit" and drop.predicted_recompute_s == pytest.approx(4.192)
    assert drop.predicted_transfer_s == pytest.approx(4.4)
    assert demoted[1].predicted_subtree_recompute_s == pytest.approx(4.192 + 4.448)

    assert m.match_prefix(seq("a2", [1, 2, 3, 4, 7])) == 4  # loaded back from host
    assert all(r.measured_load_s > 0 for r in demoted)

    steps.append(step(0.5, 10, 1.0))  # an earlier step
    b2 = seq("b2", [5, 6, 1])
    assert m.allocate(b2, 2) is AllocStatus.OK
    b2.num_computed_tokens = 3
    m.commit(b2)  # [5, 6] recomputed by the step in progress (index 1)
    assert drop.missed and drop.measured_recompute_s is None
    steps.append(step(0.4, 8, 1.0))
    assert m.migration_log[2].measured_recompute_s == pytest.approx(2 * 0.4 / 8)
    st = m.stats()
    assert st["num_demote_decisions"] == 2 and st["num_drop_decisions"] >= 1
    assert st["num_loaded_back_blocks"] == 2 and st["load_back_measured_s"] > 0
    assert st["load_back_predicted_s"] == pytest.approx(2 * 2.2)
    assert st["num_dropped_prefix_misses"] == 1
    assert st["miss_recompute_predicted_s"] == pytest.approx(4.192)
    assert st["miss_recompute_measured_s"] == pytest.approx(0.1)
