import numpy as np
import pytest

from sagellm.benchmarks.config import BenchmarkConfig
from sagellm.benchmarks.workloads import (
    ArrivalConfig,
    LengthDist,
    TraceConfig,
    WorkloadConfig,
    arrival_offsets,
    build_workload,
)
from sagellm.core import ConfigError, parse_config


def as_tuple(reqs):
    return [
        (r.request_id, r.arrival_offset_s, tuple(r.prompt_token_ids), r.max_tokens, r.tenant_id)
        for r in reqs
    ]


@pytest.mark.parametrize("kind", ["synthetic", "shared_prefix", "multi_turn", "tenant_mix"])
def test_same_seed_same_requests(kind):
    cfg = WorkloadConfig(
        kind=kind,
        num_requests=12,
        seed=7,
        arrival=ArrivalConfig(process="poisson", rate_per_s=5.0),
        prompt_tokens=LengthDist(dist="uniform", min=4, max=40),
        tenants={"a": 1.0, "b": 3.0},
    )
    assert as_tuple(build_workload(cfg, 1000)) == as_tuple(build_workload(cfg, 1000))
    other = cfg.model_copy(update={"seed": 8})
    assert as_tuple(build_workload(cfg, 1000)) != as_tuple(build_workload(other, 1000))


def test_shared_prefix_groups_share_prefix():
    cfg = WorkloadConfig(
        kind="shared_prefix",
        num_requests=6,
        num_groups=2,
        shared_prefix_tokens=16,
        prompt_tokens=LengthDist(mean=4),
    )
    reqs = build_workload(cfg, 1000)
    assert all(len(r.prompt_token_ids) == 20 for r in reqs)
    g0 = [r.prompt_token_ids[:16] for r in reqs if r.group == "g0"]
    assert len(g0) == 3 and all(p == g0[0] for p in g0)
    assert reqs[0].prompt_token_ids[:16] != reqs[1].prompt_token_ids[:16]


def test_multi_turn_prompt_extends_history():
    cfg = WorkloadConfig(
        kind="multi_turn",
        num_sessions=2,
        turns_per_session=3,
        think_time_s=2.0,
        prompt_tokens=LengthDist(mean=5),
        output_tokens=LengthDist(mean=3),
    )
    reqs = {r.request_id: r for r in build_workload(cfg, 1000)}
    t0, t1, t2 = (reqs[f"s0-t{i}"] for i in range(3))
    assert t1.prompt_token_ids[:5] == t0.prompt_token_ids
    assert len(t1.prompt_token_ids) == 5 + 3 + 5 and len(t2.prompt_token_ids) == 13 + 3 + 5
    assert t2.prompt_token_ids[:13] == t1.prompt_token_ids
    assert t1.arrival_offset_s - t0.arrival_offset_s == pytest.approx(2.0)


def test_arrival_rates_and_burstiness():
    rng = np.random.default_rng(0)
    poisson = np.diff(arrival_offsets(ArrivalConfig(process="poisson", rate_per_s=10), 4000, rng))
    rng = np.random.default_rng(0)
    bursty = np.diff(
        arrival_offsets(ArrivalConfig(process="gamma", rate_per_s=10, burstiness=0.25), 4000, rng)
    )
    assert poisson.mean() == pytest.approx(0.1, rel=0.1)
    assert bursty.mean() == pytest.approx(0.1, rel=0.15)
    cv = lambda x: x.std() / x.mean()  # noqa: E731
    assert cv(poisson) == pytest.approx(1.0, abs=0.1)
    assert cv(bursty) == pytest.approx(2.0, abs=0.3)  # gamma shape k: CV = 1 / sqrt(k)
    assert arrival_offsets(ArrivalConfig(process="burst"), 3, rng) == [0.0, 0.0, 0.0]


def test_trace_replay_maps_hash_ids_to_equal_tokens(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(
        '{"timestamp": 1000, "input_length": 1024, "output_length": 64, "hash_ids": [5, 6]}\n'
        '{"timestamp": 3000, "input_length": 1500, "output_length": 32, "hash_ids": [5, 6, 9]}\n'
    )
    cfg = WorkloadConfig(
        kind="trace", trace=TraceConfig(path=str(p), length_scale=1 / 32, time_scale=0.5)
    )
    a, b = build_workload(cfg, 1000)
    assert len(a.prompt_token_ids) == 32 and len(b.prompt_token_ids) == 47
    assert b.prompt_token_ids[:32] == a.prompt_token_ids  # blocks 5, 6 shared
    assert (a.arrival_offset_s, b.arrival_offset_s) == (0.0, 1.0)
    assert (a.max_tokens, b.max_tokens) == (2, 1)


def test_bad_workload_config_names_field():
    with pytest.raises(ConfigError, match=r"workload.arrival.process"):
        parse_config({"workload": {"arrival": {"process": "uniform"}}}, BenchmarkConfig)
    with pytest.raises(ValueError, match="trace section"):
        WorkloadConfig(kind="trace")
