"""The optional Mooncake transport (transfer engine over loopback TCP) moves real KV blocks
between two processes byte for byte; skipped when ``mooncake.engine`` does not import."""

import socket

import pytest
import torch
import torch.multiprocessing as mp

pytest.importorskip("mooncake.engine", reason="mooncake-transfer-engine-non-cuda not importable")

from sagellm.comm_backend import open_kv_channel

SHAPE = (12, 2, 4, 2, 16)  # blocks, k/v, block tokens, kv heads, head dim


def _caches(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*SHAPE, generator=g) for _ in range(2)]


def _sender(port: int) -> None:
    ch = open_kv_channel("prefill", _caches(5), transport="mooncake", listen=False, port=port,
                         shm_buffer_bytes=8192)  # fmt: skip
    ch.transfer(ch.make_plan("decode", [1, 10, 4], target_block_ids=[0, 2, 3]))
    ch.transport.recv()
    ch.close()


def test_mooncake_blocks_arrive_byte_equal():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = mp.get_context("spawn").Process(target=_sender, args=(port,), daemon=True)
    p.start()
    try:
        mine = [torch.zeros(*SHAPE) for _ in range(2)]
        ch = open_kv_channel("decode", mine, transport="mooncake", listen=True, port=port,
                             timeout_s=120, shm_buffer_bytes=8192)  # fmt: skip
        plan, rec = ch.receive()  # 3 blocks x 2 layers x 1 KiB: several 8 KiB chunks
        ch.transport.send({"done": True})
        ch.close()
    finally:
        p.join(timeout=60)
    assert p.exitcode == 0
    src = _caches(5)
    for layer in range(2):
        assert torch.equal(mine[layer][[0, 2, 3]].view(torch.int32),
                           src[layer][[1, 10, 4]].view(torch.int32))  # fmt: skip
        assert not mine[layer][1].any()
    assert rec.num_bytes == plan.total_bytes == 2 * 3 * src[0][0].numel() * 4
