"""EWMA lifetime predictor: exact updates, perfect prediction on a periodic stream."""

import pytest

from sagellm.kv_policy.lifetime import EwmaLifetimePredictor, evaluate_lifetime


def test_ewma_updates_block_then_group():
    p = EwmaLifetimePredictor(alpha=0.5)
    assert p.predict_ttl(1, 0) is None
    p.observe(1, 0, 0.0)
    p.observe(1, 0, 10.0)
    assert p.predict_ttl(1, 0) == 10.0
    p.observe(1, 0, 14.0)  # gap 4: 10 + 0.5 * (4 - 10)
    assert p.predict_ttl(1, 0) == 7.0
    assert p.predict_ttl(2, 0) == 7.0  # unseen block -> group's EWMA
    assert 0.0 < p.p_reuse(1, 0, horizon=7.0) < 1.0
    with pytest.raises(ValueError, match="alpha"):
        EwmaLifetimePredictor(alpha=0.0)


def test_periodic_stream_has_zero_mae():
    reqs = [(1, 2, 3)] * 50  # every block comes back exactly 3 lookups later
    r = evaluate_lifetime(reqs, horizon=3.0)
    assert r.mae == 0.0
    assert 3 * 47 <= r.num_predictions <= 3 * 49  # a gap is known from the 2nd visit on
    assert r.ece is not None and sum(n for _, _, n in r.calibration) > 0
