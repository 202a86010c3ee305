"""Altair charts with confidence intervals, read from tidy summary tables (mean, lo, hi).

:func:`setup` selects altair's HTML renderer (the book serves vega itself, see ``geed.report.book``).
"""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

__all__ = ["setup", "points_with_intervals", "lines_with_bands", "image_grid", "reference_rule", "bars", "against_diagonal",
           "CONTENT_WIDTH", "panels"]

# Width of the book's content column at a 1280-pixel window, less the output cell's margins: every
# chart is laid out to fit it (a real-browser test checks that nothing overflows).
CONTENT_WIDTH = 660
AXIS = 60  # room for a y axis with its title, per panel when scales are independent
SPACING = 20  # vega's default spacing between facet panels


def setup() -> None:
    alt.renderers.enable("html")
    alt.data_transformers.disable_max_rows()


def panels(n: int, width: int, columns: int | None = None, total: int = CONTENT_WIDTH, min_width: int = 140) -> tuple[int, int]:
    """(columns, panel width) for ``n`` facet panels so that a row fits in ``total`` pixels: at most
    ``columns`` per row, each at most ``width`` wide and at least ``min_width`` (fewer columns otherwise)."""
    cols = max(1, min(n, columns or n))
    while cols > 1 and (total - cols * (AXIS + SPACING)) / cols < min_width:
        cols -= 1
    return cols, int(max(min_width, min(width, (total - cols * (AXIS + SPACING)) / cols)))


def _legend(title: str) -> alt.Legend:
    return alt.Legend(title=title, orient="bottom", columns=3)


def _tooltip(df: pd.DataFrame, cols: list[str]) -> list:
    return [alt.Tooltip(c, format=".4g") if pd.api.types.is_float_dtype(df[c]) else c for c in cols if c in df]


def points_with_intervals(
    summary: pd.DataFrame, x: str, color: str | None = None, y_title: str = "value", column: str | None = None,
    x_sort: list | None = None, width: int = 320, height: int = 220, title: str | None = None, xoffset: bool = True,
) -> alt.Chart:
    """Means as points, 95% intervals as error bars; ``summary`` has columns mean, lo, hi. With
    ``column``, one panel per value, wrapped into rows so that the chart fits the page."""
    base = alt.Chart(summary)
    enc = {"x": alt.X(f"{x}:N", sort=x_sort, title=x)}
    if color:
        enc["color"] = alt.Color(f"{color}:N", legend=_legend(color))
        if xoffset:
            enc["xOffset"] = alt.XOffset(f"{color}:N")
    tips = _tooltip(summary, [x, color, "mean", "lo", "hi", "n"] if color else [x, "mean", "lo", "hi", "n"])
    pts = base.mark_point(filled=True, size=60).encode(y=alt.Y("mean:Q", title=y_title, scale=alt.Scale(zero=False)), tooltip=tips, **enc)
    bars = base.mark_rule(strokeWidth=2).encode(y="lo:Q", y2="hi:Q", **enc)
    if column:
        cols, width = panels(summary[column].nunique(), width)
    else:
        width = min(width, CONTENT_WIDTH - AXIS)
    chart = (bars + pts).properties(width=width, height=height)
    if column:
        chart = chart.facet(facet=alt.Facet(f"{column}:N", title=None), columns=cols)
    if title:
        chart = chart.properties(title=title)
    return chart


def lines_with_bands(
    summary: pd.DataFrame, x: str, color: str, y_title: str = "value", facet: str | None = None,
    columns: int = 3, width: int = 220, height: int = 160, title: str | None = None, x_title: str | None = None,
    independent_y: bool = True,
) -> alt.Chart:
    """Mean curves over ``x`` with shaded 95% bands, one colour per ``color``."""
    base = alt.Chart(summary)
    enc = {"x": alt.X(f"{x}:Q", title=x_title or x), "color": alt.Color(f"{color}:N", legend=_legend(color))}
    band = base.mark_area(opacity=0.25).encode(y=alt.Y("lo:Q", title=y_title, scale=alt.Scale(zero=False)), y2="hi:Q", **enc)
    line = base.mark_line(point=True).encode(y=alt.Y("mean:Q", title=y_title, scale=alt.Scale(zero=False)),
                                              tooltip=_tooltip(summary, [x, color, "mean", "lo", "hi", "n"]), **enc)
    if facet:
        columns, width = panels(summary[facet].nunique(), width, columns)
    else:
        width = min(width, CONTENT_WIDTH - AXIS)
    chart = (band + line).properties(width=width, height=height)
    if facet:
        chart = chart.facet(facet=alt.Facet(f"{facet}:N", title=None), columns=columns)
        if independent_y:
            chart = chart.resolve_scale(y="independent")
    if title:
        chart = chart.properties(title=title)
    return chart


def reference_rule(value: float, label: str) -> alt.Chart:
    df = pd.DataFrame({"y": [value], "label": [label]})
    return alt.Chart(df).mark_rule(strokeDash=[4, 4], color="gray").encode(y="y:Q", tooltip=["label", alt.Tooltip("y:Q", format=".4g")])


def image_grid(images: np.ndarray, labels: list[str], size: int = 90, columns: int | None = None, title: str | None = None) -> alt.Chart:
    """Small grey-scale images (``(k, H, W)``) as heat maps side by side; labels longer than a panel
    are cut with an ellipsis (the full label is in the panel's tooltip)."""
    rows = []
    for k, (img, lab) in enumerate(zip(images, labels)):
        h, w = img.shape
        ys, xs = np.mgrid[0:h, 0:w]
        rows.append(pd.DataFrame({"panel": lab, "order": k, "x": xs.ravel(), "y": ys.ravel(), "v": img.ravel()}))
    df = pd.concat(rows)
    columns = columns or len(labels)
    size = int(min(size, (CONTENT_WIDTH - columns * SPACING) / columns))
    chart = alt.Chart(df).mark_rect().encode(
        x=alt.X("x:O", axis=None), y=alt.Y("y:O", axis=None),
        color=alt.Color("v:Q", scale=alt.Scale(scheme="greys"), legend=None),
    ).properties(width=size, height=size)
    chart = chart.encode(tooltip=["panel:N"]).facet(
        facet=alt.Facet("panel:N", sort=alt.SortField("order"), title=None, header=alt.Header(labelLimit=size + SPACING // 2)),
        columns=columns)
    return chart.properties(title=title) if title else chart


def bars(df: pd.DataFrame, x: str, y: str, title: str, width: int = 300, height: int = 180) -> alt.Chart:
    """One bar per row of ``df`` (categories in table order)."""
    return alt.Chart(df).mark_bar().encode(
        x=alt.X(f"{x}:N", sort=None), y=f"{y}:Q", tooltip=[x, alt.Tooltip(f"{y}:Q", format=".3g")]
    ).properties(width=min(width, CONTENT_WIDTH - AXIS), height=height, title=title)


def against_diagonal(df: pd.DataFrame, x: str, y: str, color: str, facet: str, x_title: str, y_title: str,
                     tooltip: list[str] | None = None, height: int = 220) -> alt.Chart:
    """One scatter panel per value of ``facet`` (side by side, fitted to the content column), each
    with the diagonal y = x dashed: points off it are where the two measurements disagree."""
    names = sorted(df[facet].unique())
    _, width = panels(len(names), CONTENT_WIDTH)
    scatter = alt.Chart().mark_circle(size=40, opacity=0.7).encode(
        x=alt.X(f"{x}:Q", title=x_title), y=alt.Y(f"{y}:Q", title=y_title), color=alt.Color(f"{color}:N", legend=_legend(color)),
        tooltip=[*(tooltip or [color]), alt.Tooltip(f"{x}:Q", format=".3g"), alt.Tooltip(f"{y}:Q", format=".3g")])
    out = []
    for name in names:
        sub = df[df[facet] == name]
        top = float(sub[[x, y]].max().max())
        diag = alt.Chart(pd.DataFrame({"a": [0.0, top], "b": [0.0, top]})).mark_line(color="gray", strokeDash=[4, 4]).encode(x="a:Q", y="b:Q")
        out.append(alt.layer(scatter.properties(data=sub), diag).properties(width=width, height=height, title=str(name)))
    return alt.hconcat(*out)
