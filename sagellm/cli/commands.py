"""What each ``sagellm`` subcommand does: ``fn(args) -> exit status`` (the parser in
:mod:`sagellm.cli.parser` binds them). Heavy imports happen inside each, so ``sagellm --help``
and one subcommand load only what they use."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sagellm.core.config import DEFAULT_MODEL


def generate(args: argparse.Namespace) -> int:
    from sagellm.core.config import EngineConfig, ModelConfig
    from sagellm.core.types import SamplingParams
    from sagellm.engines.native import NativeEngine

    cfg = EngineConfig(
        model=ModelConfig(path=args.model, dtype=args.dtype), num_threads=args.threads
    )
    engine = NativeEngine(cfg)
    sp = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
    )
    out = engine.generate([args.prompt], sp, chat=False if args.no_chat else None)[0]
    print(engine.tokenizer.decode(out))
    return 0


def demo(args: argparse.Namespace) -> int:
    import papermill as pm

    nb = Path(args.notebook)
    out_dir = Path(args.results) / "quickstart"
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / "00_quickstart.executed.ipynb"
    params = {"results_root": str(args.results), "dtype": args.dtype}
    if args.ci:
        params["preset"] = "ci"
    pm.execute_notebook(str(nb), str(executed), parameters=params, kernel_name="python3")
    from sagellm.benchmarks.widgets import drop_widget_state

    drop_widget_state(executed)  # static HTML of it shows the widget's note, not a blank
    runs = sorted((p for p in out_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not runs:
        print("the notebook ran but wrote no run folder", file=sys.stderr)
        return 1
    import json

    run = runs[-1]
    completions = json.loads((run / "completions.json").read_text())
    for c in completions:
        print(f"> {c['prompt']}\n{c['completion']}\n")
    print(f"results written to {run}")
    print(f"executed notebook: {executed}")
    return 0


def bench(args: argparse.Namespace) -> int:
    if args.peers is not None:
        return _peers_bench(args)
    if args.offline:
        return _offline_bench(args)
    from sagellm.benchmarks.config import load_benchmark_config
    from sagellm.benchmarks.runner import BenchmarkRunner

    cfg = load_benchmark_config(args.config or args.preset)
    if args.strategy is not None:
        cfg = cfg.model_copy(
            update={
                "strategy": args.strategy,
                "engine": cfg.engine.model_copy(update={"scheduling_strategy": args.strategy}),
            }
        )
    if args.backend == "openai":
        res = _openai_bench(args, cfg)
    else:
        res = BenchmarkRunner().run(cfg, results_root=args.results)
    m = res.metrics
    for k in ("output_throughput_tok_per_s", "p50_ttft_s", "p50_tpot_s", "mfu", "kv_hit_rate"):
        v = m.get(k)
        print(f"{k:>28}: {'n/a' if v is None else f'{v:.4g}'}")
    tok_s = m["output_throughput_tok_per_s"]
    print(f"output tokens/s: {'n/a' if tok_s is None else f'{tok_s:.1f}'}")
    print(f"results written to {res.run_dir}")
    if m.get("num_failed"):
        print(f"{m['num_failed']:.0f} requests failed (see requests.parquet, column error)")
    return 0


def _peers_bench(args: argparse.Namespace) -> int:
    """``bench --peers hf,vllm``: W1-W3 on native and the peers (sagellm/benchmarks/peers.py)."""
    from sagellm.benchmarks.peers import run_peers

    peers = tuple(p.strip() for p in args.peers.split(",") if p.strip())
    workloads = tuple(args.workloads) if args.workloads else None
    run_dir = run_peers(args.preset, peers, tuple(args.dtype), args.results, workloads)
    print((run_dir / "peers.md").read_text())
    print(f"results written to {run_dir}")
    return 0


def _openai_bench(args: argparse.Namespace, cfg):
    """``bench --backend openai``: the config's workload sent to ``--base-url``."""
    import os

    from sagellm.benchmarks.openai_backend import OpenAIBenchmarkRunner, OpenAIEndpoint

    if not args.base_url:
        raise ValueError("--backend openai needs --base-url (like http://127.0.0.1:8000/v1)")
    endpoint = OpenAIEndpoint(
        base_url=args.base_url,
        model=args.model,
        api_key=args.api_key or os.environ.get("SAGELLM_API_KEY"),
        timeout_s=args.timeout_s,
        connect_timeout_s=args.connect_timeout_s,
        max_concurrency=args.max_concurrency,
    )
    cfg = cfg.model_copy(update={"experiment": f"{cfg.experiment}_openai"})
    runner = OpenAIBenchmarkRunner(endpoint, vocab_size=args.vocab_size)
    return runner.run(cfg, results_root=args.results)


def _offline_bench(args: argparse.Namespace) -> int:
    from sagellm.benchmarks.quick import format_result, run_quick_bench

    overrides = {
        k: v
        for k, v in (
            ("num_requests", args.num_requests),
            ("prompt_tokens", args.prompt_tokens),
            ("output_tokens", args.output_tokens),
        )
        if v is not None
    }
    for dtype in args.dtype:
        r = run_quick_bench(
            args.preset if args.preset != "ci" else "w1",
            model=args.model or DEFAULT_MODEL,
            dtype=dtype,
            compare_hf=args.compare_hf,
            num_threads=args.threads,
            **overrides,
        )
        print(format_result(r))
        print(f"output tokens/s ({dtype}): {r.native_output_tok_per_s:.1f}")
    return 0


def gate(args: argparse.Namespace) -> int:
    from sagellm.benchmarks.ci_gate import compare, format_table, load_metrics

    if args.update_baseline:
        return _update_baseline(args)
    if args.current:  # stored runs, read across time: informational (see ci_gate's docstring)
        rows = compare(load_metrics(args.baseline), load_metrics(args.current))
        print("stored-run comparison (*_norm metrics; noisy across time, not the lockstep gate)")
    else:
        from sagellm.benchmarks.gate_run import GateSetupError, run_gate

        try:
            from sagellm.benchmarks.gate_run import PROCESSES_PER_SIDE

            procs = args.processes_per_side or PROCESSES_PER_SIDE
            res = run_gate(args.preset, args.baseline, args.repeats, args.results, procs)
        except GateSetupError as err:
            print(f"gate: cannot run: {err}")
            return 2
        rows = res.rows
        n = len(res.current_repeats)
        print(f"lockstep: baseline commit vs current tree, {n} repeats each; run: {res.run_dir}")
    print(format_table(rows))
    failed = [r.metric for r in rows if not r.ok]
    print("gate: FAIL (" + ", ".join(failed) + ")" if failed else "gate: PASS")
    return 1 if failed else 0


def _update_baseline(args: argparse.Namespace) -> int:
    """Measure the preset with the current tree and record it, with HEAD, as the baseline."""
    from sagellm.benchmarks.config import load_benchmark_config
    from sagellm.benchmarks.gate_run import head_sha, source_root, uncommitted_package_changes
    from sagellm.benchmarks.runner import BenchmarkRunner
    from sagellm.core.io import atomic_write_json

    sha = head_sha()
    if sha is None:
        print(f"gate: cannot record a baseline: {source_root()} is not a git checkout")
        return 2
    dirty = uncommitted_package_changes()
    if dirty:
        print("gate: commit your changes under sagellm/ first: the baseline is a commit\n" + dirty)
        return 2
    cfg = load_benchmark_config(args.preset)
    if args.repeats is not None:
        cfg = cfg.model_copy(update={"repeats": args.repeats})
    res = BenchmarkRunner(progress=False).run(cfg, results_root=args.results)
    Path(args.baseline).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.baseline), {**res.metrics, "git_sha": sha, "preset": args.preset})
    print(f"current run: {res.run_dir}\nbaseline updated: {args.baseline} (commit {sha[:12]})")
    return 0


def report(args: argparse.Namespace) -> int:
    from sagellm.benchmarks.report import write_report

    print(f"report written to {write_report(args.run_dir)}")
    return 0


def publish(args: argparse.Namespace) -> int:
    from sagellm.benchmarks.publish import publish

    site = publish(args.results_dir, args.output)
    for path, why in site.skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    print(
        f"site written to {site.site_dir / 'index.html'}: {len(site.runs)} runs, "
        f"{len(site.notebooks)} notebooks, {len(site.skipped)} skipped"
    )
    return 0


def sweep(args: argparse.Namespace) -> int:
    from sagellm.benchmarks.sweep import run_sweep

    df = run_sweep(
        args.grid,
        results_root=args.results,
        backend=args.backend,
        address=args.address,
        connect_timeout_s=args.connect_timeout_s,
    )
    failed = int((df["status"] != "ok").sum()) if len(df) else 0
    print(df.drop(columns=[c for c in df.columns if c in ("error",)]).to_string(max_cols=8))
    print(f"{len(df) - failed} points ok, {failed} failed")
    for _, row in df[df["status"] != "ok"].iterrows():
        print(f"  {row['point_id']}: {row['error'].splitlines()[0] if row['error'] else ''}")
    return 0


def serve(args: argparse.Namespace) -> int:
    from sagellm.core.config import EngineConfig, ModelConfig
    from sagellm.serve import ServeConfig, resolve_api_key, run_server

    engine_cfg = EngineConfig(
        model=ModelConfig(path=args.model, dtype=args.dtype),
        num_threads=args.threads,
        num_kv_blocks=args.num_kv_blocks,
        max_num_seqs=args.max_num_seqs,
        max_model_len_tokens=args.max_model_len,
        enable_prefix_caching=args.enable_prefix_caching,
        scheduling_strategy=args.strategy,
    )
    cfg = ServeConfig(
        served_model_name=args.served_model_name or args.model,
        host=args.host,
        port=args.port,
        api_key=resolve_api_key(args.api_key),
        metrics_require_key=args.metrics_require_key,
        max_body_bytes=args.max_body_bytes,
        max_prompt_tokens=args.max_prompt_tokens,
        max_tokens_limit=args.max_tokens_limit,
        max_concurrent_streams=args.max_concurrent_streams,
    )
    run_server(engine_cfg, cfg, log_level=args.log_level)
    return 0
