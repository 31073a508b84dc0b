"""Charts render offline: the altair renderer and saved chart pages carry the vega bundle and the
spec, load nothing from a CDN, and the renderer is what `enable_offline_charts` turns on."""

import json

import altair as alt
import pandas as pd
import pytest

from sagellm.benchmarks import charts
from sagellm.benchmarks.results import save_chart


@pytest.fixture(scope="module")
def chart():
    df = pd.DataFrame({"x": [1, 2, 3], "y": [2.0, 1.0, 3.0]})
    return alt.Chart(df, title="offline </script> test").mark_line().encode(x="x:Q", y="y:Q")


def test_renderer_output_is_self_contained(chart):
    bundle = charts.offline_renderer(chart.to_dict())
    html = bundle["text/html"]
    assert "window.vegaEmbed=" in html  # the bundle itself, not a loader
    assert "cdn.jsdelivr" not in html and "https://cdn" not in html
    assert "<\\/script> test" in html  # the title cannot close the script early
    assert html.count("</script>") == 1
    assert bundle["text/plain"] == "<altair chart: offline </script> test, mark line>"


def test_enable_offline_charts_makes_altair_use_it(chart):
    previous = alt.renderers.active
    try:
        charts.enable_offline_charts()
        assert alt.renderers.active == charts.RENDERER_NAME
        data = chart._repr_mimebundle_()
        data = data[0] if isinstance(data, tuple) else data
        assert "sagellm-chart" in data["text/html"]
        assert "vega@6" not in data["text/html"]  # altair's CDN fallback
    finally:
        alt.renderers.enable(previous)


def test_fragment_without_bundle_names_missing_bundle(chart):
    html = charts.chart_fragment(chart, inline_bundle=False)
    assert "window.vegaEmbed=" not in html and "vega-embed not loaded" in html


def test_save_chart_writes_png_offline_html_and_spec(chart, tmp_path):
    paths = save_chart(chart, tmp_path / "c")
    assert [p.name for p in paths] == ["c.png", "c.html", "c.vl.json"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths[1].read_text()
    assert page.startswith("<!DOCTYPE html>") and "window.vegaEmbed=" in page
    assert "cdn.jsdelivr" not in page
    assert json.loads(paths[2].read_text())["mark"]["type"] == "line"
