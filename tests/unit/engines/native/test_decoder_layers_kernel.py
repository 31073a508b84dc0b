"""The one-call C++ decoder (``torch.ops.sagellm.decoder_layers``) and the per-layer C++
halves around Python attention (``decoder_layer_in``/``_out``, for long prefill chunks) equal
the per-layer torch path of ``DecoderModel.forward``: same logits and the same K/V rows
written to the cache, on a decode group plus a short chunk over scattered block tables, with
and without q|k|v biases (Llama, Qwen2), head sizes 16 and 64 (the vector RoPE), in fp32 and
bf16, with oneDNN-prepacked weights and without, at row counts that take each linear kernel
(GEMV, packed GEMM, transposed GEMM, plain GEMM). Each is used exactly where it applies:
Qwen3's q/k norms and an int8 cache take the torch path, a long prefill chunk the halves."""

import pytest
import torch

import sagellm.engines.native.model as model_mod
from sagellm.engines.native.attention import AttnMetadata, build_group
from sagellm.engines.native.batch_inputs import kv_rows_of
from sagellm.engines.native.kernels import decoder_layer_halves_op, decoder_layers_op, kernel_status
from sagellm.engines.native.kv_cache import PagedKVCache
from sagellm.engines.native.linear import packs_weights
from sagellm.engines.native.model import DecoderModel
from sagellm.engines.native.weights import load_checkpoint

pytestmark = pytest.mark.skipif(
    decoder_layers_op() is None, reason=f"C++ kernels not loaded: {kernel_status()}"
)

BS = 4
NUM_BLOCKS = 400


def batch(model: DecoderModel, contexts: list[int], q_lens: list[int], seed: int = 0):
    """Inputs of one step: sequence b has ``contexts[b]`` cached tokens (random K/V already in
    the cache) and ``q_lens[b]`` new ones; decodes (1 token) and chunks form two groups."""
    g = torch.Generator().manual_seed(seed)
    arch = model.arch
    cache = PagedKVCache(
        arch.num_layers, NUM_BLOCKS, BS, arch.num_kv_heads, arch.head_dim, model.dtype, model.device
    )
    cache.kv.copy_(torch.randn(cache.kv.shape, generator=g).to(model.dtype))
    perm = torch.randperm(NUM_BLOCKS, generator=g).tolist()
    ids, pos, slot_blocks = [], [], []
    groups: dict[bool, tuple[list, list, list, list]] = {
        True: ([], [], [], []),
        False: ([], [], [], []),
    }
    logits_rows = []
    for c, n in zip(contexts, q_lens, strict=True):
        table = [perm.pop() for _ in range(-(-(c + n) // BS))]
        grp = groups[n == 1]
        for lst, v in zip(grp, (len(ids), n, c, table), strict=True):
            lst.append(v)
        ids += torch.randint(0, arch.vocab_size, (n,), generator=g).tolist()
        pos += list(range(c, c + n))
        slot_blocks += [table[p // BS] for p in range(c, c + n)]
        logits_rows += range(len(ids) - n, len(ids))
    positions = torch.tensor(pos)
    meta = AttnMetadata(
        kv_rows=kv_rows_of(positions, torch.tensor(slot_blocks), arch.num_kv_heads, BS),
        groups=tuple(
            build_group(*v, block_size=BS, device=model.device) for v in groups.values() if v[0]
        ),
    )
    return torch.tensor(ids), positions, meta, cache, torch.tensor(logits_rows)


def both_paths(model, contexts, q_lens, monkeypatch):
    """(logits, cache) with the C++ ops, then with the per-layer torch path, and the calls
    of (decoder_layers, decoder_layer_in) the first forward made."""
    ids, positions, meta, cache, rows = batch(model, contexts, q_lens)
    calls = {"one": 0, "in": 0}
    one, (layer_in, layer_out) = decoder_layers_op(), decoder_layer_halves_op()

    def spy_one(*args):
        calls["one"] += 1
        return one(*args)

    def spy_in(*args):
        calls["in"] += 1
        return layer_in(*args)

    monkeypatch.setattr(model_mod, "decoder_layers_op", lambda: spy_one)
    monkeypatch.setattr(model_mod, "decoder_layer_halves_op", lambda: (spy_in, layer_out))
    fused = model.forward(ids, positions, meta, cache, rows)
    fused_cache = cache.kv.clone()
    _, _, _, cache2, _ = batch(model, contexts, q_lens)  # the same random cache again
    monkeypatch.setattr(model_mod, "decoder_layers_op", lambda: None)
    monkeypatch.setattr(model_mod, "decoder_layer_halves_op", lambda: None)
    plain = model.forward(ids, positions, meta, cache2, rows)
    return fused, fused_cache, plain, cache2.kv, (calls["one"], calls["in"])


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("family", ["llama", "qwen2", "llama-d64"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 6e-2)])
@pytest.mark.parametrize(
    "contexts,q_lens,expect_calls",
    [
        ([9], [1], (1, 0)),  # batch-1 decode: GEMV
        ([5, 17, 30, 0, 11, 2], [1, 1, 1, 3, 1, 1], (1, 0)),  # decodes + a short chunk, 8 rows
        ([3 + i for i in range(20)], [1] * 18 + [16, 16], (1, 0)),  # 50 rows
        ([40 + i for i in range(17)], [16] * 17, (1, 0)),  # 272 rows: the plain GEMM
        ([0, 7, 12], [40, 24, 1], (0, 2)),  # long chunks: the halves, once per layer
    ],
)
def test_cpp_layers_equal_per_layer_path(
    tiny_checkpoint, pack, family, dtype, tol, contexts, q_lens, expect_calls, monkeypatch
):
    """``pack``: oneDNN-prepacked weights (2+ rows) or plain ones (SAGELLM_PACK_WEIGHTS=0)."""
    monkeypatch.setenv("SAGELLM_PACK_WEIGHTS", "1" if pack else "0")
    _, folder = tiny_checkpoint(family)
    ckpt = load_checkpoint(folder, dtype)
    model = DecoderModel(ckpt.arch, ckpt.state_dict, dtype, torch.device("cpu"))
    fused, fused_kv, plain, plain_kv, calls = both_paths(model, contexts, q_lens, monkeypatch)
    assert calls == expect_calls  # (one-call decoder, layer_in) calls
    assert bool(model.packed) == (pack and packs_weights(dtype))
    torch.testing.assert_close(fused, plain, atol=tol, rtol=tol)
    torch.testing.assert_close(fused_kv.float(), plain_kv.float(), atol=tol, rtol=tol)
    assert not torch.equal(fused_kv, batch(model, contexts, q_lens)[3].kv)  # K/V were written


def test_not_used_where_it_does_not_apply(tiny_checkpoint, monkeypatch):
    """Qwen3 (q/k norms), a prefill chunk longer than the kernel's queries and an int8 cache
    do not run the one-call decoder; only the long chunk runs the layer halves."""
    real = decoder_layers_op()
    called = []

    def spy(*args):
        called.append(1)
        return real(*args)

    halves = []
    layer_in, layer_out = decoder_layer_halves_op()

    def spy_in(*args):
        halves.append(1)
        return layer_in(*args)

    monkeypatch.setattr(model_mod, "decoder_layers_op", lambda: spy)
    monkeypatch.setattr(model_mod, "decoder_layer_halves_op", lambda: (spy_in, layer_out))
    _, q3 = tiny_checkpoint("qwen3")
    ckpt = load_checkpoint(q3, torch.float32)
    qwen3 = DecoderModel(ckpt.arch, ckpt.state_dict, torch.float32, torch.device("cpu"))
    ids, positions, meta, cache, rows = batch(qwen3, [5], [1])
    qwen3.forward(ids, positions, meta, cache, rows)
    assert halves == []
    _, llama_dir = tiny_checkpoint("llama")
    ckpt = load_checkpoint(llama_dir, torch.float32)
    llama = DecoderModel(ckpt.arch, ckpt.state_dict, torch.float32, torch.device("cpu"))
    ids, positions, meta, cache, rows = batch(llama, [0], [40])
    llama.forward(ids, positions, meta, cache, rows)
    assert called == [] and len(halves) == llama.arch.num_layers
    ids, positions, meta, cache, rows = batch(llama, [5], [1])
    llama.forward(ids, positions, meta, cache, rows)
    assert called == [1]
    arch = llama.arch
    int8 = PagedKVCache(
        arch.num_layers, NUM_BLOCKS, BS, arch.num_kv_heads, arch.head_dim, torch.int8, llama.device
    )
    llama.forward(ids, positions, meta, int8, rows)
    assert called == [1] and len(halves) == llama.arch.num_layers
