"""ipywidgets controls for interactive use in JupyterLab.

The callbacks live here so notebooks stay free of ``def``. Displaying the widgets in a headless
papermill run only records a widget view in the output; nothing blocks.

Static HTML (nbconvert, the published site) has no kernel and no widget manager: the display
carries a ``text/html`` alternative stating the controls' values and that they are interactive in
JupyterLab, which nbconvert shows whenever the widget state is not embedded (never a blank).
JupyterLab prefers the widget view and shows the live controls.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from sagellm.core.io import atomic_write_text
from sagellm.core.types import SamplingParams


def drop_widget_state(notebook_path: str | Path) -> bool:
    """Remove the widget state an executor stored in a notebook's metadata (nbclient does by
    default): static HTML of a notebook carrying it loads a widget manager from a CDN and shows
    a blank; without it every widget shows its ``text/html`` note. Returns True when state was
    removed. Written atomically."""
    path = Path(notebook_path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    if "widgets" not in nb.get("metadata", {}):
        return False
    del nb["metadata"]["widgets"]
    atomic_write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


def static_note_html(values: dict[str, object]) -> str:
    """What static HTML shows in place of live controls: their values and a note."""
    items = "".join(
        f"<li><code>{html.escape(k)}</code> = {html.escape(repr(v))}</li>"
        for k, v in values.items()
    )
    return (
        '<div class="sagellm-widget-static"><p><b>Interactive controls</b> (prompt, sliders, '
        "Generate button): they run in JupyterLab with a live kernel; this static page shows "
        f"their values.</p><ul>{items}</ul></div>"
    )


def generate_controls(engine, default_prompt: str = "What is the capital of France?"):
    """A prompt box, token/temperature sliders and a Generate button wired to ``engine``."""
    import ipywidgets as w

    prompt = w.Textarea(value=default_prompt, description="prompt", layout={"width": "90%"})
    max_tokens = w.IntSlider(value=48, min=1, max=512, description="max tokens")
    temperature = w.FloatSlider(value=0.0, min=0.0, max=2.0, step=0.05, description="temp")
    button = w.Button(description="Generate", button_style="primary")
    out = w.Output()

    def on_click(_):
        sp = SamplingParams(max_tokens=max_tokens.value, temperature=temperature.value, seed=0)
        with out:
            out.clear_output()
            try:
                ids = engine.generate([prompt.value], sp)[0]
                print(engine.tokenizer.decode(ids))
            except ValueError as err:
                print(f"error: {err}")

    button.on_click(on_click)

    class _Controls(w.VBox):
        def _repr_mimebundle_(self, **kwargs):
            data = super()._repr_mimebundle_(**kwargs) or {}
            values = {
                "prompt": prompt.value,
                "max_tokens": max_tokens.value,
                "temperature": temperature.value,
            }
            return {**data, "text/html": static_note_html(values)}

    return _Controls([prompt, max_tokens, temperature, button, out])
