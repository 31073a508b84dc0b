"""A benchmark shows one overall bar: measured requests of repeats x requests, elapsed and
remaining time, the current repeat; it stays on screen (no per-repeat ``r0: 0%`` bars)."""

import re

from sagellm.benchmarks.config import BenchmarkConfig
from sagellm.benchmarks.runner import BenchmarkRunner
from sagellm.core import parse_config


def test_one_overall_bar_that_stays(tiny_checkpoint, capsys):
    _, folder = tiny_checkpoint("llama")
    cfg = parse_config(
        {
            "experiment": "tinybar",
            "engine": {"model": {"path": str(folder)}, "block_size_tokens": 4, "num_kv_blocks": 64},
            "workload": {
                "kind": "synthetic",
                "num_requests": 3,
                "arrival": {"process": "poisson", "rate_per_s": 200.0},
                "prompt_tokens": {"dist": "fixed", "mean": 6},
                "output_tokens": {"dist": "fixed", "mean": 2},
            },
            "repeats": 2,
            "warmup_requests": 0,
        },
        BenchmarkConfig,
    )
    capsys.readouterr()  # drop what building the checkpoint printed
    res = BenchmarkRunner(progress=True).run(cfg, results_root=None, peak_flops_per_s=1e12)
    assert len(res.repeats) == 2
    err = capsys.readouterr().err
    frames = [f for f in re.split(r"[\r\n]", err) if f.strip()]
    assert frames and all(f.startswith("tinybar:") for f in frames), frames
    assert not re.search(r"\br\d+:|warmup", err)  # no per-repeat or warm-up bars
    final = frames[-1]
    assert "6/6" in final and "100%" in final and "repeat 2/2" in final
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", final)  # elapsed<remaining
    assert err.endswith("\n")  # left on screen (leave=True), not cleared
