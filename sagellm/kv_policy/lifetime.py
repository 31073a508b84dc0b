"""Lifetime prediction: how long until a block is reused, from its own and its group's history.

Time is whatever clock the caller uses (seconds, or block lookups in the offline replay).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sagellm.core.types import BlockId


class EwmaLifetimePredictor:
    """Per-block and per-prefix-group EWMA of reuse gaps.

    ``predict_ttl`` answers the block's own EWMA gap once it has been reused, else its group's
    (a group is e.g. the block's depth bucket in its prompt), else ``None``. ``p_reuse`` turns a
    gap into the probability of a reuse within ``horizon``, assuming exponential gaps scaled by
    the group's observed reuse fraction (accesses that were re-accesses).
    """

    def __init__(self, alpha: float = 0.2) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self._last: dict[BlockId, float] = {}
        self._block_gap: dict[BlockId, float] = {}
        self._group_gap: dict[int, float] = {}
        self._group_reuse: dict[int, float] = {}  # EWMA of "this access was a re-access"

    def observe(self, block_id: BlockId, group: int, now: float) -> None:
        a = self.alpha
        last = self._last.get(block_id)
        self._last[block_id] = now
        reused = last is not None
        r = self._group_reuse.get(group)
        self._group_reuse[group] = float(reused) if r is None else r + a * (reused - r)
        if not reused:
            return
        gap = now - last
        g = self._block_gap.get(block_id)
        self._block_gap[block_id] = gap if g is None else g + a * (gap - g)
        gg = self._group_gap.get(group)
        self._group_gap[group] = gap if gg is None else gg + a * (gap - gg)

    def predict_ttl(self, block_id: BlockId, group: int) -> float | None:
        g = self._block_gap.get(block_id)
        return g if g is not None else self._group_gap.get(group)

    def p_reuse(self, block_id: BlockId, group: int, horizon: float) -> float:
        """P(next access within ``horizon``) in [0, 1]."""
        ttl = self.predict_ttl(block_id, group)
        if ttl is None:
            return self._group_reuse.get(group, 0.0)
        scale = 1.0 if block_id in self._block_gap else self._group_reuse.get(group, 0.0)
        return scale * (1.0 - math.exp(-horizon / max(ttl, 1e-9)))

    def forget(self, block_id: BlockId) -> None:
        self._last.pop(block_id, None)
        self._block_gap.pop(block_id, None)


@dataclass(frozen=True)
class LifetimeReport:
    """Accuracy of a predictor on a stream. ``mae`` over re-accesses that had a prediction;
    calibration bins: (mean predicted p, observed reuse frequency, count) per decile;
    ``ece`` = count-weighted mean |predicted - observed|."""

    mae: float | None
    num_predictions: int
    horizon: float
    calibration: tuple[tuple[float, float, int], ...]
    ece: float | None


def evaluate_lifetime(
    requests, horizon: float, predictor: EwmaLifetimePredictor | None = None
) -> LifetimeReport:
    """Replay block lookups (clock = lookup index, group = log2 depth bucket) and score the
    predictor's gap (MAE) and reuse probability (calibration) before each observation."""
    pred = predictor or EwmaLifetimePredictor()
    pending_ttl: dict[BlockId, tuple[float, float]] = {}
    pending_p: dict[BlockId, tuple[float, float]] = {}
    abs_err = 0.0
    n_err = 0
    outcomes: list[tuple[float, int]] = []
    i = 0
    for req in requests:
        for pos, b in enumerate(req):
            i += 1
            g = (pos + 1).bit_length()
            t = pending_ttl.pop(b, None)
            if t is not None:
                abs_err += abs(t[1] - (i - t[0]))
                n_err += 1
            p = pending_p.pop(b, None)
            if p is not None:
                outcomes.append((p[1], int(i - p[0] <= horizon)))
            ttl = pred.predict_ttl(b, g)
            if ttl is not None:
                pending_ttl[b] = (i, ttl)
            pending_p[b] = (i, pred.p_reuse(b, g, horizon))
            pred.observe(b, g, float(i))
    outcomes.extend((p, 0) for t0, p in pending_p.values() if i - t0 >= horizon)
    bins: list[list[float]] = [[0.0, 0.0, 0] for _ in range(10)]
    for p, o in outcomes:
        k = min(int(p * 10), 9)
        bins[k][0] += p
        bins[k][1] += o
        bins[k][2] += 1
    cal = tuple((s / n, o / n, int(n)) for s, o, n in bins if n)
    total = sum(n for _, _, n in cal)
    ece = sum(n * abs(p - o) for p, o, n in cal) / total if total else None
    return LifetimeReport(abs_err / n_err if n_err else None, n_err, horizon, cal, ece)
