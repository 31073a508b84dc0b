"""The ``sagellm`` command line: one subparser per subcommand, each bound to its function in
:mod:`sagellm.cli.commands`; every option's help states its default."""

from __future__ import annotations

import argparse

from sagellm.cli.commands import (
    bench,
    demo,
    gate,
    generate,
    publish,
    report,
    serve,
    sweep,
)
from sagellm.core.config import DEFAULT_MODEL

DESCRIPTION = "The ``sagellm`` command: generate, demo, bench, gate, report, sweep, serve."


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
    s.set_defaults(func=serve)


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
    g.set_defaults(func=generate)


def _add_demo_parser(sub) -> None:
    d = _add_parser(sub, "demo", "run notebooks/00_quickstart.ipynb through papermill")
    d.add_argument("--notebook", default="notebooks/00_quickstart.ipynb", help="the notebook")
    d.add_argument("--results", default="results", help="results root folder")
    d.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights")
    d.add_argument("--ci", action="store_true", help="use the notebook's ci parameters")
    d.set_defaults(func=demo)


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
        "--workloads",
        nargs="+",
        default=None,
        choices=["w1", "w2", "w3"],
        help="--peers: run only these workloads (default: all three)",
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
    b.set_defaults(func=bench)


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
    gt.set_defaults(func=gate)


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
    sw.set_defaults(func=sweep)


def _add_publish_parser(sub) -> None:
    pb = _add_parser(
        sub, "publish", "render run folders and executed notebooks into a static offline site"
    )
    pb.add_argument("results_dir", help="folder to scan for run folders and *.ipynb")
    pb.add_argument("-o", "--output", default="site", help="site folder to write")
    pb.set_defaults(func=publish)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sagellm", description=DESCRIPTION)
    sub = p.add_subparsers(dest="cmd", required=True)
    _add_generate_parser(sub)
    _add_demo_parser(sub)
    _add_bench_parser(sub)
    _add_gate_parser(sub)
    r = _add_parser(sub, "report", "regenerate report.md and charts of a run folder")
    r.add_argument("run_dir", help="a run folder: results/<experiment>/<run_id>/ or a sweep's")
    r.set_defaults(func=report)
    _add_sweep_parser(sub)
    _add_publish_parser(sub)
    _add_serve_parser(sub)
    return p
