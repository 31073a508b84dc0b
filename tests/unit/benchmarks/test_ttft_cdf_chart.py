"""The TTFT CDF stays readable: one coloured line per repeat up to 8 repeats, a median line
with a min-max band beyond (20 repeats used to draw 20 lines with a 10-colour palette)."""

import numpy as np
import pandas as pd

from sagellm.benchmarks.ttft_chart import MAX_REPEAT_LINES, ttft_cdf_chart


def _requests(num_repeats: int, per_repeat: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for rep in range(num_repeats):
        for i in range(per_repeat):
            arrival = i * 0.1
            rows.append(
                {"repeat": rep, "arrival_s": arrival, "first_token_s": arrival + rng.gamma(2, 0.05)}
            )
    rows.append({"repeat": 0, "arrival_s": 9.0, "first_token_s": None})  # never got a token
    return pd.DataFrame(rows)


def test_few_repeats_get_one_distinguishable_line_each():
    spec = ttft_cdf_chart(_requests(3)).to_dict()
    assert spec["mark"]["type"] == "line"
    color = spec["encoding"]["color"]
    assert color["field"] == "repeat" and color["scale"]["scheme"] == "category10"
    values = next(iter(spec["datasets"].values()))
    assert len(values) == 3 * 12
    last = [v for v in values if v["repeat"] == 2]
    assert max(v["fraction"] for v in last) == 1.0


def test_many_repeats_get_a_summary_not_twenty_lines():
    import vl_convert as vlc

    df = _requests(20)
    chart = ttft_cdf_chart(df)
    spec = chart.to_dict()
    assert "layer" in spec and "color" not in str(spec.get("encoding", {}))
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks == ["area", "line"]
    summary = pd.DataFrame(next(iter(spec["datasets"].values())))
    ttft = (df["first_token_s"] - df["arrival_s"]).dropna()
    assert (summary["min_s"] <= summary["median_s"]).all()
    assert (summary["median_s"] <= summary["max_s"]).all()
    assert summary["max_s"].iloc[-1] == ttft.max()  # the slowest request of all repeats
    assert "20 repeats" in spec["title"]
    png = vlc.vegalite_to_png(chart.to_json())
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert MAX_REPEAT_LINES <= 10  # a line per repeat only while the palette has a colour each
