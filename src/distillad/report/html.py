"""The self-contained HTML report: one file, figures embedded as base64 PNG data URIs, no
scripts, no external resources. Every user-provided string (file names, categories, model
parameters) is HTML-escaped."""
from __future__ import annotations

import base64
import html
from typing import Sequence

from .tables import MAIN_METRICS, SIZE_METRICS, fmt_value, speed_lines, summary_facts

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}
.figs img{max-width:100%;margin:4px}.cases{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;max-width:380px}figure img{max-width:100%;display:block}
figcaption{font-size:.85em;word-break:break-all}.note{color:#8a4b00}
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def png_img(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _metric_table(rows: Sequence[tuple[str, dict]], keys: Sequence[str]) -> str:
    keys = [k for k in keys if any(k in m for _, m in rows)]
    if not keys:
        return ""
    head = "".join(f"<th>{esc(k)}</th>" for k in keys)
    body = "".join("<tr><td>" + esc(name) + "</td>" + "".join(f"<td>{esc(fmt_value(m.get(k)))}</td>" for k in keys)
                   + "</tr>" for name, m in rows)
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def build_html(result: dict, figures: Sequence[tuple[str, bytes]],
               cases: Sequence[tuple[str, str, Sequence[dict]]], display: dict | None) -> str:
    """result: an `evaluate` result. figures: (title, png) pairs. cases: (heading, explanation,
    [{"name", "score", "category", "defect_type", "flagged" (bool or None), "png"}]) groups. display: {"vmin", "vmax",
    "how"} of the heatmaps."""
    title = f"{result.get('model')} on {result.get('dataset')}"
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
           f"<style>{_CSS}</style></head><body>", f"<h1>{esc(title)}</h1><ul>"]
    out += [f"<li>{esc(f)}</li>" for f in summary_facts(result)]
    params = result.get("params") or {}
    if params:
        out.append("<li>parameters: " + esc(", ".join(f"{k}={v}" for k, v in params.items())) + "</li>")
    out.append("</ul>")

    rows = [("all test images (pooled)", result.get("metrics") or {})]
    per_cat = result.get("per_category") or {}
    rows += [(f"category {c}", m) for c, m in per_cat.items() if c != "mean"]
    if "mean" in per_cat:
        rows.append(("mean of categories", per_cat["mean"]))
    out.append("<h2>Metrics</h2>")
    out.append(_metric_table(rows, MAIN_METRICS) or "<p>No metric could be computed (see notes).</p>")
    size = _metric_table(rows, SIZE_METRICS)
    if size:
        out.append("<h3>AUPRO by defect size (quartiles of ground-truth region areas) and robustness rho</h3>" + size)
    cls = result.get("classification")
    if cls:
        out.append(f"<h2>Classification</h2><p>accuracy: {esc(fmt_value(cls.get('accuracy')))}</p>")
        per = cls.get("accuracy_per_class") or {}
        if per:
            out.append("<table><tr><th>class</th><th>accuracy</th></tr>" + "".join(
                f"<tr><td>{esc(k)}</td><td>{esc(fmt_value(v))}</td></tr>" for k, v in per.items()) + "</table>")
    notes = result.get("notes") or []
    if notes:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li class='note'>{esc(n)}</li>" for n in notes) + "</ul>")

    if figures:
        out.append("<h2>Curves and scores</h2><div class='figs'>")
        out += [png_img(png, name) for name, png in figures]
        out.append("</div>")
    if cases:
        out.append("<h2>Heatmaps</h2>")
        if display:
            out.append(f"<p>All heatmaps share one colour range, {esc(fmt_value(display['vmin']))} (bottom of the "
                       f"scale) to {esc(fmt_value(display['vmax']))} (top): {esc(display['how'])} "
                       "Ground-truth regions are outlined in white.</p>")
        for heading, explanation, items in cases:
            out.append(f"<h3>{esc(heading)}</h3><p>{esc(explanation)}</p><div class='cases'>")
            if not items:
                out.append("<p>(none in this test set)</p>")
            for it in items:
                cap = (f"{esc(it['name'])}<br>score {esc(fmt_value(it['score']))} · "
                       f"{esc(it.get('category') or '-')}/{esc(it.get('defect_type'))}")
                if it.get("flagged") is not None:
                    cap += " · " + ("flagged (score &gt; threshold_)" if it["flagged"] else "not flagged (score &le; threshold_)")
                out.append(f"<figure>{png_img(it['png'], it['name'])}<figcaption>{cap}</figcaption></figure>")
            out.append("</div>")
    out.append("<h2>Speed</h2><ul>" + "".join(f"<li>{esc(line.lstrip('- '))}</li>" for line in speed_lines(result.get("speed"), escape=str))
               + "</ul>")
    out.append("</body></html>\n")
    return "\n".join(out)
