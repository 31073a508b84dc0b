"""KVTransferChannel and ChannelKVConnector with real KV tensors moved between two real
processes (tcp and shm transports): the bytes that arrive equal the bytes sent, at the
receiver's block ids, and nothing else changes; plan checks name the wrong numbers."""

import socket

import pytest
import torch
import torch.multiprocessing as mp

from sagellm.comm_backend import (
    ChannelKVConnector,
    KVTransferChannel,
    TcpTransport,
    TransferPlan,
    open_kv_channel,
)
from sagellm.core.errors import ConfigError

NUM_LAYERS, NUM_BLOCKS, BLOCK_SHAPE = 3, 16, (2, 4, 3, 8)  # (k/v, block tokens, kv heads, dim)


def _caches(seed: int, dtype=torch.bfloat16) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(NUM_BLOCKS, *BLOCK_SHAPE, generator=g).to(dtype) for _ in range(NUM_LAYERS)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sender(port: int, transport: str) -> None:
    ch = open_kv_channel("prefill", _caches(7), transport=transport, listen=False, port=port)
    ch.transfer(ch.make_plan("decode", [9, 2, 14], target_block_ids=[0, 5, 1]))
    ch.transfer(ch.make_plan("decode", [3], target_block_ids=[7], layer_ids=[2]))
    ch.transport.recv()  # the receiver's "done": keep the connection until it has read all
    ch.close()


def _spawn(target, *args):
    p = mp.get_context("spawn").Process(target=target, args=args, daemon=True)
    p.start()
    return p


@pytest.mark.parametrize("transport", ["tcp", "shm"])
def test_blocks_arrive_byte_equal_between_processes(transport):
    port = _free_port()
    p = _spawn(_sender, port, transport)
    try:
        mine = [torch.zeros(NUM_BLOCKS, *BLOCK_SHAPE, dtype=torch.bfloat16) for _ in range(3)]
        ch = open_kv_channel("decode", mine, transport=transport, listen=True, port=port,
                             timeout_s=120)  # fmt: skip
        plan1, rec1 = ch.receive()
        plan2, _ = ch.receive()
        ch.transport.send({"done": True})
        ch.close()
    finally:
        p.join(timeout=60)
    assert p.exitcode == 0
    src = _caches(7)
    assert plan1.block_ids == (9, 2, 14) and plan1.dest_block_ids == (0, 5, 1)
    assert rec1.num_bytes == 3 * 3 * src[0][0].numel() * 2
    for layer in range(NUM_LAYERS):
        got = mine[layer][[0, 5, 1]].view(torch.int16)  # compare bits
        assert torch.equal(got, src[layer][[9, 2, 14]].view(torch.int16))
    assert torch.equal(mine[2][7].view(torch.int16), src[2][3].view(torch.int16))
    untouched = [b for b in range(NUM_BLOCKS) if b not in (0, 1, 5, 7)]
    assert all(not mine[layer][untouched].any() for layer in range(NUM_LAYERS))
    assert not mine[0][7].any() and plan2.layer_ids == (2,)


def test_plan_checks_name_the_numbers():
    a, b = socket.socketpair()
    ch = KVTransferChannel("p", _caches(1), TcpTransport(a, 5.0))
    per_block = ch.bytes_per_block
    with pytest.raises(
        ConfigError, match=rf"total_bytes is 5 but 3 layers x 1 blocks x {per_block}"
    ):
        ch.transfer(TransferPlan("p", "d", (1,), 5))
    with pytest.raises(ConfigError, match=r"block_ids must be in 0..15, got \[16\]"):
        ch.transfer(ch.make_plan("d", [16]))
    with pytest.raises(ConfigError, match=r"caches\[1\] must be contiguous"):
        KVTransferChannel("p", [torch.zeros(4, 2), torch.zeros(5, 2)], TcpTransport(b, 5.0))
    with pytest.raises(ConfigError, match="kv_connector.role must be 'producer' or 'consumer'"):
        ChannelKVConnector("both", ch, "d")
    ch.close()
    b.close()


def _producer(port: int) -> None:
    caches = [torch.zeros(NUM_BLOCKS, *BLOCK_SHAPE, dtype=torch.bfloat16) for _ in range(3)]
    ch = open_kv_channel("prefill", caches, transport="shm", listen=False, port=port)
    conn = ChannelKVConnector("producer", ch, "decode", timeout_s=60)
    conn.update_state_after_alloc("r1", [4, 11], 0, num_prompt_tokens=7)
    conn.bind_connector_metadata(conn.build_connector_meta())
    src = _caches(3)
    for layer in range(NUM_LAYERS):
        caches[layer][[4, 11]] = src[layer][[4, 11]]  # "the forward wrote layer l's KV"
        conn.save_kv_layer(layer, caches[layer])
    conn.wait_for_save()
    delay_free, params = conn.request_finished("r1", [4, 11])
    sent, recvd = conn.get_finished()
    assert sent == {"r1"} and recvd is None and params["num_layers"] == NUM_LAYERS
    assert delay_free is False  # every layer was sent before the request finished
    ch.transport.recv()  # wait for the consumer's "done" before closing
    conn.close()


def test_connector_producer_to_consumer_across_processes():
    port = _free_port()
    p = _spawn(_producer, port)
    try:
        mine = [torch.zeros(NUM_BLOCKS, *BLOCK_SHAPE, dtype=torch.bfloat16) for _ in range(3)]
        ch = open_kv_channel("decode", mine, transport="shm", listen=True, port=port,
                             timeout_s=120)  # fmt: skip
        conn = ChannelKVConnector("consumer", ch, "prefill", timeout_s=120)
        import time

        deadline = time.monotonic() + 120
        while (m := conn.get_num_new_matched_tokens("r1", 7, 0))[0] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)  # polling the scheduler side, as a scheduler step would
        assert m == (6, True)  # 7 prompt tokens, the last one is recomputed locally
        with pytest.raises(ConfigError, match="needs 2 blocks for its remote KV, got 1"):
            conn.update_state_after_alloc("r1", [1], m[0])
        conn.update_state_after_alloc("r1", [8, 2, 3], m[0])
        conn.bind_connector_metadata(conn.build_connector_meta())
        conn.start_load_kv()
        for layer in range(NUM_LAYERS):
            conn.wait_for_layer_load(layer)
        sending, loaded = conn.get_finished()
        assert sending is None and loaded == {"r1"}
        assert conn.request_finished("r1", [8, 2]) == (False, None)
        ch.transport.send({"done": True})
        conn.close()
    finally:
        p.join(timeout=60)
    assert p.exitcode == 0
    src = _caches(3)
    for layer in range(NUM_LAYERS):
        assert torch.equal(mine[layer][[8, 2]].view(torch.int16),
                           src[layer][[4, 11]].view(torch.int16))  # fmt: skip
        assert not mine[layer][3].any()  # allocated beyond the remote blocks: untouched


def test_connector_surfaces_a_lost_peer_within_its_timeout():
    import time

    from sagellm.comm_backend import CommError, KVConnectorMetadata, KVRequestSpec

    a, b = socket.socketpair()
    ch = KVTransferChannel("decode", _caches(2), TcpTransport(a, 5.0))
    conn = ChannelKVConnector("consumer", ch, "prefill", timeout_s=5.0)
    conn.bind_connector_metadata(KVConnectorMetadata(loads=[KVRequestSpec("r9", (0,), 4)]))
    b.close()  # the producer's end goes away mid-stream
    t0 = time.monotonic()
    with pytest.raises(CommError, match="peer failed"):
        conn.wait_for_layer_load(0)
    with pytest.raises(CommError, match="peer closed the connection"):
        conn.get_finished()
    assert time.monotonic() - t0 < 5.0
    conn.close()
