"""00_quickstart in JupyterLab in headless Chromium: all cells run without errors, every chart
draws (an SVG, not "Error loading script"), the widget renders and answers a click; a notebook
opened, run and saved in JupyterLab leaves git clean (the nbstripout filter `make` installs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from browser_lab_driver import open_notebook, output_errors, run_all_and_wait, run_command, save
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _ci_copy(name: str, dest: Path, results_root: Path) -> Path:
    """The notebook with papermill's ci parameters injected (not executed)."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(ROOT / "notebooks" / name))
    nb = parameterize_notebook(nb, {"preset": "ci", "results_root": str(results_root)})
    out = dest / name
    nbformat.write(nb, out)
    return out


def test_quickstart_runs_and_renders_in_jupyterlab(browser, jupyter_lab, tmp_path):
    base_url, token, lab_dir = jupyter_lab
    nb_path = _ci_copy("00_quickstart.ipynb", lab_dir, tmp_path / "results")
    num_charts = sum("alt.Chart(" in c.source for c in nbformat.read(nb_path, 4).cells)
    open_notebook(browser, base_url, token, nb_path.name)
    try:
        run_all_and_wait(browser, base_url, token, timeout_s=600)
        assert output_errors(browser) == []
        drawn = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .sagellm-chart svg")
        assert len(drawn) == num_charts > 0
        button = browser.find_element(By.XPATH, "//button[normalize-space()='Generate']")
        button.click()
        WebDriverWait(browser, 300).until(
            lambda d: any(
                e.text.strip() for e in d.find_elements(By.CSS_SELECTOR, ".widget-output")
            )
        )
        answer = browser.find_element(By.CSS_SELECTOR, ".widget-output").text
        assert "Paris" in answer or len(answer.split()) > 2, answer
    finally:
        browser.save_screenshot(str(tmp_path / "00_quickstart.png"))
    assert list((tmp_path / "results" / "quickstart").glob("*/metrics.json"))


DIRECTIONS = ["01_prefix_reuse", "02_kv_runtime", "03_kv_policy", "04_scheduler_ir"]


@pytest.mark.skipif(
    not os.environ.get("SAGELLM_BROWSER_ALL"),
    reason="one notebook per direction takes minutes: set SAGELLM_BROWSER_ALL=1 (CI budget)",
)
@pytest.mark.parametrize("stem", DIRECTIONS)
def test_direction_notebook_runs_and_draws_in_jupyterlab(stem, browser, jupyter_lab, tmp_path):
    base_url, token, lab_dir = jupyter_lab
    nb_path = _ci_copy(f"{stem}.ipynb", lab_dir, tmp_path / "results")
    open_notebook(browser, base_url, token, nb_path.name)
    try:
        run_all_and_wait(browser, base_url, token, timeout_s=900)
        assert output_errors(browser) == []
        charts = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .sagellm-chart")
        assert charts
        WebDriverWait(browser, 60).until(
            lambda d, cs=charts: all(c.find_elements(By.TAG_NAME, "svg") for c in cs)
        )
    finally:
        browser.save_screenshot(str(tmp_path / f"{stem}.png"))


def _git_status(git: list[str]) -> str:
    return subprocess.run(
        [*git, "status", "--porcelain"], check=True, capture_output=True, text=True
    ).stdout


def _wait_saved(path: Path, before_ns: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while path.stat().st_mtime_ns == before_ns:
        assert time.monotonic() < deadline, "JupyterLab did not save the notebook"
        time.sleep(0.5)


def test_open_run_save_in_jupyterlab_leaves_git_clean(browser, jupyter_lab, tmp_path):
    base_url, token, lab_dir = jupyter_lab
    git = ["git", "-C", str(lab_dir), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    for name in (".gitattributes", ".gitignore"):
        shutil.copy(ROOT / name, lab_dir / name)
    nb_path = lab_dir / "00_quickstart.ipynb"
    shutil.copy(ROOT / "notebooks" / nb_path.name, nb_path)
    subprocess.run(
        ["make", "-s", "-C", str(lab_dir), "-f", str(ROOT / "Makefile"), "git-filters",
         f"PYTHON_BIN={sys.executable}"],
        check=True,
    )  # fmt: skip
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "committed notebook"], check=True)
    # opened and saved (what autosave does): the file is rewritten, git sees no change at all
    before = nb_path.stat().st_mtime_ns
    open_notebook(browser, base_url, token, nb_path.name)
    save(browser)
    _wait_saved(nb_path, before)
    assert nbformat.read(nb_path, as_version=4).metadata.get("language_info")
    assert _git_status(git) == ""
    # a cell run and saved: outputs and an execution count land in the file; the filter strips
    # them, so git diff is empty and nothing can be staged
    browser.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputArea-editor")[0].click()
    run_command(browser, "Run", "Run Selected Cell")
    first_prompt = (By.CSS_SELECTOR, ".jp-CodeCell .jp-InputArea-prompt")
    WebDriverWait(browser, 120).until(ec.text_to_be_present_in_element(first_prompt, "1"))
    before = nb_path.stat().st_mtime_ns
    save(browser)
    _wait_saved(nb_path, before)
    assert nbformat.read(nb_path, as_version=4).cells[1].execution_count == 1
    subprocess.run([*git, "diff", "--exit-code"], check=True, capture_output=True)
    subprocess.run([*git, "add", "-A"], check=True)
    assert _git_status(git) == ""
