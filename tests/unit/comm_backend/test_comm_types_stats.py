"""CommConfig / TransferPlan validation names the field and allowed values; CommStats sums
per call and per step (the numbers StepMetrics.comm_s takes)."""

import pytest

from sagellm.comm_backend import CommConfig, CommStats, TransferPlan, create_backend
from sagellm.core.errors import ConfigError


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"world_size": 0, "rank": 0}, "comm.world_size must be an int >= 1"),
        ({"world_size": 2, "rank": 2}, "comm.rank must be in 0..1"),
        ({"world_size": 2, "rank": 0, "backend": "mpi"}, "['gloo', 'mock', 'nccl', 'shm']"),
        ({"world_size": 2, "rank": 0, "master_port": 70000}, "comm.master_port must be in"),
        ({"world_size": 2, "rank": 0, "timeout_s": 0}, "comm.timeout_s must be > 0"),
        ({"world_size": 2, "rank": 0, "group_name": "a b"}, "comm.group_name"),
        ({"world_size": 2, "rank": 0, "shm_buffer_bytes": 10}, "comm.shm_buffer_bytes"),
    ],
)
def test_comm_config_errors_name_the_field(kwargs, needle):
    with pytest.raises(ConfigError) as e:
        CommConfig(**kwargs)
    assert needle in str(e.value)


def test_transfer_plan_checks_lengths_and_bytes():
    with pytest.raises(ConfigError, match="target_block_ids has 1 ids, block_ids has 2"):
        TransferPlan("p", "d", (1, 2), 10, target_block_ids=(3,))
    with pytest.raises(ConfigError, match="total_bytes must be >= 0"):
        TransferPlan("p", "d", (1,), -1)
    assert TransferPlan("p", "d", (1, 2), 8).dest_block_ids == (1, 2)
    assert TransferPlan("p", "d", (1, 2), 8, target_block_ids=(5, 6)).dest_block_ids == (5, 6)


def test_comm_stats_per_call_per_step_and_hooks():
    st = CommStats()
    seen = []
    st.add_hook(seen.append)
    st.begin_step()
    st.record("all_reduce", 1000, 0.5, 0.0, "shm")
    st.record("all_gather", 3000, 1.0, 1.0, "shm")
    assert st.end_step() == pytest.approx(1.5)
    st.begin_step()
    st.record("all_reduce", 1000, 0.25, 2.0, "shm")
    assert st.end_step() == pytest.approx(0.25)
    assert st.total_s == pytest.approx(1.75) and st.total_bytes == 5000 and st.num_calls == 3
    assert [r.op for r in seen] == ["all_reduce", "all_gather", "all_reduce"]
    assert seen[0].bandwidth_bytes_per_s == pytest.approx(2000.0)
    s = st.summary()
    assert s["all_reduce"]["num_calls"] == 2
    assert s["all_reduce"]["bandwidth_bytes_per_s"] == pytest.approx(2000 / 0.75)


def test_unknown_backend_is_refused_before_any_io():
    cfg = CommConfig(world_size=1, rank=0, backend="mock", group_name="solo")
    with create_backend(cfg) as be:
        import torch

        t = torch.ones(3)
        assert be.all_reduce(t) is t and torch.equal(t, torch.ones(3))
        assert be.all_gather(t).shape == (1, 3)
        assert be.stats.num_calls == 0  # world_size 1: nothing crosses a wire
