"""The mock backend (ranks = threads) against plain torch sums, plus CommFusion and
OverlapWindow on it: fused results equal unfused ones exactly; errors name what is wrong."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from sagellm.comm_backend import (
    CommConfig,
    CommFusion,
    CommTimeoutError,
    OverlapWindow,
    create_backend,
)
from sagellm.core.errors import ConfigError, InvalidRequestError


def _run(world_size, fn, group, timeout_s=10.0):
    def one(rank):
        cfg = CommConfig(world_size, rank, "mock", group_name=group, timeout_s=timeout_s)
        with create_backend(cfg) as be:
            return fn(be)

    with ThreadPoolExecutor(world_size) as ex:
        return list(ex.map(one, range(world_size)))


def _inputs(rank, n=1000, dtype=torch.float32):
    return torch.randn(n, generator=torch.Generator().manual_seed(rank)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mock_collectives_match_torch(dtype):
    def fn(be):
        x = _inputs(be.rank, dtype=dtype)
        y = be.all_reduce(x.clone())
        g = be.all_gather(x)
        if be.rank == 0:
            be.send(torch.arange(4.0), 2)
        got = be.recv(torch.zeros(4), 0) if be.rank == 2 else None
        be.barrier()
        return y, g, got, [r.op for r in be.stats.records]

    res = _run(3, fn, f"mock-{str(dtype)[6:]}")
    xs = [_inputs(r, dtype=dtype) for r in range(3)]
    want = (xs[0].float() + xs[1].float() + xs[2].float()).to(dtype)
    for y, g, _, ops in res:
        assert torch.equal(y, want)
        assert torch.equal(g, torch.stack(xs))
        assert ops[:2] == ["all_reduce", "all_gather"] and ops[-1] == "barrier"
    assert torch.equal(res[2][2], torch.arange(4.0))


def test_fusion_equals_unfused_and_issues_fewer_collectives():
    shapes = [(7,), (3, 5), (64,), (1,), (200,)]

    def fn(be):
        ts = [_inputs(be.rank * 10 + i, n=int(torch.tensor(s).prod())).view(s) for i, s in
              enumerate(shapes)]  # fmt: skip
        unfused = [be.all_reduce(t.clone()) for t in ts]
        fusion = CommFusion(be, bucket_bytes=1024)
        fused = [fusion.all_reduce(t.clone()) for t in ts]
        assert fusion.num_pending == len(shapes)
        n = fusion.flush()
        return unfused, fused, n

    for unfused, fused, n in _run(2, fn, "mock-fusion"):
        assert all(torch.equal(a, b) for a, b in zip(unfused, fused, strict=True))
        assert n == 2  # 7+15+64+1 floats fit 1024 bytes, the 200-float tensor is its own bucket


def test_overlap_window_results_and_accounting():
    def fn(be):
        win = OverlapWindow(be, max_in_flight=2)
        ts = [_inputs(be.rank + 5 * i) for i in range(4)]
        handles = [win.submit(t) for t in ts]
        a = torch.randn(64, 64)
        for _ in range(5):
            a = a @ a.T / 64  # compute while the collectives run
        win.wait(handles[-1])
        win.wait_all()
        return ts, win.num_done, win.exposed_s, win.comm_s, win.overlap_efficiency

    res = _run(2, fn, "mock-overlap")
    for i in range(4):
        want = _inputs(5 * i) + _inputs(1 + 5 * i)
        assert torch.equal(res[0][0][i], want) and torch.equal(res[1][0][i], want)
    for _, num_done, exposed, comm, eff in res:
        assert num_done == 4 and comm > 0 and 0.0 <= eff <= 1.0 and exposed >= 0


def test_mock_errors():
    cfg = CommConfig(2, 0, "mock", group_name="mock-errs", timeout_s=0.3)
    with create_backend(cfg) as be:
        with pytest.raises(ConfigError, match="world_size 3 does not match the world_size 2"):
            create_backend(CommConfig(3, 1, "mock", group_name="mock-errs"))
        with pytest.raises(InvalidRequestError, match="dtype must be one of float32, bfloat16"):
            be.all_reduce(torch.ones(3, dtype=torch.int32))
        with pytest.raises(InvalidRequestError, match="dst must be a rank in 0..1 other than 0"):
            be.send(torch.ones(3), 0)
        with pytest.raises(CommTimeoutError, match="a peer never arrived"):
            be.all_reduce(torch.ones(3))  # rank 1 never joins
    with pytest.raises(ConfigError, match="bucket_bytes"):
        CommFusion(be, bucket_bytes=0)
    with pytest.raises(ConfigError, match="max_in_flight"):
        OverlapWindow(be, max_in_flight=0)
