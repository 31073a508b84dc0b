"""Drives JupyterLab 4 in the headless browser: open a notebook, run all cells, wait for the
kernel, read what rendered. DOM classes are JupyterLab 4's (``jp-*``, ``lm-*``)."""

from __future__ import annotations

import json
import time
import urllib.request

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

ERROR_MARKERS = ("Traceback", "Error loading script", "Javascript Error", "chart error")


def open_notebook(driver, base_url: str, token: str, name: str, timeout_s: float = 120) -> None:
    driver.get(f"{base_url}/lab/tree/{name}?token={token}")
    WebDriverWait(driver, timeout_s).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell"))
    )
    wait_kernel_idle(base_url, token, timeout_s)


def kernel_states(base_url: str, token: str) -> list[str]:
    """``execution_state`` of every kernel the server runs (from its REST API); [] while the
    server cannot answer (it answers 500 for a moment while a kernel starts)."""
    try:
        with urllib.request.urlopen(f"{base_url}/api/kernels?token={token}", timeout=10) as r:
            return [k["execution_state"] for k in json.load(r)]
    except OSError:  # urllib's HTTPError and URLError are OSErrors
        return []


def wait_kernel_idle(base_url: str, token: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = kernel_states(base_url, token)
        if states and all(s == "idle" for s in states):
            return
        time.sleep(0.5)
    raise TimeoutError(f"kernel not idle after {timeout_s} s: {kernel_states(base_url, token)}")


def run_command(driver, menu: str, item_label: str) -> None:
    """Click menu ``menu`` of the menu bar, then its item labelled ``item_label``."""
    menus = driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
    next(m for m in menus if m.text.strip() == menu).click()
    xpath = (
        "//ul[contains(@class,'lm-Menu-content')]/li[contains(@class,'lm-Menu-item')]"
        f"[.//div[contains(@class,'lm-Menu-itemLabel') and normalize-space()='{item_label}']]"
    )
    WebDriverWait(driver, 30).until(ec.element_to_be_clickable((By.XPATH, xpath))).click()


def prompts(driver) -> list[str]:
    """Execution prompts of the code cells, e.g. ['[1]:', '[*]:', '[ ]:']."""
    return [
        e.text.strip()
        for e in driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputArea-prompt")
    ]


def run_all_and_wait(driver, base_url: str, token: str, timeout_s: float) -> list[str]:
    """Run all cells; wait until every code cell has an execution count and the kernel is idle."""
    run_command(driver, "Run", "Run All Cells")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ps = prompts(driver)
        done = ps and all(p[1:-2].isdigit() for p in ps)
        if done and all(s == "idle" for s in kernel_states(base_url, token)):
            return ps
        time.sleep(1)
    raise TimeoutError(f"cells not all run after {timeout_s} s: {prompts(driver)}")


def output_errors(driver) -> list[str]:
    """Texts of outputs that show an error (tracebacks, failed script loads, chart errors)."""
    outs = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
    return [o.text[:500] for o in outs if any(m in o.text for m in ERROR_MARKERS)]


def save(driver) -> None:
    run_command(driver, "File", "Save Notebook")
