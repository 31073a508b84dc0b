"""The shm primitives themselves: the compiled extension loads where g++ and ninja exist, its
reduction equals the fp32 rank-order sum for fp32 and bf16, and flag waits report who is late;
the pure-torch fallback gives the same answers."""

import pytest
import torch

from sagellm.comm_backend.shm_ext import (
    TorchShmOps,
    compiler_available,
    load_shm_ops,
    shm_ops_kind,
)


def _ops_under_test():
    return [load_shm_ops(), TorchShmOps()]


def test_extension_loads_when_a_compiler_exists():
    load_shm_ops()
    assert shm_ops_kind() == ("cpp" if compiler_available() else "torch")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reduce_into_is_the_rank_order_fp32_sum(dtype):
    g = torch.Generator().manual_seed(0)
    srcs = [torch.randn(4097, generator=g).to(dtype) for _ in range(3)]
    want = (srcs[0].float() + srcs[1].float() + srcs[2].float()).to(dtype)
    for ops in _ops_under_test():
        out = torch.empty(4097, dtype=dtype)
        ops.reduce_into(out, srcs)
        assert torch.equal(out, want), type(ops)
        alias = srcs[1].clone()  # out may alias a source (the shm slot case)
        ops.reduce_into(alias, [srcs[0], alias, srcs[2]])
        assert torch.equal(alias, want)


def test_flags_and_waits():
    for ops in _ops_under_test():
        flags = torch.zeros(8, dtype=torch.int64)
        ops.store_release(flags, 3, 7)
        assert ops.load_acquire(flags, 3) == 7
        assert ops.wait_geq(flags, [3], 7, 0.01) == -1
        assert ops.wait_geq(flags, [3, 5], 1, 0.01) == 5  # index 5 is still behind
        dst = torch.zeros(100, dtype=torch.uint8)
        ops.copy_bytes(dst, torch.arange(100, dtype=torch.uint8))
        assert torch.equal(dst, torch.arange(100, dtype=torch.uint8))
