"""The charts draw what their tables say: means as points or lines, intervals from lo to hi, images the
right way up and in their order, panels that fit the page (read from each chart's Vega-Lite spec)."""
import numpy as np
import pandas as pd
import pytest

from geed.report import charts


def _summary():
    return pd.DataFrame({"model": ["A", "A", "B", "B"], "block": [1, 2, 1, 2], "mean": [0.2, 0.3, 0.5, 0.6],
                         "lo": [0.1, 0.25, 0.4, 0.55], "hi": [0.3, 0.35, 0.6, 0.65], "n": [4, 4, 4, 4]})


def _layers(spec: dict) -> list[dict]:
    """Every unit layer of a (possibly faceted or concatenated) chart spec."""
    for key in ("spec", "layer", "hconcat", "vconcat", "concat"):
        if key in spec:
            inner = spec[key]
            return [u for s in (inner if isinstance(inner, list) else [inner]) for u in _layers(s)]
    return [spec]


def _mark(layer: dict) -> str:
    m = layer["mark"]
    return m if isinstance(m, str) else m["type"]


def _field(layer: dict, channel: str) -> str | None:
    enc = layer.get("encoding", {}).get(channel)
    return None if enc is None else enc.get("field")


@pytest.mark.parametrize("column", [None, "model"])
def test_points_with_intervals_draw_the_mean_and_a_bar_from_lo_to_hi(column):
    spec = charts.points_with_intervals(_summary(), x="block", color=None if column else "model", column=column).to_dict()
    layers = {_mark(u): u for u in _layers(spec)}
    assert _field(layers["point"], "y") == "mean"
    assert (_field(layers["rule"], "y"), _field(layers["rule"], "y2")) == ("lo", "hi")
    if column:
        assert spec["facet"]["field"] == "model"


def test_lines_with_bands_draw_the_mean_and_a_band_from_lo_to_hi():
    spec = charts.lines_with_bands(_summary(), x="block", color="model").to_dict()
    layers = {_mark(u): u for u in _layers(spec)}
    assert _field(layers["line"], "y") == "mean"
    assert (_field(layers["area"], "y"), _field(layers["area"], "y2")) == ("lo", "hi")


def test_image_grid_keeps_each_image_upright_and_the_panels_in_order():
    images = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)  # every pixel different; 3 rows, 4 columns
    chart = charts.image_grid(images, ["second label", "first label"])  # labels out of alphabetical order
    spec = chart.to_dict()
    data = chart.data
    for k, label in enumerate(["second label", "first label"]):
        panel = data[data.panel == label]
        assert len(panel) == 12
        for row in panel.itertuples():
            assert row.v == images[k, row.y, row.x]  # x is the column, y the row (drawn from the top)
    assert spec["facet"]["sort"] == {"field": "order"}
    layer = _layers(spec)[0]
    assert (_field(layer, "x"), _field(layer, "y")) == ("x", "y")
    assert layer["encoding"]["y"]["type"] == "ordinal"  # ordinal y runs downwards: row 0 at the top


def test_against_diagonal_draws_y_equals_x_up_to_the_largest_value():
    df = pd.DataFrame({"a": [0.1, 0.4, 0.2], "b": [0.3, 0.2, 0.9], "model": ["m", "n", "m"], "panel": ["p", "p", "q"]})
    chart = charts.against_diagonal(df, "a", "b", "model", "panel", "a", "b")
    for sub, concat in zip(("p", "q"), chart.hconcat):
        diagonal = concat.layer[1].data
        top = float(df[df.panel == sub][["a", "b"]].max().max())
        assert list(diagonal["a"]) == [0.0, top] and list(diagonal["b"]) == [0.0, top]


def test_bars_keep_the_tables_order():
    spec = charts.bars(pd.DataFrame({"k": ["z", "a"], "v": [1.0, 2.0]}), "k", "v", "t").to_dict()
    assert spec["encoding"]["x"]["sort"] is None


@pytest.mark.parametrize("n,width,columns", [(1, 320, None), (3, 320, None), (5, 220, 3), (8, 300, None), (2, 1000, None)])
def test_panels_fit_the_content_column(n, width, columns):
    cols, w = charts.panels(n, width, columns)
    assert 1 <= cols <= min(n, columns or n)
    assert w <= width or w == 140  # never wider than asked, unless at the smallest width
    assert cols == 1 or cols * (w + charts.AXIS + charts.SPACING) <= charts.CONTENT_WIDTH
