"""`sagellm publish`: a results tree with a real kv_policy run, an executed notebook (an offline
chart and the quickstart's widget), a half-written run and a folder that is not a run becomes a
site whose links all resolve, whose charts draw in headless Chromium (no network), whose widget
shows its static note, and whose index names the skipped folders; bad input is a clear error."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest

from sagellm.benchmarks.publish import publish
from sagellm.cli import main

NOTEBOOK_CELLS = [
    "import altair as alt\nimport pandas as pd\nfrom IPython.display import display\n"
    "from sagellm.benchmarks.charts import enable_offline_charts\n"
    "from sagellm.benchmarks.widgets import generate_controls\nenable_offline_charts()",
    "alt.Chart(pd.DataFrame({'x': [1, 2, 3], 'y': [3, 1, 2]}), title='t').mark_line()"
    ".encode(x='x:Q', y='y:Q')",
    "display(generate_controls(None))",
]


@pytest.fixture(scope="module")
def results_tree(tmp_path_factory):
    from nbclient import NotebookClient

    from sagellm.experiments.kv_policy_sweep import run_policy_sweep
    from sagellm.kv_policy.traces import multi_turn_trace

    root = tmp_path_factory.mktemp("results")
    trace = multi_turn_trace(num_sessions=8, turns_per_session=2, seed=0)
    run = run_policy_sweep(trace, ["lru", "sieve"], [20, 80], modes=["object"], results_root=root)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in NOTEBOOK_CELLS])
    NotebookClient(nb, kernel_name="python3", timeout=300).execute()  # stores widget state
    (root / "notebooks").mkdir()
    nbformat.write(nb, root / "notebooks" / "demo.ipynb")
    half = root / "kv_policy" / "half-written"
    half.mkdir()
    (half / "config.yaml").write_text("experiment: kv_policy\n")
    broken = root / "kv_policy" / "broken-metrics"
    broken.mkdir()
    (broken / "config.yaml").write_text("x: 1\n")
    (broken / "metrics.json").write_text('{"num_requests": 3')
    notes = root / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("not a run\n")
    return root, run.run_dir


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        url = (
            a.get("href")
            if tag in ("a", "link")
            else a.get("src")
            if tag in ("img", "script")
            else None
        )
        if url:
            self.urls.append(url)


def _local_links(page: Path) -> list[Path]:
    """Targets of the page's relative links (a, link, img, script), parsed as HTML."""
    parser = _Links()
    parser.feed(page.read_text())
    return [
        page.parent / unquote(u.split("#")[0])
        for u in parser.urls
        if ":" not in u.split("/")[0] and not u.startswith("#")
    ]


def test_publish_writes_linked_site_and_names_skipped_folders(results_tree, tmp_path):
    root, run_dir = results_tree
    site = publish(root, tmp_path / "site")
    assert [p.parent.name for p in site.runs] == [run_dir.name]
    assert [p.name for p in site.notebooks] == ["demo.html"]
    skipped = {p.name: why for p, why in site.skipped}
    assert skipped["half-written"] == "half-written run: no metrics.json"
    assert skipped["broken-metrics"].startswith("half-written run: metrics.json unreadable")
    assert skipped["notes"] == "not a run folder: no metrics.json"
    index = (tmp_path / "site" / "index.html").read_text()
    for name in ("half-written", "broken-metrics", "notes", "num_accesses", run_dir.name):
        assert name in index
    pages = [tmp_path / "site" / "index.html", *site.runs, *site.notebooks]
    for page in pages:
        for target in _local_links(page):
            assert target.is_file(), f"{page}: broken link {target}"
    assert "cdn.jsdelivr" not in "".join(p.read_text() for p in site.runs)


def test_publish_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["publish", str(tmp_path / "missing"), "-o", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "results_dir" in err and "missing" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.browser
def test_published_site_draws_charts_offline_in_chromium(results_tree, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root, _ = results_tree
    site = publish(root, tmp_path / "site")
    assert main(["publish", str(root), "-o", str(tmp_path / "site2")]) == 0
    for page in [*site.runs, *site.notebooks]:
        browser.get(page.as_uri())
        charts = browser.find_elements(By.CSS_SELECTOR, ".sagellm-chart")
        assert charts, f"{page}: no chart"
        WebDriverWait(browser, 60).until(
            lambda d, cs=charts: all(c.find_elements(By.TAG_NAME, "svg") for c in cs)
        )
        assert [c.text for c in charts if "chart error" in c.text] == []
        marks = browser.find_elements(
            By.CSS_SELECTOR, ".sagellm-chart svg .mark-line, .mark-symbol"
        )
        assert marks, f"{page}: chart drew no marks"
        browser.save_screenshot(str(tmp_path / f"{page.parent.name}-{page.stem}.png"))
    browser.get(site.notebooks[0].as_uri())
    note = browser.find_elements(By.CSS_SELECTOR, ".sagellm-widget-static")
    assert note and "JupyterLab" in note[0].text
    browser.get((tmp_path / "site" / "index.html").as_uri())
    links = [a.get_attribute("href") for a in browser.find_elements(By.TAG_NAME, "a")]
    assert len(links) >= 2
    for href in links:
        browser.get(href)
        assert "ERR_FILE_NOT_FOUND" not in browser.page_source, href
