"""Speculative decoding: drafters behind ``DraftModel.generate_draft`` (n-gram prompt lookup;
a causal LM with its own KV — the target with layers skipped, a layer-truncated or quantized
copy, another checkpoint with the same vocabulary), ``Verifier.verify`` (exact greedy
equivalence; rejection sampling for temperature > 0) and ``run_speculative_decode`` (one
request outside an engine). The native engine runs the same pieces inside its plans (each
decoding request's step is a ``verify`` node)."""

from sagellm.accel.speculative.decode import SpecDecodeResult, run_speculative_decode
from sagellm.accel.speculative.model_drafter import ModelDrafter
from sagellm.accel.speculative.ngram import NgramDrafter, ngram_lookup
from sagellm.accel.speculative.probs import filter_top_k_top_p, sampling_probs
from sagellm.accel.speculative.protocol import CausalLM, DraftModel
from sagellm.accel.speculative.stats import SpecDecodeStats
from sagellm.accel.speculative.types import Draft, DraftRequest, VerifyResult
from sagellm.accel.speculative.verifier import Verifier

__all__ = [
    "CausalLM",
    "Draft",
    "DraftModel",
    "DraftRequest",
    "ModelDrafter",
    "NgramDrafter",
    "SpecDecodeResult",
    "SpecDecodeStats",
    "Verifier",
    "VerifyResult",
    "filter_top_k_top_p",
    "ngram_lookup",
    "run_speculative_decode",
    "sampling_probs",
]
