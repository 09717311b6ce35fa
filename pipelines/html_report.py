"""A small, self-contained HTML report builder for the backtest and nightly reports.

One file, inline CSS, figures embedded as PNG data URIs, no external URL, so the report can be mailed or
archived as is. The page is a Jinja2 template (pipelines/templates/report.html.j2, autoescaped): each section is a
dict rendered by `sections/<key>.html.j2` when that template exists, else by the generic section template
(heading, paragraphs, tables, figures). Figures are `matplotlib.figure.Figure` objects rendered by the Agg canvas:
no pyplot, no global backend state, no display needed.

Presentation rules every report gets from here: numbers in tables with thousands separators and one number of
decimals per column, a missing value shown as an en dash (never `<NA>`, `nan` or `None`), booleans as yes/no;
charts with one colour per action class (CLASS_COLOURS) and per horizon (HORIZON_COLOURS) on every chart, legends
outside the plotting area, count axes with thousands separators.
"""
from __future__ import annotations

import base64
import datetime as dt
import io
import math
import numbers
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import jinja2
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

TEMPLATES = Path(__file__).resolve().parent / "templates"
MISSING = "\u2013"  # an en dash: what a missing value looks like in every table
# One colour per action class and per horizon, on every chart of every report (colour-blind safe: Okabe-Ito).
# Other categories take PALETTE in order, which leaves out the class colours so that green, blue and orange always
# mean protective, service and commercial.
CLASS_COLOURS = {"protective": "#009E73", "service": "#0072B2", "commercial": "#E69F00"}
HORIZON_COLOURS = {30: "#56B4E9", 60: "#D55E00", 90: "#CC79A7"}
PALETTE = ["#56B4E9", "#D55E00", "#CC79A7", "#999999", "#332288", "#F0E442", "#000000", "#88CCEE", "#AA4499"]


# --- tables -----------------------------------------------------------------------------------------------------

def is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return bool(isinstance(value, float | np.floating) and math.isnan(value))
    except TypeError:
        return False


def format_number(value: Any, decimals: int | None = None) -> str:
    """A number for people: thousands separators, `decimals` decimals (default: 0 for integers, else by size)."""
    if is_missing(value):
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    value = float(value)
    if decimals is None:
        decimals = _decimals_for([value])
    return f"{value:,.{decimals}f}"


def format_pct(value: Any, decimals: int = 1) -> str:
    """A share in [0, 1] as a percentage, e.g. 0.1234 -> '12.3%'."""
    return MISSING if is_missing(value) else f"{float(value) * 100:,.{decimals}f}%"


def _decimals_for(values: Iterable[float]) -> int:
    """Decimals for a column of floats: none from 1,000, one from 10, else three; none when all are whole."""
    finite = [abs(v) for v in values if not is_missing(v) and math.isfinite(v)]
    if not finite:
        return 0
    if all(float(v).is_integer() for v in finite) and max(finite) >= 1:
        return 0
    top = max(finite)
    return 0 if top >= 1000 else 1 if top >= 10 else 3


def _format_cell(value: Any, kind: str, decimals: int) -> str:
    if is_missing(value):
        return MISSING
    if kind == "pct":
        return format_pct(value)
    if kind == "pts":  # a difference of two shares, in percentage points
        return f"{float(value) * 100:+,.1f} pts"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        return f"{float(value):,.{decimals}f}"
    if isinstance(value, dt.datetime):
        stamp = pd.Timestamp(value)
        return stamp.date().isoformat() if stamp == stamp.normalize() else stamp.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def table_view(frame: pd.DataFrame, formats: dict[str, str] | None = None, caption: str | None = None,
               css: str | None = None) -> dict[str, Any]:
    """A DataFrame as the templates show it: header names, and rows of {text, numeric} cells, already formatted.

    `formats`: column -> 'pct' (a share shown as a percentage), 'pts' (a difference of shares, in percentage
    points) or 'text'; other numeric columns get thousands separators and one number of decimals per column
    (_decimals_for). Header names show underscores as spaces."""
    formats = formats or {}
    columns = [str(c) for c in frame.columns]
    kinds, decimals, numeric = [], [], []
    for column in frame.columns:
        series = frame[column]
        kind = formats.get(str(column), "")
        is_num = (pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)) \
            or kind in ("pct", "pts")
        kinds.append(kind)
        numeric.append(is_num and kind != "text")
        floats = [float(v) for v in series if isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)]
        decimals.append(_decimals_for(floats))
    rows = []
    for values in frame.itertuples(index=False, name=None):
        rows.append([{"text": _format_cell(v, kinds[i], decimals[i]), "numeric": numeric[i]}
                     for i, v in enumerate(values)])
    return {"columns": [{"name": c.replace("_", " "), "numeric": numeric[i]} for i, c in enumerate(columns)],
            "rows": rows, "caption": caption, "css": css}


# --- figures ----------------------------------------------------------------------------------------------------

def _new_figure(title: str, figsize: tuple[float, float] = (7.5, 4.2)) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # attach the Agg canvas explicitly: rendering never depends on the global backend
    ax = fig.add_subplot()
    ax.set_title(title, fontsize="medium", loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def outside_legend(fig: Figure, ax: Any, title: str | None = None) -> None:
    """The legend to the right of the plotting area, so that it never covers a bar or a line."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize="small", frameon=False, title=title,
                   title_fontsize="small")


def count_axis(axis: Any) -> None:
    """Tick labels with thousands separators (1,000 rather than 1000 or 1e3)."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}"))


def share_axis(axis: Any) -> None:
    axis.set_major_formatter(PercentFormatter(1.0, decimals=None))


def colours_for(values: Iterable[Any]) -> dict[Any, str]:
    """A colour per value: the fixed one of an action class or a horizon, else the palette in order."""
    out, free = {}, iter(PALETTE * 4)
    for value in values:
        if value in out:
            continue
        key = int(value) if isinstance(value, numbers.Integral) else value
        out[value] = CLASS_COLOURS.get(value) or HORIZON_COLOURS.get(key) or next(free)
    return out


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


def calibration_figure(tables: dict[Any, pd.DataFrame], title: str, colours: dict[Any, str] | None = None
                       ) -> Figure:
    """Reliability diagram: observed rate against mean predicted probability, one line per label (frames from
    models.metrics.calibration_table), with the diagonal of perfect calibration."""
    fig, ax = _new_figure(title, figsize=(6.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    colours = colours or colours_for(tables)
    for label, table in tables.items():
        ax.plot(table["mean_predicted"], table["observed_rate"], marker="o", markersize=3, label=str(label),
                color=colours.get(label))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate")
    outside_legend(fig, ax)
    return fig


def lift_figure(tables: dict[str, pd.DataFrame], title: str) -> Figure:
    """Cumulative gains: share of positives captured against share of population contacted (highest scores
    first), one curve per label (frames from models.metrics.lift_table), with the random baseline."""
    fig, ax = _new_figure(title, figsize=(6.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="random")
    colours = colours_for(tables)
    for label, table in tables.items():
        x = np.r_[0.0, table["cum_share_population"].to_numpy(float)]
        y = np.r_[0.0, table["cum_share_positives"].to_numpy(float)]
        ax.plot(x, y, marker="o", markersize=3, label=str(label), color=colours[label])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("share of population (highest scores first)")
    ax.set_ylabel("share of positives captured")
    outside_legend(fig, ax)
    return fig


def bar_figure(frame: pd.DataFrame, x: str, y: str, hue: str | None, title: str, *, ylabel: str | None = None,
               share: bool = False, log: bool = False, errors: tuple[str, str] | None = None,
               reference: float | None = None, colours: dict[Any, str] | None = None) -> Figure:
    """Bar chart of y per x; with hue, grouped bars (one colour per hue value: an action class or a horizon always
    gets its own colour). Categories keep their order of first appearance. Each (x, hue) pair must appear at most
    once (ValueError otherwise).

    `share`: y is a share in [0, 1] (percent axis); otherwise a count axis with thousands separators. `log`: a
    symmetric log axis. `errors`: (low, high) columns drawn as interval whiskers. `reference`: a dashed horizontal
    line (e.g. the overall rate)."""
    fig, ax = _new_figure(title)
    if hue is None:
        if frame[x].duplicated().any():
            raise ValueError(f"bar_figure: duplicate values of {x!r}")
        keys = [None]
    else:
        if frame.duplicated([x, hue]).any():
            raise ValueError(f"bar_figure: duplicate ({x!r}, {hue!r}) pairs")
        keys = list(pd.unique(frame[hue]))
    categories = list(pd.unique(frame[x]))
    positions = np.arange(len(categories))
    width = 0.8 / max(1, len(keys))
    colours = colours or colours_for(keys if hue is not None else [])
    for i, key in enumerate(keys):
        part = frame if key is None else frame[frame[hue] == key]
        part = part.set_index(x).reindex(categories)
        offset = (i - (len(keys) - 1) / 2) * width
        values = pd.to_numeric(part[y], errors="coerce").to_numpy(float)
        colour = colours.get(key, PALETTE[0]) if key is not None else PALETTE[0]
        ax.bar(positions + offset, np.nan_to_num(values), width=width, color=colour,
               label=str(key) if key is not None else None)
        if errors is not None:
            low = pd.to_numeric(part[errors[0]], errors="coerce").to_numpy(float)
            high = pd.to_numeric(part[errors[1]], errors="coerce").to_numpy(float)
            ok = np.isfinite(low) & np.isfinite(high) & np.isfinite(values)
            ax.errorbar((positions + offset)[ok], values[ok],
                        yerr=np.vstack([values[ok] - low[ok], high[ok] - values[ok]]).clip(min=0),
                        fmt="none", ecolor="#333333", elinewidth=1, capsize=3)
    if reference is not None and not is_missing(reference):
        ax.axhline(reference, color="#555555", linestyle="--", linewidth=1, label="overall")
    crowded = len(positions) > 6 or max((len(str(c)) for c in categories), default=0) > 12
    ax.set_xticks(positions, [str(v) for v in categories], rotation=30 if crowded else 0,
                  ha="right" if crowded else "center", fontsize="small")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(ylabel or y.replace("_", " "))
    if log:
        ax.set_yscale("symlog")
    if share:
        share_axis(ax.yaxis)
    else:
        count_axis(ax.yaxis)
    if hue is not None or reference is not None:
        outside_legend(fig, ax, title=hue.replace("_", " ") if hue else None)
    return fig


# --- the page ---------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["number"] = format_number
    env.filters["pct"] = format_pct
    return env


def _paragraphs(text: Any) -> list[str]:
    return [p.strip() for p in str(text or "").split("\n\n") if p.strip()]


def _figure_uri(figure: Any) -> str:
    uri = figure if isinstance(figure, str) else figure_to_data_uri(figure)
    if not uri.startswith("data:image/png;base64,"):
        raise ValueError("figures must be Figure objects or PNG data URIs")
    return uri


def _link(link: dict[str, Any]) -> dict[str, str]:
    """A link to a file beside the report (e.g. its data docs): relative only, so the report stays self-contained
    (no URL leaves the machine) and the pair can be copied or served together."""
    from urllib.parse import urlsplit

    href = str(link["href"])
    parts = urlsplit(href)
    if parts.scheme or parts.netloc or href.startswith("/"):
        raise ValueError(f"a report links only to files beside it (a relative path): {href!r}")
    return {"text": str(link["text"]), "href": href}


def section_view(section: dict[str, Any], index: int) -> dict[str, Any]:
    """A section dict as the templates take it: paragraphs, tables as table_view()s, figures as data URIs, the
    template to use (`sections/<template or key>.html.j2` when it exists, else the generic one)."""
    view = dict(section)
    view["heading"] = str(section.get("heading", ""))
    view["level"] = int(section.get("level", 2))
    key = str(section.get("key") or "section").replace("_", "-")
    view["anchor"] = key if view["level"] == 2 and section.get("key") else f"{key}-{index}"
    view["paragraphs"] = _paragraphs(section.get("text"))
    tables = []
    if section.get("table") is not None:
        tables.append((None, section["table"]))
    tables += [(t.get("caption"), t) if isinstance(t, dict) else (None, t) for t in section.get("tables") or []]
    view["tables"] = []
    for caption, table in tables:
        if isinstance(table, dict) and "rows" in table:
            view["tables"].append(table if caption is None else {**table, "caption": caption})
        elif isinstance(table, dict):
            view["tables"].append(table_view(table["frame"], table.get("formats"), caption, table.get("css")))
        else:
            view["tables"].append(table_view(table, section.get("formats"), caption))
    for t in view["tables"]:
        t.setdefault("css", None)
        t.setdefault("caption", None)
    view["figures"] = [_figure_uri(f) for f in section.get("figures") or []]
    view["links"] = [_link(link) for link in section.get("links") or []]
    name = section.get("template") or section.get("key")
    view["template"] = (f"sections/{name}.html.j2" if name and (TEMPLATES / "sections" / f"{name}.html.j2").exists()
                        else "sections/_generic.html.j2")
    return view


def render_html(title: str, sections: list[dict[str, Any]], *, banner: dict[str, Any] | None = None,
                subtitle: str | None = None, contents: bool = False) -> str:
    """The report as one HTML string (templates/report.html.j2). Every text is autoescaped."""
    views = [section_view(s, i) for i, s in enumerate(sections)]
    return environment().get_template("report.html.j2").render(
        title=title, subtitle=subtitle, banner=banner, sections=views, contents=contents)


def render_report(title: str, sections: list[dict[str, Any]], path: Path, *, banner: dict[str, Any] | None = None,
                  subtitle: str | None = None, contents: bool = False) -> Path:
    """Write one self-contained UTF-8 HTML file and return its path.

    Each section is {"heading": str, "text": str (optional; paragraphs split on blank lines), "table": DataFrame
    (optional), "tables": [DataFrame or {"frame", "caption", "formats"}] (optional), "figures": list[Figure]
    (optional; PNG data URIs are accepted too), "links": [{"text", "href"}] (optional; relative paths to files
    beside the report), "key"/"template" (optional: sections/<name>.html.j2 renders it),
    "level": 2 or 3, "formats": {column: "pct"}}. `banner`: {"level": "fail"|"warn"|"ok", "title", "lines"} shown
    above everything. Texts and cells are HTML-escaped. Figures are closed once embedded. The file is written to
    a temporary name and moved into place with os.replace, so a reader never sees half a report."""
    path = Path(path)
    if path.suffix == ".tmp":
        raise ValueError(f"the report path must not end in .tmp (used for the atomic write): {path}")
    document = render_html(title, sections, banner=banner, subtitle=subtitle, contents=contents)
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
