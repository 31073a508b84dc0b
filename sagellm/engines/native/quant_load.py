"""Quantization at engine load: the calibration pass AWQ and GPTQ need, over the engine itself.

Calibration text: ``tinyshakespeare.txt`` after its held-out evaluation slice (the first
``EVAL_SLICE_CHARS`` characters, see ``accel.quantization.calibration``), its first
``accel.calibration_tokens`` tokens, read as independent windows of
``CALIBRATION_WINDOW_TOKENS`` through the engine's teacher-forced forward (scratch KV cache;
the engine's pool is untouched).
"""

from __future__ import annotations

from sagellm.accel import AccelController
from sagellm.accel.eval_data import shakespeare_text
from sagellm.accel.quantization import CALIBRATION_WINDOW_TOKENS, calibration_text
from sagellm.core.errors import ConfigError
from sagellm.engines.native.scoring import teacher_forced_logits


def calibration_token_ids(engine) -> list[int]:
    """The engine's calibration tokens (ConfigError when it has no tokenizer to make them)."""
    n = engine.config.accel.calibration_tokens
    if engine.tokenizer is None:
        raise ConfigError(
            f"accel.method {engine.config.accel.method!r} calibrates on text, but this "
            "checkpoint has no tokenizer; use int8, int4 or fp8"
        )
    ids = engine.tokenizer.encode(calibration_text(shakespeare_text(), n))[:n]
    if len(ids) < n:
        raise ConfigError(f"accel.calibration_tokens={n} exceeds the calibration text")
    return ids


def quantize_engine_model(engine, controller: AccelController) -> None:
    """Quantize ``engine.model`` in place as ``controller`` was set up (no-op when off)."""

    def calibrate() -> None:
        ids = calibration_token_ids(engine)
        window = min(CALIBRATION_WINDOW_TOKENS, engine.max_model_len)
        for start in range(0, len(ids), window):
            chunk = ids[start : start + window]
            if len(chunk) >= 2:
                teacher_forced_logits(engine, chunk)

    controller.get_quantized_model(engine.model, calibrate)
