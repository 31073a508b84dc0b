"""Bad KV input: config errors name the field (and both numbers), quotas hold one tenant back
without touching the others."""

import pytest
import torch

from sagellm.core import ConfigError, InvalidRequestError, Request, SamplingParams, parse_config
from sagellm.engines.native import NativeEngine

SP = SamplingParams(max_tokens=4, ignore_eos=True)


@pytest.mark.parametrize(
    "engine, match",
    [
        ({"block_size_tokens": 0}, r"engine\.block_size_tokens: .*greater than or equal to 1"),
        ({"block_size_tokens": -16}, r"engine\.block_size_tokens"),
        (
            {"num_kv_blocks": 4, "block_size_tokens": 16, "max_model_len_tokens": 128},
            r"num_kv_blocks \(4\) is smaller than one request of max_model_len_tokens \(128\)"
            r" needs \(8 blocks",
        ),
        (
            {"enable_prefix_caching": True, "host_tier_blocks": 4, "host_tier_bytes": 1024},
            "set host_tier_blocks or host_tier_bytes, not both",
        ),
        ({"host_tier_blocks": 4}, "need enable_prefix_caching"),
        (
            {"enable_prefix_caching": True, "disk_tier_blocks": 4},
            "kv_cache_dir must be set",
        ),
        ({"tenant_quotas": {"a": {"hard_blocks": 2, "soft_blocks": 3}}}, "soft_blocks \\(3\\)"),
        ({"tenant_quotas": {"a": {"hard_blocks": 0}}}, r"engine\.tenant_quotas\.a\.hard_blocks"),
        ({"defrag_fragmentation_threshold": 0.0}, "defrag_fragmentation_threshold"),
        (
            {"migration_policy": "lru"},
            r"engine\.migration_policy: .*unknown migration policy 'lru'; "
            "known: cost_benefit, demote",
        ),
    ],
)
def test_config_errors_name_the_field(engine, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({"engine": engine})


def test_disk_tier_path_not_writable(tiny_checkpoint, tmp_path):
    _, folder = tiny_checkpoint("llama")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="kv_cache_dir .*a-file.* is not writable"):
        NativeEngine.from_pretrained(
            folder,
            enable_prefix_caching=True,
            disk_tier_blocks=8,
            kv_cache_dir=str(blocker / "sub"),
        )


def test_host_tier_bytes_smaller_than_a_block(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    with pytest.raises(ValueError, match=r"host_tier_bytes \(10\) holds no block of \d+ bytes"):
        NativeEngine.from_pretrained(folder, enable_prefix_caching=True, host_tier_bytes=10)


def test_tenant_over_hard_quota_waits_others_run(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    eng = NativeEngine.from_pretrained(
        folder,
        block_size_tokens=4,
        num_kv_blocks=64,
        tenant_quotas={"small": {"hard_blocks": 4}},
    )
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 256, (10,), generator=g).tolist()  # 14 tokens -> 4 blocks
    for i in range(3):
        eng.add_request(Request(f"s{i}", prompt, SP, tenant_id="small"))
    for i in range(3):
        eng.add_request(Request(f"b{i}", prompt, SP, tenant_id="big"))
    eng.step()
    running = {s.request_id for s in eng.queues.running}
    assert running == {"s0", "b0", "b1", "b2"}  # s1, s2 wait behind the quota, b* do not
    assert eng.kv.quota.usage_blocks("small") <= 4
    while eng.has_unfinished():
        eng.step()
        assert eng.kv.quota.usage_blocks("small") <= 4
    outs = {r: eng.output_token_ids(r) for r in ("s0", "s1", "s2", "b0", "b1", "b2")}
    assert len({tuple(o) for o in outs.values()}) == 1 and len(outs["s2"]) == 4
    (small,) = [u for u in eng.kv.quota.snapshot() if u.tenant_id == "small"]
    # the plans respect the quota (the snapshot carries each tenant's room), so no charge is
    # ever refused: the quota holds requests back before allocation, not at it
    assert small.num_hard_violations == 0 and small.usage_blocks == 0
    with pytest.raises(InvalidRequestError, match="hard quota is 4 blocks"):
        eng.add_request(Request("huge", list(range(30)), SP, tenant_id="small"))


def test_quota_preempts_only_the_same_tenant(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    eng = NativeEngine.from_pretrained(
        folder,
        block_size_tokens=4,
        num_kv_blocks=64,
        tenant_quotas={"t": {"hard_blocks": 5}},
    )
    sp = SamplingParams(max_tokens=8, ignore_eos=True)
    eng.add_request(Request("t0", list(range(8)), sp, tenant_id="t"))  # 2 blocks, grows to 4
    eng.add_request(Request("t1", list(range(8)), sp, tenant_id="t"))
    eng.add_request(Request("o0", list(range(8)), sp, tenant_id="other"))
    while eng.has_unfinished():
        eng.step()
    by_id = {m.request_id: m for m in eng.request_metrics()}
    assert by_id["o0"].preemptions == 0
    assert by_id["t0"].preemptions + by_id["t1"].preemptions >= 1
    assert eng.output_token_ids("t0") == eng.output_token_ids("t1")
