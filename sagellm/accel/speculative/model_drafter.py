"""A drafter that runs a (cheaper) causal LM: the target with layers skipped, a layer-truncated
copy of it, a separately loaded draft checkpoint, or a quantized copy — anything an engine
wraps as a :class:`~sagellm.accel.speculative.protocol.CausalLM` with its own KV cache.

KV state is incremental: per request the drafter remembers which tokens the LM holds KV for
(the context it last saw plus the drafts it fed). On the next call it truncates the LM to the
common prefix with the new context (rejected drafts roll back) and feeds only the tokens after
it (the accepted drafts' KV is kept; typically 1-2 new tokens), in one batched forward for all
requests; then ``k - 1`` batched single-token forwards produce the rest of the drafts. A
request whose KV cannot be allocated gets an empty draft and its state is dropped.

Drafts of a greedy request are the LM's argmax (``probs`` None); a request with
temperature > 0 draws each draft from the LM's distribution under its own sampling params and
generator, and the rows of that distribution come back for rejection sampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sagellm.accel.speculative.probs import sampling_probs
from sagellm.accel.speculative.protocol import CausalLM
from sagellm.accel.speculative.types import Draft, DraftRequest


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class ModelDrafter:
    """Drafts with ``lm`` (see the module docstring); ``name`` says which kind."""

    def __init__(self, lm: CausalLM, name: str = "draft_model") -> None:
        self.lm = lm
        self.name = name
        self._tokens: dict[str, list[int]] = {}  # per request: tokens whose KV the LM holds

    def release(self, request_id: str) -> None:
        self._tokens.pop(request_id, None)
        self.lm.release(request_id)

    def _catch_up(self, requests: list[DraftRequest]) -> dict[str, torch.Tensor]:
        """Roll each request's LM state back to its common prefix with the context and feed
        the rest; returns the last position's logits [V] per request that got its KV."""
        feeds = []
        for r in requests:
            held = self._tokens.get(r.request_id, [])
            common = min(_common_prefix(held, r.token_ids), len(r.token_ids) - 1)
            if common < len(held):
                self.lm.truncate(r.request_id, common)
            self._tokens[r.request_id] = list(r.token_ids[:common])
            feeds.append((r.request_id, r.token_ids[common:]))
        last = {}
        for r, (rid, fed), lg in zip(requests, feeds, self.lm.extend(feeds), strict=True):
            if lg is None:
                self.release(rid)
                continue
            self._tokens[rid].extend(fed)
            last[r.request_id] = lg[-1]
        return last

    def _pick(self, r: DraftRequest, logits: torch.Tensor) -> tuple[int, torch.Tensor | None]:
        if r.sampling.greedy:
            return int(logits.argmax()), None
        q = sampling_probs(logits[None], r.sampling)[0]
        return int(torch.multinomial(q.cpu(), 1, generator=r.generator)), q

    def generate_draft(self, requests: Sequence[DraftRequest]) -> list[Draft]:
        active = [r for r in requests if r.num_tokens >= 1 and r.token_ids]
        last = self._catch_up(active) if active else {}
        tokens: dict[str, list[int]] = {r.request_id: [] for r in active}
        rows: dict[str, list[torch.Tensor]] = {r.request_id: [] for r in active}
        live = [r for r in active if r.request_id in last]
        while live:
            for r in live:
                tok, q = self._pick(r, last[r.request_id])
                tokens[r.request_id].append(tok)
                if q is not None:
                    rows[r.request_id].append(q)
            live = [r for r in live if len(tokens[r.request_id]) < r.num_tokens]
            if not live:
                break
            feeds = [(r.request_id, tokens[r.request_id][-1:]) for r in live]
            outs = self.lm.extend(feeds)
            nxt = []
            for r, (rid, fed), lg in zip(live, feeds, outs, strict=True):
                if lg is not None:  # no KV for another token: the draft stops here
                    self._tokens[rid].extend(fed)
                    last[rid] = lg[-1]
                    nxt.append(r)
            live = nxt
        out = []
        for r in requests:
            toks = tokens.get(r.request_id, [])
            q = rows.get(r.request_id)
            out.append(Draft(toks, torch.stack(q).float() if q else None))
        return out
