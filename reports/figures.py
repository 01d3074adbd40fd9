"""Figures of the report (matplotlib Agg + seaborn), each written as PNG and SVG.

Every function takes tidy Polars frames from `analysis`, a palette (arm label -> colour, the same in
every figure) and an output path stem; it returns the PNG path.
"""

from __future__ import annotations

import colorsys
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis import scaling  # noqa: E402

Colour = tuple[float, float, float]
DPI = 110
ACC_LABEL = "zero-shot accuracy (fraction correct)"
METRIC_LABELS = {"zs_acc": ACC_LABEL, "caption_loss": "held-out caption loss (nats/token)",
                 "pix/psnr": "PSNR (dB)", "psnr": "PSNR (dB)", "loss/caption": "training caption loss (nats/token)"}


def metric_label(metric: str) -> str:
    """A metric's axis label (its column name when it has none)."""
    return METRIC_LABELS.get(metric, metric)


def palette(labels: Iterable[str]) -> dict[str, Colour]:
    """One colour per arm label, in order of first appearance: tab10, then hues spread by the golden ratio."""
    labels = list(dict.fromkeys(labels))
    base = sns.color_palette("tab10", 10)
    # beyond ten: hues a golden-ratio turn apart, so neighbouring labels differ; dark enough on white
    extra = [colorsys.hls_to_rgb((0.13 + i * 0.618034) % 1, 0.42, 0.75) for i in range(max(0, len(labels) - 10))]
    return dict(zip(labels, list(base) + extra, strict=False))


def _axes(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.0, **kw) -> tuple:
    with sns.axes_style("whitegrid"):
        return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)


def _wrapped(text: str, width_in: float, fontsize: float) -> str:
    """`text` broken into lines that fit `width_in` inches at `fontsize` points (a character ~0.6 em wide)."""
    return textwrap.fill(text, max(12, int(width_in * 72 / (0.6 * fontsize))))


def _wrap_titles(fig: plt.Figure) -> None:
    """Wrap every axes title to its axes' width and the figure title to the figure's, so none is cut off."""
    for ax in fig.axes:
        width = ax.get_position().width * fig.get_figwidth()
        for loc in ("center", "left"):
            if text := ax.get_title(loc):
                size = (ax.title if loc == "center" else ax._left_title).get_fontsize()
                ax.set_title(_wrapped(text, width, size), loc=loc, fontsize=size)
    if text := fig.get_suptitle():
        fig.suptitle(_wrapped(text, fig.get_figwidth(), fig._suptitle.get_fontsize()))


def _save(fig: plt.Figure, stem: Path) -> Path:
    stem.parent.mkdir(parents=True, exist_ok=True)
    _wrap_titles(fig)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=DPI)
    with matplotlib.rc_context({"svg.hashsalt": stem.name}):  # element ids from the name, not at random
        fig.savefig(stem.with_suffix(".svg"), metadata={"Date": None})  # same figure, same bytes
    plt.close(fig)
    return stem.with_suffix(".png")


def _chance(ax: plt.Axes, chance: float | None) -> None:
    if chance is not None and np.isfinite(chance):
        ax.axhline(chance, color="0.4", ls=":", lw=1.2, label=f"chance ({chance:.2f})")


def _log_x(ax: plt.Axes) -> None:
    """Log x axis with plain-number labels at 1, 2 and 5 times each power of ten."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}" if x >= 1 else f"{x:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _legend(ax: plt.Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=True, loc="best")


def scaling_curves(points: pl.DataFrame, fits: Mapping[str, scaling.ScalingFit], colours: Mapping[str, Colour],
                   metric: str, stem: Path, title: str, chance: float | None = None) -> Path:
    """Metric vs unique data D (log x) per arm: seed means with 95% intervals, the fitted law and its
    bootstrap band. `points`: arm, data.unique_samples, mean, lo, hi."""
    fig, axs = _axes()
    ax = axs[0, 0]
    for arm, g in points.group_by("arm", maintain_order=True):
        arm, c = arm[0], colours[arm[0]]
        d = g["data.unique_samples"].cast(pl.Float64).to_numpy()
        mean = g["mean"].to_numpy()
        fit = fits.get(arm)
        ax.errorbar(d, mean, yerr=[mean - g["lo"].to_numpy(), g["hi"].to_numpy() - mean], fmt="o", color=c,
                    capsize=3, ms=5, label=None if fit else arm)
        if fit:
            x = np.geomspace(d.min(), d.max(), 100)
            pred = scaling.predict(fit, x)
            ax.plot(x, pred.point, color=c, lw=1.6, label=f"{arm} (fit: alpha={fit.params['alpha']:.2f})")
            if np.all(np.isfinite(pred.lo)):
                ax.fill_between(x, pred.lo, pred.hi, color=c, alpha=0.15, lw=0)
    _chance(ax, chance)
    _log_x(ax)
    ax.set(xlabel="unique training samples D (images, log scale)", ylabel=metric_label(metric), title=title)
    _legend(ax)
    return _save(fig, stem)


def _mean_bands(ax: plt.Axes, frame: pl.DataFrame, x: str, colours: Mapping[str, Colour], marker_size: float) -> None:
    """One line per arm (mean) with its 95% interval band; `frame`: arm, x, mean, lo, hi."""
    for arm, g in frame.group_by("arm", maintain_order=True):
        c = colours[arm[0]]
        xs = g[x].to_numpy()
        ax.plot(xs, g["mean"].to_numpy(), marker="o", ms=marker_size, color=c, label=arm[0])
        ax.fill_between(xs, g["lo"].to_numpy(), g["hi"].to_numpy(), color=c, alpha=0.15, lw=0)


X_LABELS = {"samples_seen": "training samples seen (images)", "train_flops": "training FLOPs"}


def learning_curves(curves: pl.DataFrame, colours: Mapping[str, Colour], metric: str, stem: Path, title: str,
                    chance: float | None = None, x: str = "samples_seen") -> Path:
    """Metric vs samples seen (or another column `x` of X_LABELS) per arm: mean over seeds with a 95% interval
    band. `curves`: arm, x, mean, lo, hi (aggregate.curve_stats)."""
    fig, axs = _axes()
    ax = axs[0, 0]
    _mean_bands(ax, curves, x, colours, marker_size=3)
    _chance(ax, chance)
    ax.set(xlabel=X_LABELS[x], ylabel=metric_label(metric), title=title)
    _legend(ax)
    return _save(fig, stem)


def ablation_bars(stats: pl.DataFrame, colours: Mapping[str, Colour], metric: str, stem: Path, title: str,
                  baseline: str | None = None, chance: float | None = None) -> Path:
    """Mean per arm with 95% interval error bars and the seed count; the baseline's mean as a dashed line.
    `stats`: arm, n, mean, lo, hi."""
    height = max(2.5, 0.45 * len(stats) + 1.2)
    fig, axs = _axes(width=7.5, height=height)
    ax = axs[0, 0]
    arms = stats["arm"].to_list()
    y = np.arange(len(arms))
    mean, lo, hi = (stats[c].to_numpy() for c in ("mean", "lo", "hi"))
    ax.barh(y, mean, xerr=[mean - lo, hi - mean], color=[colours[a] for a in arms], capsize=3, alpha=0.85)
    ax.set_yticks(y, [f"{a}  (n={n})" for a, n in zip(arms, stats["n"].to_list(), strict=True)], fontsize=8)
    ax.invert_yaxis()
    if baseline in arms:
        ax.axvline(mean[arms.index(baseline)], color="0.2", ls="--", lw=1, label=f"baseline: {baseline}")
    if chance is not None and np.isfinite(chance):
        ax.axvline(chance, color="0.4", ls=":", lw=1.2, label=f"chance ({chance:.2f})")
    ax.set(xlabel=f"{metric_label(metric)}, mean over seeds, 95% CI", title=title)
    _legend(ax)
    return _save(fig, stem)


def masking_histograms(draws: Mapping[str, np.ndarray], colours: Mapping[str, Colour], stem: Path,
                       title: str) -> Path:
    """Histogram of the masking probabilities each arm's distribution draws (one panel per arm)."""
    n = len(draws)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axs = _axes(cols, rows, width=3.2, height=2.4, sharex=True)
    bins = np.linspace(0, 1, 41)
    for ax, (arm, p) in zip(axs.flat, draws.items(), strict=False):
        ax.hist(p, bins=bins, density=True, color=colours[arm], alpha=0.85)
        ax.set_title(arm, fontsize=9)
        ax.set_xlabel("masking probability (fraction of visual tokens)", fontsize=8)
        ax.set_ylabel("density", fontsize=8)
    for ax in list(axs.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return _save(fig, stem)


def rollout_errors(stats: pl.DataFrame, colours: Mapping[str, Colour], stem: Path, title: str) -> Path:
    """Free-running rollout error by rollout step per arm, mean over seeds with 95% intervals.
    `stats`: arm, k, mean, lo, hi."""
    fig, axs = _axes()
    ax = axs[0, 0]
    _mean_bands(ax, stats, "k", colours, marker_size=4)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set(xlabel="rollout step k (visual tokens generated free-running)",
           ylabel="rollout error (1 - cosine similarity)", title=title)
    _legend(ax)
    return _save(fig, stem)


def inference_scaling(stats: pl.DataFrame, colours: Mapping[str, Colour], stem: Path, title: str) -> Path:
    """Metric vs inference FLOPs per image (log x), one panel per inference sweep. `stats`: arm, sweep,
    setting, inference_flops, metric, mean, lo, hi."""
    sweeps = stats["sweep"].unique(maintain_order=True).to_list()
    fig, axs = _axes(max(1, len(sweeps)), width=5.6)
    names = {"views": "masked views K", "diffusion_steps": "diffusion steps"}
    for ax, sweep in zip(axs.flat, sweeps, strict=False):
        part = stats.filter(pl.col("sweep") == sweep)
        for arm, g in part.group_by("arm", maintain_order=True):
            c = colours[arm[0]]
            x, mean = g["inference_flops"].to_numpy(), g["mean"].to_numpy()
            ax.errorbar(x, mean, yerr=[mean - g["lo"].to_numpy(), g["hi"].to_numpy() - mean], marker="o", ms=4,
                        capsize=2, color=c, label=arm[0])
            for xi, yi, s in zip(x, mean, g["setting"].to_list(), strict=True):
                ax.annotate(str(s), (xi, yi), textcoords="offset points", xytext=(3, 4), fontsize=7, color=c)
        ax.set_xscale("log")
        ax.set(xlabel="inference FLOPs per image (log scale)", ylabel=metric_label(part["metric"][0]),
               title=f"{title}: {names.get(sweep, sweep)}")
        _legend(ax)
    return _save(fig, stem)


def _strip(images: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> one (H, N * (W + 1) - 1, 3) strip with white gaps."""
    n, _, h, w = images.shape
    strip = np.ones((h, n * (w + 1) - 1, 3))
    for i, img in enumerate(np.clip(images, 0, 1)):
        strip[:, i * (w + 1): i * (w + 1) + w] = img.transpose(1, 2, 0)
    return strip


def decoded_images(samples: Mapping[str, tuple[np.ndarray, np.ndarray]], stem: Path, title: str,
                   n: int = 8) -> Path:
    """Per arm, a row of held-out originals and the pixel decoder's reconstructions of them."""
    n = min(n, min(len(original) for original, _ in samples.values()))
    fig, axs = _axes(1, 2 * len(samples), width=max(4.0, 1.1 * n), height=1.3)
    for i, (arm, (original, decoded)) in enumerate(samples.items()):
        for ax, images, kind in ((axs[2 * i, 0], original, "original"), (axs[2 * i + 1, 0], decoded, "decoded")):
            ax.imshow(_strip(images[:n]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            ax.set_ylabel(kind, fontsize=8)
        axs[2 * i, 0].set_title(arm, fontsize=9, loc="left")
    fig.suptitle(title)
    return _save(fig, stem)
