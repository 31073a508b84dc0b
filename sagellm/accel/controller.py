"""AccelController: the one entry point that switches acceleration techniques on for an engine.

``setup(engine_config)`` reads ``EngineConfig.accel`` and picks the techniques; the engine then
asks ``get_quantized_model(model, calibrate)`` once at load. ``run_speculative_decode`` decodes
one request speculatively over any target/drafter pair (the engine's own path runs the same
verification inside its plans when ``accel.speculative_tokens`` is set).

Quantization replaces every linear weight the model lists (``QuantizableModel``: per layer the
fused qkv, o, gate_up, down; and lm_head unless ``accel.quantize_lm_head`` is off) with the
quantizer's :class:`QuantLinear`. Calibrating methods (awq, gptq) first swap in
:class:`RecordingLinear` stand-ins, call ``calibrate()`` (which runs the unquantized model over
the calibration text), then quantize each weight with its own statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from sagellm.accel.quantization import (
    BaseQuantizer,
    Int4Quantizer,
    QuantLinear,
    RecordingLinear,
    check_group_size,
    make_quantizer,
)
from sagellm.accel.speculative import DraftModel, SpecDecodeResult, run_speculative_decode
from sagellm.accel.speculative.protocol import CausalLM
from sagellm.core.config import AccelConfig, EngineConfig
from sagellm.core.errors import ConfigError


class QuantizableModel(Protocol):
    def linear_weights(self) -> dict[str, torch.Tensor | QuantLinear]:
        """Every linear weight by name (``layers.<i>.<qkv|o|gate_up|down>``, ``lm_head``)."""
        ...

    def replace_linear(self, name: str, weight: torch.Tensor | QuantLinear) -> None: ...


class AccelController:
    """Holds the accel config of one engine and applies it (quantization today)."""

    def __init__(self) -> None:
        self.config = AccelConfig()
        self.quantizer: BaseQuantizer | None = None

    def setup(self, engine_config: EngineConfig) -> None:
        self.setup_accel(engine_config.accel)

    def setup_accel(self, cfg: AccelConfig) -> None:
        """``setup`` from the accel config alone (e.g. a drafter's own quantization)."""
        self.config = cfg
        self.quantizer = (
            make_quantizer(cfg.method, cfg.group_size) if cfg.enable_quantization else None
        )

    def get_quantized_model(
        self, model: QuantizableModel, calibrate: Callable[[], None] | None = None
    ) -> QuantizableModel:
        """Quantize ``model``'s linears in place (and return it); a no-op when quantization is
        off. ``calibrate`` must run the model over calibration text (awq, gptq)."""
        qz = self.quantizer
        if qz is None:
            return model
        weights = model.linear_weights()
        if not self.config.quantize_lm_head:
            weights.pop("lm_head", None)
        dense = {n: w for n, w in weights.items() if isinstance(w, torch.Tensor)}
        if isinstance(qz, Int4Quantizer):
            check_group_size(qz.group_size, [w.shape[1] for w in dense.values()])
        stats = {}
        if qz.needs_calibration:
            if calibrate is None:
                raise ConfigError(f"accel.method {qz.name!r} needs calibration text; none given")
            recorders = {
                n: RecordingLinear(w, hessian=qz.needs_hessian, rows=qz.needs_rows)
                for n, w in dense.items()
            }
            for n, r in recorders.items():
                model.replace_linear(n, r)
            try:
                calibrate()
            finally:
                for n, w in dense.items():
                    model.replace_linear(n, w)
            stats = {n: r.stats() for n, r in recorders.items()}
            del recorders
        for n, w in dense.items():
            model.replace_linear(n, qz.quantize(w, stats.pop(n, None)))
        return model

    def run_speculative_decode(
        self,
        target: CausalLM,
        drafter: DraftModel,
        prompt_token_ids: list[int],
        sampling=None,
        eos_token_ids=(),
    ) -> SpecDecodeResult:
        """Decode one request with ``accel.speculative_tokens`` drafts per round (see
        ``accel.speculative.decode``); a ConfigError when speculative decoding is off."""
        k = self.config.speculative_tokens
        if k is None:
            raise ConfigError(
                "accel.speculative_tokens is not set: set it (>= 1) to decode speculatively"
            )
        return run_speculative_decode(target, drafter, prompt_token_ids, k, sampling, eos_token_ids)
