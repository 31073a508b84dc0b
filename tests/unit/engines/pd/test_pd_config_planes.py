"""PDClusterConfig rejects bad fields by name with the allowed values; the engine's KV cache
seen as block-major planes moves through a KVTransferChannel byte-equal into another engine's
blocks (the path every PD handoff takes)."""

import socket

import pytest
import torch

from sagellm.benchmarks.tiny_model import tiny_random_checkpoint
from sagellm.comm_backend import KVTransferChannel, TcpTransport
from sagellm.core.config import AccelConfig, EngineConfig, ModelConfig
from sagellm.core.errors import ConfigError
from sagellm.engines.native import NativeEngine
from sagellm.engines.pd import PDClusterConfig, kv_planes


def test_bad_config_names_field_and_allowed_values():
    e = EngineConfig()
    with pytest.raises(
        ConfigError, match=r"pd.transport must be one of \['shm', 'tcp'\], got 'rdma'"
    ):
        PDClusterConfig(e, transport="rdma")
    with pytest.raises(ConfigError, match="pd.decode_num_threads must be an integer >= 1, got 0"):
        PDClusterConfig(e, decode_num_threads=0)
    with pytest.raises(ConfigError, match="pd.timeout_s must be > 0 seconds"):
        PDClusterConfig(e, timeout_s=0)
    with pytest.raises(ConfigError, match="pd.engine.name must be 'native'"):
        PDClusterConfig(e.model_copy(update={"name": "vllm"}))
    with pytest.raises(ConfigError, match="pd.engine.accel.speculative_tokens must be None"):
        PDClusterConfig(e.model_copy(update={"accel": AccelConfig(speculative_tokens=2)}))
    with pytest.raises(ConfigError, match="pd.engine.tp_size must be 1, got 2"):
        PDClusterConfig(e.model_copy(update={"tp_size": 2}))
    side = PDClusterConfig(e, prefill_num_threads=3, decode_num_kv_blocks=7).side("decode")
    assert side.num_threads == 1 and side.num_kv_blocks == 7


def test_planes_are_views_and_move_byte_equal(tmp_path):
    ck = tiny_random_checkpoint(tmp_path)
    cfg = EngineConfig(model=ModelConfig(path=str(ck), dtype="bfloat16"), block_size_tokens=4,
                       num_kv_blocks=8)  # fmt: skip
    src, dst = NativeEngine(cfg), NativeEngine(cfg)
    ps, pd_ = kv_planes(src), kv_planes(dst)
    assert len(ps) == 2 * src.arch.num_layers
    assert all(p.is_contiguous() and p.untyped_storage().data_ptr() ==
               src.cache.kv.untyped_storage().data_ptr() for p in ps)  # fmt: skip
    g = torch.Generator().manual_seed(3)
    src.cache.kv.copy_(torch.randn(src.cache.kv.shape, generator=g).to(torch.bfloat16))
    a, b = socket.socketpair()
    tx = KVTransferChannel("prefill", ps, TcpTransport(a, 5.0))
    rx = KVTransferChannel("decode", pd_, TcpTransport(b, 5.0))
    tx.transfer(tx.make_plan("decode", [5, 2], target_block_ids=[0, 6]))
    rx.receive()
    kv_s, kv_d = src.cache.kv.view(torch.int16), dst.cache.kv.view(torch.int16)
    assert torch.equal(kv_d[:, :, [0, 6]], kv_s[:, :, [5, 2]])  # every layer, K and V
    assert not kv_d[:, :, [1, 2, 3, 4, 5, 7]].any()
    tx.close()
    rx.close()
