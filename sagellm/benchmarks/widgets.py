"""ipywidgets controls for interactive use in JupyterLab.

The callbacks live here so notebooks stay free of ``def``. Displaying the widgets in a headless
papermill run only records a widget view in the output; nothing blocks.
"""

from __future__ import annotations

from sagellm.core.types import SamplingParams


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
    return w.VBox([prompt, max_tokens, temperature, button, out])
