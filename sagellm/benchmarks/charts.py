"""Altair charts that draw offline: in JupyterLab, in nbconvert HTML, in the published site.

altair 6 emits Vega-Lite v6. JupyterLab 4's built-in renderer handles up to v5, so altair's
default renderer falls back to HTML that loads vega from a CDN, which fails without internet.
Here every chart becomes self-contained HTML instead: a ``<div>`` plus a script that carries the
vega + vega-lite + vega-embed bundle from vl-convert (no network) and draws the chart as SVG.

Invariants:
- The bundle (~0.9 MB of JavaScript, built once per process, ~5 s) is embedded in every chart
  output and evaluated only once per page (``window.vegaEmbed`` guards it), so each output draws
  on its own whatever order cells are run, cleared or reloaded in.
- A chart that fails to draw replaces its ``<div>`` content with the error text (never blank).
- The Vega-Lite version of the bundle is the one altair emits (``vl_version_for_vl_convert``).
"""

from __future__ import annotations

import html
import json
import uuid
from functools import lru_cache
from typing import Any

RENDERER_NAME = "sagellm_offline"

_FRAGMENT = """\
<div class="sagellm-chart" id="{div_id}"></div>
<script type="text/javascript">
(function () {{
  var el = document.currentScript ? document.currentScript.previousElementSibling : null;
  if (!el || el.id !== "{div_id}") {{ el = document.getElementById("{div_id}"); }}
{bundle}  if (!window.vegaEmbed) {{
    el.textContent = "chart error: vega-embed not loaded";
    return;
  }}
  window.vegaEmbed(el, {spec}, {{"renderer": "svg", "actions": false}}).catch(function (err) {{
    el.textContent = "chart error: " + err;
  }});
}})();
</script>
"""

_GUARDED_BUNDLE = """\
  if (!window.vegaEmbed) {{
    (function () {{
{bundle}
    }})();
  }}
"""

_PAGE = """\
<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>{title}</title></head>
<body>
{fragment}
</body>
</html>
"""


@lru_cache(maxsize=1)
def vega_bundle_js() -> str:
    """vega + vega-lite + vega-embed as one script (from vl-convert; no network)."""
    import vl_convert as vlc
    from altair.utils._importers import vl_version_for_vl_convert

    return vlc.javascript_bundle(vl_version=vl_version_for_vl_convert())


def _spec_dict(chart_or_spec: Any) -> dict[str, Any]:
    if isinstance(chart_or_spec, dict):
        return chart_or_spec
    return chart_or_spec.to_dict()


def chart_fragment(chart_or_spec: Any, inline_bundle: bool = True) -> str:
    """An HTML fragment (div + script) that draws the chart as SVG. ``inline_bundle`` False:
    the page loads the bundle itself (``<script src=...>`` before the fragment)."""
    # "</" inside a script body would end it early; JSON allows the escaped form.
    spec = json.dumps(_spec_dict(chart_or_spec)).replace("</", "<\\/")
    bundle = _GUARDED_BUNDLE.format(bundle=vega_bundle_js()) if inline_bundle else ""
    return _FRAGMENT.format(div_id=f"sagellm-chart-{uuid.uuid4().hex}", bundle=bundle, spec=spec)


def chart_page(chart_or_spec: Any, title: str = "chart") -> str:
    """A standalone HTML page drawing the chart offline."""
    return _PAGE.format(title=html.escape(title), fragment=chart_fragment(chart_or_spec))


def offline_renderer(spec: dict[str, Any], **metadata: Any) -> dict[str, str]:
    """altair renderer: ``text/html`` that draws offline, plus a ``text/plain`` summary."""
    title = spec.get("title")
    if isinstance(title, dict):
        title = title.get("text")
    mark = spec.get("mark")
    if isinstance(mark, dict):
        mark = mark.get("type")
    summary = f"<altair chart: {title or 'untitled'}{f', mark {mark}' if mark else ''}>"
    return {"text/html": chart_fragment(spec), "text/plain": summary}


def enable_offline_charts() -> None:
    """Register and enable :func:`offline_renderer` as altair's renderer (idempotent)."""
    import altair as alt

    alt.renderers.register(RENDERER_NAME, offline_renderer)
    alt.renderers.enable(RENDERER_NAME)
