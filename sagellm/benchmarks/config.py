"""Benchmark configuration: engine + workload + how to drive them. Loaded from YAML presets
in ``experiments/`` (``load_benchmark_config``); errors name the field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sagellm.benchmarks.workloads.spec import WorkloadConfig
from sagellm.core.config import EngineConfig, load_config
from sagellm.core.errors import ConfigError

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SLOConfig(_Frozen):
    ttft_s: float | None = Field(default=None, gt=0)
    tpot_s: float | None = Field(default=None, gt=0)


class BenchmarkConfig(_Frozen):
    """One benchmark run. ``mode``: ``arrival`` submits requests at their workload arrival times
    (real time); ``concurrency`` keeps at most ``max_concurrency`` requests in flight and ignores
    arrival times (deterministic schedule, used by the gate)."""

    experiment: str = "bench"
    engine: EngineConfig = Field(default_factory=EngineConfig)
    # the scheduling strategy every step runs (shorthand for engine.scheduling_strategy)
    strategy: str | None = None
    # request classes: a workload tenant's Request.priority and Request.model
    tenant_priority: dict[str, int] = Field(default_factory=dict)
    tenant_model: dict[str, str] = Field(default_factory=dict)
    workload: WorkloadConfig = Field(default_factory=WorkloadConfig)
    mode: Literal["arrival", "concurrency"] = "arrival"
    max_concurrency: int | None = Field(default=None, ge=1)
    warmup_requests: int = Field(default=2, ge=0)
    repeats: int = Field(default=1, ge=1)
    slo: SLOConfig = Field(default_factory=SLOConfig)
    num_devices: int = Field(default=1, ge=1)
    price_per_device_hour: float | None = Field(default=None, ge=0)
    currency: str = "USD"

    @model_validator(mode="before")
    @classmethod
    def _strategy_into_engine(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("strategy") is None:
            return data
        engine = data.get("engine") or {}
        if isinstance(engine, EngineConfig):
            engine = engine.model_dump()
        other = engine.get("scheduling_strategy")
        if other is not None and other != data["strategy"]:
            raise ValueError(
                f"strategy ({data['strategy']!r}) and engine.scheduling_strategy ({other!r}) "
                "disagree; set one"
            )
        return {**data, "engine": {**engine, "scheduling_strategy": data["strategy"]}}

    @model_validator(mode="after")
    def _check(self) -> BenchmarkConfig:
        if self.mode == "concurrency" and self.max_concurrency is None:
            raise ValueError("mode 'concurrency' needs max_concurrency")
        return self


def preset_path(name: str) -> Path:
    p = EXPERIMENTS_DIR / f"{name}.yaml"
    if not p.is_file():
        known = sorted(q.stem for q in EXPERIMENTS_DIR.glob("*.yaml") if "sweep" not in q.stem)
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(known)}")
    return p


def load_benchmark_config(path_or_preset: str | Path) -> BenchmarkConfig:
    """A YAML file path, or the name of a preset in experiments/."""
    p = Path(path_or_preset)
    if not p.suffix:
        p = preset_path(str(path_or_preset))
    return load_config(p, BenchmarkConfig)
