"""AWQ and GPTQ through the user's path: ``NativeEngine(EngineConfig(accel=...))`` on the real
SmolLM2-135M calibrates at load (a teacher-forced forward over calibration text, before the
KV pool exists) and then serves. The perplexity bounds live in the heavy
test_accel_quant_smollm2; this one checks that the constructor path runs and quantizes."""

import pytest

from sagellm.accel.eval_data import eval_data_available
from sagellm.accel.quantization import Int4Linear
from sagellm.core.config import AccelConfig, EngineConfig, ModelConfig
from sagellm.core.types import SamplingParams
from sagellm.engines.native import NativeEngine

OK, WHY = eval_data_available()


@pytest.mark.slow
@pytest.mark.skipif(not OK, reason=WHY)
@pytest.mark.parametrize(
    "method",
    ["awq", pytest.param("gptq", marks=pytest.mark.heavy)],  # ~30 s each on 2 cores
)
def test_calibrating_quantizer_loads_and_serves(method):
    acc = AccelConfig(enable_quantization=True, method=method, calibration_tokens=32)
    cfg = EngineConfig(model=ModelConfig(path="smollm2-135m-instruct"), num_kv_blocks=16, accel=acc)
    engine = NativeEngine(cfg)
    weights = engine.model.linear_weights()
    assert all(isinstance(w, Int4Linear) for w in weights.values())
    (out,) = engine.generate(
        [engine.encode("The capital of France is")], SamplingParams(max_tokens=4)
    )
    assert len(out) == 4
