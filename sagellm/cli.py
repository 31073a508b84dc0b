"""The ``sagellm`` command: generate, demo, bench, gate, report, sweep, serve."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sagellm.core.config import DEFAULT_MODEL
from sagellm.core.errors import SageLLMError


def _generate(args: argparse.Namespace) -> int:
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


def _demo(args: argparse.Namespace) -> int:
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


def _bench(args: argparse.Namespace) -> int:
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
    run_dir = run_peers(args.preset, peers, tuple(args.dtype), args.results)
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


def _gate(args: argparse.Namespace) -> int:
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


def _report(args: argparse.Namespace) -> int:
    from sagellm.benchmarks.report import write_report

    print(f"report written to {write_report(args.run_dir)}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from sagellm.benchmarks.publish import publish

    site = publish(args.results_dir, args.output)
    for path, why in site.skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    print(
        f"site written to {site.site_dir / 'index.html'}: {len(site.runs)} runs, "
        f"{len(site.notebooks)} notebooks, {len(site.skipped)} skipped"
    )
    return 0


def _sweep(args: argparse.Namespace) -> int:
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


def _serve(args: argparse.Namespace) -> int:
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


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default: ``(default: X)`` appended unless the help
    already names it; flags read ``(default: off)``. An option whose default is None says in
    its own help what None means."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or "default" in text.lower():
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return f"{text} (default: off)"
        if action.default is None or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


def _add_parser(sub, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)


def _add_serve_parser(sub) -> None:
    s = _add_parser(sub, "serve", "OpenAI-compatible HTTP server (needs sagellm[serve])")
    s.add_argument("--model", default=DEFAULT_MODEL, help="model alias, HF folder or GGUF file")
    s.add_argument("--served-model-name", default=None, help="name clients send; default --model")
    s.add_argument("--strategy", default="fifo", help="scheduling strategy every step runs")
    s.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights")
    s.add_argument("--threads", type=int, default=None, help="torch threads; default: torch's")
    s.add_argument(
        "--num-kv-blocks",
        type=int,
        default=None,
        help="KV pool size in blocks; default: the engine's 2 GiB KV cache",
    )
    s.add_argument("--max-num-seqs", type=int, default=128, help="sequences per step")
    s.add_argument(
        "--max-model-len", type=int, default=None, help="context tokens; default: the model's"
    )
    s.add_argument("--enable-prefix-caching", action="store_true", help="reuse shared prefixes")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only)")
    s.add_argument("--port", type=int, default=8000, help="TCP port")
    s.add_argument(
        "--api-key", default=None, help="require 'Bearer KEY' on /v1/* (default: $SAGELLM_API_KEY)"
    )
    s.add_argument("--metrics-require-key", action="store_true", help="/metrics needs the key")
    s.add_argument("--max-body-bytes", type=int, default=1024 * 1024, help="else 413")
    s.add_argument("--max-prompt-tokens", type=int, default=None, help="default: the context")
    s.add_argument("--max-tokens-limit", type=int, default=4096, help="largest max_tokens")
    s.add_argument("--max-concurrent-streams", type=int, default=256, help="in flight; else 429")
    s.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="uvicorn's log level",
    )
    s.set_defaults(func=_serve)


def _add_generate_parser(sub) -> None:
    g = _add_parser(sub, "generate", "complete one prompt")
    g.add_argument("--prompt", required=True, help="the prompt text (required)")
    g.add_argument("--model", default=DEFAULT_MODEL, help="model alias, HF folder or GGUF file")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights")
    g.add_argument("--max-tokens", type=int, default=64, help="tokens to generate at most")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    g.add_argument("--top-k", type=int, default=None, help="top-k sampling; default: off")
    g.add_argument("--seed", type=int, default=None, help="sampling seed; default: random")
    g.add_argument("--threads", type=int, default=None, help="torch threads; default: torch's")
    g.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    g.set_defaults(func=_generate)


def _add_demo_parser(sub) -> None:
    d = _add_parser(sub, "demo", "run notebooks/00_quickstart.ipynb through papermill")
    d.add_argument("--notebook", default="notebooks/00_quickstart.ipynb", help="the notebook")
    d.add_argument("--results", default="results", help="results root folder")
    d.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights")
    d.add_argument("--ci", action="store_true", help="use the notebook's ci parameters")
    d.set_defaults(func=_demo)


def _add_bench_parser(sub) -> None:
    b = _add_parser(sub, "bench", "run a benchmark preset (or --offline throughput)")
    b.add_argument("--preset", default="ci", help="experiments/<preset>.yaml")
    b.add_argument("--config", default=None, help="a benchmark YAML file; default: --preset")
    b.add_argument(
        "--strategy",
        default=None,
        help="scheduling strategy every step runs (fifo, priority, slo_aware, lpm, hybrid, "
        "adaptive, aegaeon); default: the config's engine.scheduling_strategy",
    )
    b.add_argument("--results", default="results", help="results root folder")
    b.add_argument(
        "--backend",
        default="native",
        choices=["native", "openai"],
        help="native: the config's engine in-process; openai: a client of --base-url",
    )
    b.add_argument(
        "--base-url", default=None, help="openai: e.g. http://127.0.0.1:8000/v1 (default: none)"
    )
    b.add_argument("--api-key", default=None, help="openai: Bearer key (default: SAGELLM_API_KEY)")
    b.add_argument(
        "--max-concurrency",
        type=int,
        default=None,
        help="openai: in-flight cap; default: the config's max_concurrency",
    )
    b.add_argument("--timeout-s", type=float, default=300.0, help="openai: per request")
    b.add_argument("--connect-timeout-s", type=float, default=5.0, help="openai: connect")
    b.add_argument(
        "--vocab-size",
        type=int,
        default=32000,
        help="openai: workload token ids are drawn below min(this, 32000); lower it for a "
        "server whose model has a smaller vocabulary",
    )
    b.add_argument("--offline", action="store_true", help="offline throughput (W1 shape)")
    b.add_argument(
        "--peers",
        default=None,
        help="comma list of peers (hf, vllm): W1-W3 on native and each peer, one table "
        "(--preset full or ci, --dtype picks the dtypes); default: off",
    )
    b.add_argument(
        "--model",
        default=None,
        help=f"--offline: the model (default {DEFAULT_MODEL}); --backend openai: the served "
        "model name to request (default: the first of GET /models)",
    )
    b.add_argument(
        "--dtype",
        nargs="+",
        default=["float32"],
        choices=["float32", "bfloat16"],
        help="--offline: one run per dtype",
    )
    b.add_argument("--compare-hf", action="store_true", help="--offline: also time HF generate")
    b.add_argument("--threads", type=int, default=None, help="torch threads; default: torch's")
    for name, what in (
        ("--num-requests", "requests"),
        ("--prompt-tokens", "prompt tokens"),
        ("--output-tokens", "output tokens"),
    ):
        b.add_argument(name, type=int, default=None, help=f"--offline: {what}; default: preset's")
    b.set_defaults(func=_bench)


def _add_gate_parser(sub) -> None:
    gt = _add_parser(sub, "gate", "performance regression gate against a baseline")
    gt.add_argument("--preset", default="ci", help="benchmark preset both sides run")
    gt.add_argument("--baseline", default="results/baseline/ci.json", help="baseline record")
    gt.add_argument(
        "--current",
        default=None,
        help="metrics.json or run folder to compare instead of running (default: run)",
    )
    gt.add_argument("--results", default="results", help="results root folder")
    gt.add_argument(
        "--repeats", type=int, default=None, help="override the preset's repeats (default: keep)"
    )
    gt.add_argument(
        "--processes-per-side",
        type=int,
        default=None,
        help="worker processes per side, one after another, sharing the repeats (default 4)",
    )
    gt.add_argument(
        "--update-baseline",
        action="store_true",
        help="measure the current commit and record it as the baseline",
    )
    gt.set_defaults(func=_gate)


def _add_sweep_parser(sub) -> None:
    sw = _add_parser(sub, "sweep", "run a notebook over a parameter grid (papermill)")
    sw.add_argument("grid", help="the grid YAML (see sagellm/benchmarks/sweep.py)")
    sw.add_argument("--results", default="results", help="results root folder")
    sw.add_argument(
        "--backend",
        default="local",
        choices=["local", "ray"],
        help="local: threads here (the grid's workers); ray: one Ray task per point "
        "(needs sagellm[ray])",
    )
    sw.add_argument(
        "--address",
        default=None,
        help="ray: the cluster to join (host:port, ray://host:port or auto); default: the "
        "session this process has, else a local one",
    )
    sw.add_argument(
        "--connect-timeout-s",
        type=float,
        default=10.0,
        help="ray: seconds to wait for --address to answer",
    )
    sw.set_defaults(func=_sweep)


def _add_publish_parser(sub) -> None:
    pb = _add_parser(
        sub, "publish", "render run folders and executed notebooks into a static offline site"
    )
    pb.add_argument("results_dir", help="folder to scan for run folders and *.ipynb")
    pb.add_argument("-o", "--output", default="site", help="site folder to write")
    pb.set_defaults(func=_publish)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sagellm", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    _add_generate_parser(sub)
    _add_demo_parser(sub)
    _add_bench_parser(sub)
    _add_gate_parser(sub)
    r = _add_parser(sub, "report", "regenerate report.md and charts of a run folder")
    r.add_argument("run_dir", help="a run folder: results/<experiment>/<run_id>/ or a sweep's")
    r.set_defaults(func=_report)
    _add_sweep_parser(sub)
    _add_publish_parser(sub)
    _add_serve_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SageLLMError, ValueError) as err:
        print(f"sagellm {args.cmd}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
