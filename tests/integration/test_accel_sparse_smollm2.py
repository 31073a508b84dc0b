"""Sparse attention on SmolLM2-135M (fp32, dequantized from the package's Q4_1 GGUF) against
dense attention, decode-style on a fixed Shakespeare slice.

Slice: the first 2,000 characters of tinyshakespeare.txt, tokenized without a chat template;
tokens [0, 256) are the context, the next 16 are teacher-forced decode steps. Bounds (stated,
generous for 16 tokens): with half of the context attended (window 128 / Quest 8 blocks of 16)
mean KL(dense || sparse) <= 0.5 nats, top-1 agreement >= 0.6, perplexity within 1.5x of
dense. A pattern covering the whole context gives exactly the dense logits.
"""

import pytest
import torch

from sagellm.accel.eval_data import eval_data_available, shakespeare_text
from sagellm.accel.sparse import compare_logits
from sagellm.core.config import AccelConfig
from sagellm.engines.native import NativeEngine

CONTEXT, SCORED = 256, 16
AVAILABLE, WHY = eval_data_available()
pytestmark = [pytest.mark.slow, pytest.mark.heavy, pytest.mark.skipif(not AVAILABLE, reason=WHY)]


@pytest.fixture(scope="module")
def smollm2():
    eng = NativeEngine.from_pretrained("smollm2-135m-instruct", num_kv_blocks=24)
    tokens = eng.tokenizer.encode(shakespeare_text()[:2000])
    assert len(tokens) >= CONTEXT + SCORED
    prompt, targets = tokens[:CONTEXT], tokens[CONTEXT : CONTEXT + SCORED]
    dense = eng.decode_logits(prompt, targets)
    return eng, prompt, targets, dense


def _logits(eng, accel: AccelConfig, prompt, targets):
    eng.set_sparse_attention(accel)
    try:
        return eng.decode_logits(prompt, targets)
    finally:
        eng.set_sparse_attention(AccelConfig())


@pytest.mark.parametrize(
    "accel",
    [
        AccelConfig(enable_sparsity=True, sink_tokens=4, window_tokens=4096),
        AccelConfig(enable_sparsity=True, sparsity_method="quest", quest_top_k_blocks=64),
    ],
    ids=["streaming", "quest"],
)
def test_covering_pattern_is_exactly_dense(smollm2, accel):
    """Dense decode may run the C++ kernel while a sparse pattern takes the torch path: the
    logits agree to fp32 summation-order error and every top-1 token is the same."""
    eng, prompt, targets, dense = smollm2
    got = _logits(eng, accel, prompt, targets)
    torch.testing.assert_close(got, dense, atol=1e-4, rtol=1e-4)
    assert (got.argmax(-1) == dense.argmax(-1)).all()


@pytest.mark.parametrize(
    "accel",
    [
        AccelConfig(enable_sparsity=True, sink_tokens=4, window_tokens=128),
        AccelConfig(enable_sparsity=True, sparsity_method="quest", quest_top_k_blocks=8),
    ],
    ids=["streaming", "quest"],
)
def test_half_context_accuracy_within_bounds(smollm2, accel):
    import torch

    eng, prompt, targets, dense = smollm2
    sparse = _logits(eng, accel, prompt, targets)
    acc = compare_logits(dense, sparse, torch.tensor(targets), CONTEXT)
    assert acc.max_abs_logit_error > 0  # something was dropped
    assert acc.mean_kl_nats <= 0.5
    assert acc.top1_agreement >= 0.6
    assert acc.perplexity_ratio <= 1.5
