"""Figures: one colour per arm across figures, PNG and SVG written with sane sizes."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg

from analysis import scaling
from reports import figures


def _png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_palette_is_stable_and_distinct():
    labels = [f"arm{i}" for i in range(14)]
    colours = figures.palette(labels + ["arm0"])
    assert list(colours) == labels and len(set(colours.values())) == 14
    assert figures.palette(labels)["arm3"] == colours["arm3"]


def test_scaling_and_bar_figures(tmp_path: Path):
    d = np.array([100, 300, 1000, 3000, 10000, 30000] * 2, float)
    acc = 1 - (0.05 + 2 * d ** -0.5)
    fit = scaling.fit("bounded", d, acc, starts=10, n_boot=8, boot_starts=2)
    colours = figures.palette(["base", "arm"])
    points = pl.DataFrame({"arm": ["base"] * 6, "data.unique_samples": d[:6].astype(int), "mean": acc[:6],
                           "lo": acc[:6] - 0.01, "hi": acc[:6] + 0.01})
    png = figures.scaling_curves(points, {"base": fit}, colours, "zs_acc", tmp_path / "scaling", "t", chance=0.2)
    bars = figures.ablation_bars(pl.DataFrame({"arm": ["base", "arm"], "n": [3, 3], "mean": [0.5, 0.6],
                                               "lo": [0.45, 0.55], "hi": [0.55, 0.65]}),
                                 colours, "zs_acc", tmp_path / "bars", "t", baseline="base", chance=0.2)
    for path in (png, bars):
        assert path.suffix == ".png" and path.with_suffix(".svg").stat().st_size > 1000
        w, h = _png_size(path)
        assert 400 <= w <= 2000 and 200 <= h <= 2000


def test_long_titles_wrap_inside_the_figure(tmp_path: Path):
    title = "data scaling and utilization, regime (b) frozen contrastive encoder: zs_norm vs unique data D, fitted"
    arms = {f"text_only · gauss_.{i}_.25 = semantic_input · gauss_.{i}_.25": np.linspace(0, 1, 50) for i in (5, 7)}
    png = figures.masking_histograms(arms, figures.palette(list(arms)), tmp_path / "masking", title)
    assert png.exists()
    fig, axs = figures._axes()
    axs[0, 0].plot([0, 1], [0, 1])
    axs[0, 0].set_title(title)
    figures._save(fig, tmp_path / "single")
    renderer = FigureCanvasAgg(fig).get_renderer()  # _save closed the figure's own canvas
    texts = [ax.title for ax in fig.axes]
    assert all("\n" in t.get_text() for t in texts)
    width = fig.get_figwidth() * fig.dpi
    for box in (t.get_window_extent(renderer) for t in texts):
        assert box.x0 >= 0 and box.x1 <= width
