"""Counters of speculative decoding: drafts proposed and accepted, per draft position.

Definitions: a *verification* is one request's draft checked in one step (empty drafts are
plain decodes, not counted). ``acceptance_rate`` = accepted / drafted tokens;
``acceptance_rate_pos{i}`` = P(draft i accepted | draft i proposed), i from 0;
``mean_accepted_tokens`` = accepted drafts per verification; ``mean_accepted_length`` = tokens
emitted per verification (accepted + the target's own token), the speedup bound of a step.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpecDecodeStats:
    num_verifications: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    drafted_per_position: list[int] = field(default_factory=list)
    accepted_per_position: list[int] = field(default_factory=list)

    def record(self, num_drafted: int, num_accepted: int) -> None:
        """One verification: ``num_drafted`` proposed, the first ``num_accepted`` kept."""
        if not 0 <= num_accepted <= num_drafted:
            raise ValueError(f"accepted {num_accepted} of {num_drafted} drafts")
        if num_drafted == 0:
            return
        grow = num_drafted - len(self.drafted_per_position)
        if grow > 0:
            self.drafted_per_position.extend([0] * grow)
            self.accepted_per_position.extend([0] * grow)
        for i in range(num_drafted):
            self.drafted_per_position[i] += 1
            self.accepted_per_position[i] += i < num_accepted
        self.num_verifications += 1
        self.num_draft_tokens += num_drafted
        self.num_accepted_tokens += num_accepted

    def acceptance_per_position(self) -> list[float]:
        return [
            a / d if d else 0.0
            for a, d in zip(self.accepted_per_position, self.drafted_per_position, strict=True)
        ]

    def as_dict(self, prefix: str = "spec_") -> dict[str, float]:
        n = self.num_verifications
        out = {
            f"{prefix}num_verifications": float(n),
            f"{prefix}num_draft_tokens": float(self.num_draft_tokens),
            f"{prefix}num_accepted_tokens": float(self.num_accepted_tokens),
            f"{prefix}acceptance_rate": (
                self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0
            ),
            f"{prefix}mean_accepted_tokens": self.num_accepted_tokens / n if n else 0.0,
            f"{prefix}mean_accepted_length": (self.num_accepted_tokens + n) / n if n else 0.0,
        }
        for i, rate in enumerate(self.acceptance_per_position()):
            out[f"{prefix}acceptance_rate_pos{i}"] = rate
        return out

    def reset(self) -> None:
        self.num_verifications = self.num_draft_tokens = self.num_accepted_tokens = 0
        self.drafted_per_position.clear()
        self.accepted_per_position.clear()
