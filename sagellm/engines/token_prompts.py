"""Input checks shared by the external engines' ``generate`` (LMDeploy, vLLM): they take
token-id prompts only (no tokenizer is wired to them) and one ``SamplingParams`` per prompt."""

from __future__ import annotations

from collections.abc import Sequence

from sagellm.core.errors import InvalidRequestError
from sagellm.core.types import SamplingParams


def token_id_batch(
    engine: str,
    prompts: Sequence[str] | Sequence[list[int]],
    sampling: SamplingParams | Sequence[SamplingParams] | None,
) -> list[tuple[list[int], SamplingParams]]:
    """``(prompt token ids, sampling)`` pairs; InvalidRequestError naming the field otherwise."""
    if sampling is None or isinstance(sampling, SamplingParams):
        sampling = [sampling or SamplingParams()] * len(prompts)
    if len(sampling) != len(prompts):
        raise InvalidRequestError(
            f"sampling: got {len(sampling)} sampling params for {len(prompts)} prompts"
        )
    if any(isinstance(p, str) for p in prompts):
        raise InvalidRequestError(f"prompts: the {engine} engine takes token id lists, not text")
    return [(list(p), sp) for p, sp in zip(prompts, sampling, strict=True)]
