"""One side of a lockstep comparison in its own process (see :mod:`sagellm.benchmarks.lockstep`).

    python -m sagellm.benchmarks.gate_worker --config RUN.yaml --peak-flops 1.6e11

Protocol, one JSON object per line on stdout (everything else the process prints goes to
stderr): the worker loads the engine and prints ``{"ready": true}``; then for every ``step``
line on stdin it advances the run by one engine step and answers ``{"done": false}``, or
``{"done": true, "repeats": [...]}`` when the run has ended. ``{"error": "..."}`` reports a
failure. The engine's clock stands still while the worker waits for the next line.

Keep this protocol stable: the gate runs the committed baseline's copy of this module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gate_worker")
    ap.add_argument("--config", required=True, help="benchmark YAML (mode: concurrency)")
    ap.add_argument("--peak-flops", type=float, required=True, help="FLOP/s for MFU")
    args = ap.parse_args(argv)
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    sys.stdout = sys.stderr

    def send(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        from sagellm.benchmarks.config import load_benchmark_config
        from sagellm.benchmarks.lockstep import InProcessSide
        from sagellm.engines import create_engine

        cfg = load_benchmark_config(args.config)
        side = InProcessSide("worker", create_engine(cfg.engine), cfg, args.peak_flops)
    except Exception as err:
        send({"error": f"{type(err).__name__}: {err}"})
        return 1
    send({"ready": True})
    for line in sys.stdin:
        if line.strip() != "step":
            send({"error": f"unknown command {line.strip()!r}; expected 'step'"})
            return 1
        try:
            more = side.step()
        except Exception as err:
            send({"error": f"{type(err).__name__}: {err}"})
            return 1
        send({"done": False} if more else {"done": True, "repeats": side.repeats()})
        if not more:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
