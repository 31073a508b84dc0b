"""Verifier: which drafted tokens the target keeps, given its logits at every verified position.

``target_logits`` [k + 1, V] row ``i`` is the target's next-token logits after the context
plus drafts ``[:i]`` (row 0: after the context alone; row k: after all k drafts).

- Greedy (temperature 0): accept the longest prefix of drafts equal to the row-wise argmax,
  then append the argmax of the first row not accepted (or of row k). The output is exactly
  what plain greedy decoding produces from the same logits.
- Temperature > 0 (Leviathan et al. 2023, Chen et al. 2023): with ``p`` the target's and
  ``q`` the draft's distribution (both after the request's temperature / top-k / top-p; a
  deterministic draft is a point mass), accept draft ``d`` with probability
  ``min(1, p(d) / q(d))``; on the first rejection sample from ``norm(max(0, p - q))`` and
  stop; when all k are accepted sample a bonus token from row k. Each emitted token is then
  distributed exactly as plain sampling from ``p``. All randomness comes from the request's
  generator (uniforms and draws on CPU), so a seeded request is reproducible.
"""

from __future__ import annotations

import torch

from sagellm.accel.speculative.probs import sampling_probs
from sagellm.accel.speculative.types import Draft, VerifyResult
from sagellm.core.types import SamplingParams


class Verifier:
    """Stateless; ``verify`` one request's draft against the target's logits."""

    def verify(
        self,
        target_logits: torch.Tensor,
        draft: Draft,
        sampling: SamplingParams,
        generator: torch.Generator | None = None,
    ) -> VerifyResult:
        k = len(draft)
        if target_logits.shape[0] != k + 1:
            raise ValueError(
                f"target_logits has {target_logits.shape[0]} rows for {k} drafts (need k + 1)"
            )
        if sampling.greedy:
            return self._greedy(target_logits, draft.token_ids)
        return self._rejection(target_logits, draft, sampling, generator)

    @staticmethod
    def _greedy(target_logits: torch.Tensor, drafts: list[int]) -> VerifyResult:
        best = target_logits.argmax(dim=-1).tolist()
        a = 0
        while a < len(drafts) and drafts[a] == best[a]:
            a += 1
        return VerifyResult([*drafts[:a], best[a]], a)

    @staticmethod
    def _rejection(
        target_logits: torch.Tensor,
        draft: Draft,
        sampling: SamplingParams,
        generator: torch.Generator | None,
    ) -> VerifyResult:
        p = sampling_probs(target_logits, sampling).cpu()
        q = draft.probs.cpu() if draft.probs is not None else None
        out: list[int] = []
        for i, d in enumerate(draft.token_ids):
            q_d = float(q[i, d]) if q is not None else 1.0
            ratio = float(p[i, d]) / q_d if q_d > 0 else 0.0
            u = float(torch.rand((), generator=generator))
            if u < min(1.0, ratio):
                out.append(d)
                continue
            if q is not None:
                resid = (p[i] - q[i]).clamp_min(0.0)
            else:
                resid = p[i].clone()
                resid[d] = 0.0
            if float(resid.sum()) <= 0.0:  # p == q up to rounding: rejection had prob ~0
                resid = p[i]
            tok = int(torch.multinomial(resid / resid.sum(), 1, generator=generator))
            return VerifyResult([*out, tok], i)
        tok = int(torch.multinomial(p[len(out)], 1, generator=generator))
        return VerifyResult([*out, tok], len(out))
