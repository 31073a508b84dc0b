"""The PD front judges a request by the native engine's admission rules, against each
worker's limits, before anything reaches a worker (no processes: the front's state only)."""

import pytest

from sagellm.core import InvalidRequestError, Request, SamplingParams
from sagellm.core.types import SLO
from sagellm.engines.pd import PDCluster


def _front(decode_blocks: int = 64) -> PDCluster:
    front = PDCluster.__new__(PDCluster)  # the workers' "ready" limits, no processes
    limits = {"vocab_size": 100, "max_model_len_tokens": 32, "block_size_tokens": 4}
    front.info = {
        "prefill": {**limits, "num_kv_blocks": 64},
        "decode": {**limits, "num_kv_blocks": decode_blocks},
    }
    front._inflight, front._metrics = {}, {}
    return front


@pytest.mark.parametrize(
    "prompt, sampling, slo, match",
    [
        ([1, 2], SamplingParams(max_tokens=0), SLO(), "sampling.max_tokens must be an integer"),
        ([1, 2], SamplingParams(top_p=0.0), SLO(), r"sampling.top_p must be in \(0, 1\]"),
        ([1, 2], SamplingParams(), SLO(ttft_s=0.0), "slo.ttft_s must be None or > 0"),
        ([], SamplingParams(), SLO(), "prompt is empty"),
        (list(range(32)), SamplingParams(), SLO(), "prompt has 32 tokens.*=32"),
        ([1, 100], SamplingParams(), SLO(), r"token ids \[100\] outside \[0, 100\)"),
    ],
)
def test_front_rejects_what_an_engine_rejects(prompt, sampling, slo, match):
    with pytest.raises(InvalidRequestError, match=match):
        _front()._validate(Request("bad", prompt, sampling, slo=slo))


def test_front_names_the_pool_too_small_and_ids_in_use():
    front = _front(decode_blocks=3)
    front._validate(Request("ok", [1] * 8, SamplingParams(max_tokens=4)))  # 12 tokens: 3 blocks
    with pytest.raises(InvalidRequestError, match="needs 4 KV blocks.*the decode pool has only 3"):
        front._validate(Request("big", [1] * 8, SamplingParams(max_tokens=5)))
    front._inflight["ok"] = None
    with pytest.raises(InvalidRequestError, match="'ok' is already in use"):
        front._validate(Request("ok", [1, 2]))
