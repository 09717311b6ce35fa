"""A small, self-contained HTML report builder for the backtest and nightly reports.

One file, inline CSS, figures embedded as PNG data URIs, no external URL, so the report can be mailed or
archived as is. Figures are `matplotlib.figure.Figure` objects rendered by the Agg canvas: no pyplot, no global
backend state, no display needed.
"""
from __future__ import annotations

import base64
import html
import io
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; padding-bottom: .15em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; margin: .5em 0; display: block; }
"""


def _new_figure(title: str, figsize: tuple[float, float] = (6.0, 4.5)) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)  # attach the Agg canvas explicitly: rendering never depends on the global backend
    ax = fig.add_subplot()
    ax.set_title(title)
    return fig, ax


def figure_to_data_uri(fig: Figure) -> str:
    """Render fig as PNG and return it as a `data:image/png;base64,...` URI. The figure is closed afterwards
    (released from pyplot if pyplot happens to manage it, and cleared), so do not reuse it."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    pyplot = sys.modules.get("matplotlib.pyplot")  # never import pyplot; only release a figure it already holds
    if pyplot is not None:
        pyplot.close(fig)
    fig.clear()
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def calibration_figure(tables: dict[str, pd.DataFrame], title: str) -> Figure:
    """Reliability diagram: observed rate against mean predicted probability, one line per label (frames from
    models.metrics.calibration_table), with the diagonal of perfect calibration."""
    fig, ax = _new_figure(title)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    for label, table in tables.items():
        ax.plot(table["mean_predicted"], table["observed_rate"], marker="o", markersize=3, label=str(label))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate")
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig


def lift_figure(tables: dict[str, pd.DataFrame], title: str) -> Figure:
    """Cumulative gains: share of positives captured against share of population contacted (highest scores
    first), one curve per label (frames from models.metrics.lift_table), with the random baseline."""
    fig, ax = _new_figure(title)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="random")
    for label, table in tables.items():
        x = np.r_[0.0, table["cum_share_population"].to_numpy(float)]
        y = np.r_[0.0, table["cum_share_positives"].to_numpy(float)]
        ax.plot(x, y, marker="o", markersize=3, label=str(label))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("share of population (highest scores first)")
    ax.set_ylabel("share of positives captured")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def bar_figure(frame: pd.DataFrame, x: str, y: str, hue: str | None, title: str) -> Figure:
    """Bar chart of y per x; with hue, grouped bars (one colour per hue value). Categories keep their order of
    first appearance. Each (x, hue) pair must appear at most once (ValueError otherwise)."""
    fig, ax = _new_figure(title, figsize=(7.0, 4.5))
    if hue is None:
        if frame[x].duplicated().any():
            raise ValueError(f"bar_figure: duplicate values of {x!r}")
        wide = frame.set_index(x)[[y]]
    else:
        if frame.duplicated([x, hue]).any():
            raise ValueError(f"bar_figure: duplicate ({x!r}, {hue!r}) pairs")
        wide = frame.pivot(index=x, columns=hue, values=y)
        wide = wide.reindex(index=pd.unique(frame[x]), columns=pd.unique(frame[hue]))
    positions = np.arange(len(wide.index))
    width = 0.8 / max(1, len(wide.columns))
    for i, column in enumerate(wide.columns):
        offset = (i - (len(wide.columns) - 1) / 2) * width
        ax.bar(positions + offset, wide[column].to_numpy(float), width=width,
               label=str(column) if hue is not None else None)
    crowded = len(positions) > 6
    ax.set_xticks(positions, [str(v) for v in wide.index], rotation=30 if crowded else 0,
                  ha="right" if crowded else "center")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if hue is not None:
        ax.legend(title=hue, fontsize="small")
    fig.tight_layout()
    return fig


def _float_format(value: float) -> str:
    return f"{value:.4g}"


def _section_html(section: dict[str, Any]) -> str:
    parts = [f"<section>\n<h2>{html.escape(str(section['heading']))}</h2>"]
    text = section.get("text")
    if text:
        for paragraph in str(text).split("\n\n"):
            if paragraph.strip():
                parts.append(f"<p>{html.escape(paragraph.strip())}</p>")
    for link in section.get("links") or []:  # relative links beside the report (e.g. its data docs)
        parts.append(f'<p><a href="{html.escape(str(link["href"]))}">{html.escape(str(link["text"]))}</a></p>')
    table = section.get("table")
    if table is not None:
        parts.append(table.to_html(escape=True, index=False, float_format=_float_format, border=0, na_rep=""))
    for figure in section.get("figures") or []:
        uri = figure if isinstance(figure, str) else figure_to_data_uri(figure)
        if not uri.startswith("data:image/png;base64,"):
            raise ValueError("figures must be Figure objects or PNG data URIs")
        parts.append(f'<img alt="figure" src="{html.escape(uri)}">')
    parts.append("</section>")
    return "\n".join(parts)


def render_report(title: str, sections: list[dict[str, Any]], path: Path) -> Path:
    """Write one self-contained UTF-8 HTML file and return its path.

    Each section is {"heading": str, "text": str (optional), "links": list of {"text", "href"} (optional),
    "table": DataFrame (optional), "figures": list[Figure] (optional; already rendered PNG data URIs are accepted
    too)}. Headings, text, links and table cells are HTML-escaped. Figures are closed once embedded. The file is written to path.with_suffix('.tmp') and
    moved into place with os.replace, so a reader never sees half a report."""
    path = Path(path)
    if path.suffix == ".tmp":
        raise ValueError(f"the report path must not end in .tmp (used for the atomic write): {path}")
    body = "\n".join(_section_html(section) for section in sections)
    document = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(document)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
