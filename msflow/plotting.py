"""Figures. The only module that imports matplotlib (imported lazily, so the library loads without it)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` in [-1, 1] to ``(B, H, W, C)`` uint8 (channels kept; 1 stays 1)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def grid(images: np.ndarray, nrow: int, pad: int = 2, value: int = 255) -> np.ndarray:
    """Tile ``(B, H, W, C)`` uint8 images into one ``(rows * H', nrow * W', C)`` array."""
    b, h, w, c = images.shape
    rows = -(-b // nrow)
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), value, dtype=np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, nrow)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = img
    return out


def save_png(array: np.ndarray, path: str, scale: int = 1) -> None:
    """Save a ``(H, W, C)`` uint8 array as PNG, optionally enlarged by nearest-neighbour ``scale``."""
    from PIL import Image

    a = array[..., 0] if array.shape[-1] == 1 else array
    img = Image.fromarray(a)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)


STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 9, "ytick.labelsize": 9,
    "legend.fontsize": 9, "legend.frameon": False, "figure.titlesize": 10, "figure.dpi": 110, "savefig.dpi": 220,
    "savefig.bbox": "tight", "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "lines.linewidth": 1.6, "lines.markersize": 3.5, "image.cmap": "gray",
}
"""Matplotlib settings used by every figure in the book. Fonts of 9 pt at least, no box around legends, light grids, and
figures at twice the screen's resolution (``savefig.dpi``; notebooks render their figures as "retina" PNGs)."""

FIGURE_WIDTH = 8.0
"""The width in inches of the widest figure whose text a book page shows at its own size, about 880 px at 110 dpi
for the text column and its margin. A page scales wider figures down, and their 9-point labels with them."""
LABEL_WIDTH = 1.4
"""The width in inches that the image grids leave for their row labels, a short class name at 9 points."""

PAPER_COLOUR = "#000000"
RECIPE_COLOURS = {"cpu": "#0072B2", "gpu": "#D55E00", "smoke": "#999999"}
"""Each recipe's fixed colour, the same in every figure, Okabe-Ito colours first. msflow's own recipes are here, and a
study adds its own with :func:`register_colours`. A run's seeds and their ensemble take their recipe's colour, and the
paper is black; other names (baselines among them) get a colour of their own in each figure from :func:`colours_for`."""

_EXTRA = ("#D62728", "#2CA02C", "#7F7F7F", "#FF7F0E", "#1F77B4", "#8C6D31", "#7B4173", "#31A354", "#E6550D", "#756BB1",
          "#6B6ECF", "#B5CF6B", "#E7BA52", "#D6616B", "#CE6DBD", "#636363")


def register_colours(colours: dict[str, str]) -> None:
    """Give the recipes and runs of a study their fixed colours (added to :data:`RECIPE_COLOURS`)."""
    RECIPE_COLOURS.update(colours)


def recipe_of(label: str) -> str:
    """The recipe a figure label names: ``"ours, gpu-seed2"`` -> ``"gpu"``; ``"cpu-ens"`` -> ``"cpu"``."""
    import re

    name = label.split(", ")[-1].split(" (")[0].strip()
    return re.sub(r"(-seed\d+|-ens)+$", "", name)


def run_colour(label: str) -> str | None:
    """The fixed colour of ``label``: black for the paper, its recipe's (:data:`RECIPE_COLOURS`) for a recipe, a run of
    it, its seeds and their ensemble; None for other labels (see :func:`colours_for`)."""
    if label.lower().startswith("paper"):
        return PAPER_COLOUR
    return RECIPE_COLOURS.get(recipe_of(label))


def colours_for(labels: Sequence[str]) -> dict[str, str]:
    """A colour per label of one figure: the fixed ones of :func:`run_colour`, and for the rest (baselines, scores)
    the colours of a colour-blind-safe palette that no label of the figure has taken yet, in order."""
    import itertools

    fixed = {label: run_colour(label) for label in labels}
    free = itertools.cycle([c for c in _EXTRA + tuple(RECIPE_COLOURS.values()) if c not in set(fixed.values())])
    return {label: fixed[label] or next(free) for label in fixed}


def legend_outside(ax, **kwargs):
    """The legend of ``ax`` to the right of its axes, where it covers no data."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def use_style() -> None:
    """Apply :data:`STYLE`, and in a notebook render figures at twice the resolution (called by every plot here)."""
    import matplotlib

    matplotlib.rcParams.update(STYLE)
    if _in_notebook():
        try:
            from matplotlib_inline.backend_inline import set_matplotlib_formats

            set_matplotlib_formats("retina")
        except ImportError:  # pragma: no cover - matplotlib-inline comes with ipykernel
            pass


def _plt():
    import matplotlib

    if not _in_notebook():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_style()
    return plt


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False


def show_image_rows(rows: dict[str, np.ndarray], titles: dict[str, Sequence[str]] | None = None,
                    groups: Sequence[tuple[str, int]] | None = None, size: float = 1.0, title: str = "", fig=None,
                    nrows: int | None = None, cmap: str = "gray", max_width: float = FIGURE_WIDTH):
    """One figure of labelled rows of ``(B, H, W, C)`` uint8 images: each key of ``rows`` labels its row on the left.

    Args:
        titles: a title per image of a row (optional).
        groups: the columns in named groups, ``[(name, count), ...]`` summing to the longest row: a gap separates the
            groups and each name heads its group (e.g. real test images beside generated ones).
        fig: a figure or subfigure to draw into (see :func:`show_image_blocks`); a new one otherwise.
        nrows: rows to lay out (at least ``len(rows)``), so that blocks drawn side by side share a row height.
        size: the side of an image, in inches, at most; a new figure shrinks it to stay within ``max_width`` inches,
            so that its text is not scaled down on a page.

    Returns:
        The figure (or subfigure) drawn into.
    """
    plt = _plt()
    labels = list(rows)
    ncol = max(len(v) for v in rows.values())
    groups = list(groups or [("", ncol)])
    if sum(n for _, n in groups) != ncol:
        raise ValueError(f"the groups {groups} count {sum(n for _, n in groups)} columns; the longest row has {ncol}")
    widths, image_cols, spans = [], [], []
    for g, (name, n) in enumerate(groups):
        if g:
            widths.append(0.3)
        spans.append((name, len(widths), len(widths) + n))
        image_cols += list(range(len(widths), len(widths) + n))
        widths += [1.0] * n
    named = any(name for name, _, _ in spans)
    nrows = max(nrows or 0, len(labels))
    if fig is None:
        size = min(size, (max_width - LABEL_WIDTH) / sum(widths))
    row_h = size * (1.3 if titles else 1.0)
    if fig is None:
        fig = plt.figure(figsize=(sum(widths) * size + LABEL_WIDTH, nrows * row_h + 0.3 * named + 0.5), layout="constrained")
    heights = [0.3 / row_h] * named + [1.0] * nrows
    grid_spec = fig.add_gridspec(len(heights), len(widths), width_ratios=widths, height_ratios=heights)
    for name, start, stop in spans if named else ():
        head = fig.add_subplot(grid_spec[0, start:stop])
        head.axis("off")
        head.text(0, 0, name, ha="left", va="bottom", fontsize=9, fontweight="bold", transform=head.transAxes)
    for r, label in enumerate(labels):
        for j, img in enumerate(rows[label]):
            ax = fig.add_subplot(grid_spec[r + named, image_cols[j]])
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap=cmap, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            if titles:
                ax.set_title(titles[label][j], fontsize=9)
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def show_image_blocks(blocks: dict[str, dict[str, np.ndarray]], ncols: int = 2, size: float = 0.9, title: str = "",
                      max_width: float = FIGURE_WIDTH):
    """Several :func:`show_image_rows` blocks in one figure (``blocks``: block title -> its rows), packed into
    ``ncols`` columns, each block going to the column with the fewest rows so far; rows share one height, and the
    images shrink from ``size`` inches so that the figure stays within ``max_width`` inches."""
    plt = _plt()
    columns: list[list[str]] = [[] for _ in range(min(ncols, len(blocks)))]
    for name in sorted(blocks, key=lambda b: -len(blocks[b])):
        min(columns, key=lambda c: sum(len(blocks[b]) + 1 for b in c)).append(name)
    columns = [sorted(c, key=list(blocks).index) for c in columns]  # the given order within a column
    tall = max(sum(len(blocks[b]) + 1 for b in c) for c in columns)
    wide = max(max(len(v) for v in rows.values()) for rows in blocks.values())
    size = min(size, (max_width / len(columns) - LABEL_WIDTH) / wide)
    fig = plt.figure(figsize=(len(columns) * (wide * size + LABEL_WIDTH), tall * size + 0.4), layout="constrained")
    for sub, names in zip(np.atleast_1d(fig.subfigures(1, len(columns))), columns):
        ratios = [len(blocks[b]) + 1 for b in names] + [tall - sum(len(blocks[b]) + 1 for b in names)]
        parts = np.atleast_1d(sub.subfigures(len(ratios), 1, height_ratios=[max(r, 1e-3) for r in ratios]))
        for part, name in zip(parts, names):
            show_image_rows(blocks[name], size=size, title=name, fig=part)
    if title:
        fig.suptitle(title)
    return fig


def plot_accuracy_rejection(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]], title: str = "", ax=None):
    """Accuracy against rejected fraction. ``curves``: label -> (fractions, accuracy, std or None).

    Each curve takes its label's colour (:func:`colours_for`: the paper black, each recipe its own); the paper's
    curves are dashed with square markers, the "ResNet" baselines dashed, and seeds read "together" thick with diamonds,
    so that sources stay apart. The legend sits outside the axes.
    """
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.6))
    colours = colours_for(list(curves))
    for label, (frac, acc, std) in curves.items():
        frac, acc = np.asarray(frac) * 100, np.asarray(acc) * 100
        if label.startswith("paper"):
            style = {"ls": "--", "marker": "s", "ms": 4}
        elif "together" in label:  # seeds read as one: the recipe's colour, thicker, diamonds
            style = {"ls": "-", "marker": "D", "ms": 3.5, "lw": 2.6}
        else:
            style = {"ls": "--" if label.startswith("ResNet") else "-", "marker": "o", "ms": 3, "lw": 1.3}
        line = ax.plot(frac, acc, label=label, color=colours[label], **style)[0]
        if std is not None:
            ax.fill_between(frac, acc - 100 * np.asarray(std), acc + 100 * np.asarray(std), color=line.get_color(), alpha=0.2)
    ax.set_xlabel("rejected (most uncertain first), %")
    ax.set_ylabel("accuracy on the rest, %")
    ax.set_title(title)
    legend_outside(ax)
    return ax


def plot_confusion(matrix: np.ndarray, labels: Sequence[str], title: str = "", ax=None):
    """Row-normalised confusion matrix with counts."""
    import seaborn as sns

    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(0.6 * len(labels) + 2.5, 0.6 * len(labels) + 2))
    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    sns.heatmap(norm, annot=np.asarray(matrix), fmt="d", cmap="Blues", vmin=0, vmax=1, cbar_kws={"label": "fraction of true class"},
                xticklabels=labels, yticklabels=labels, ax=ax)
    ax.grid(False)  # the style's grid would cross the cells
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return ax


def plot_history(history: Sequence[dict], x: str = "images", title: str = "", ax=None):
    """Validation accuracy and AUC against training images seen (or ``x="train_seconds"``)."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    xs = np.array([h[x] for h in history], dtype=float)
    ax.plot(xs, [100 * h["val_acc"] for h in history], marker="o", ms=3, label="validation accuracy")
    ax.plot(xs, [100 * h["val_auc"] for h in history], marker="s", ms=3, label="validation AUC (paper's)")
    ax.set_xlabel({"images": "training images seen", "train_seconds": "training wall time, s", "step": "step"}.get(x, x))
    ax.set_ylabel("%")
    ax.set_title(title)
    legend_outside(ax)
    return ax


def plot_class_recall(history: Sequence[dict], labels: Sequence[str], x: str = "images", title: str = "", ax=None):
    """Per-class validation recall against training images seen (records with ``val_recall`` only)."""
    plt = _plt()
    rows = [h for h in history if h.get("val_recall") is not None]
    if not rows:
        raise ValueError("the history has no per-class recall (runs trained before it was recorded); retrain to see it")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    xs = np.array([h[x] for h in rows], dtype=float)
    colors = plt.get_cmap("tab10")
    for k, name in enumerate(labels):
        ys = [np.nan if h["val_recall"][k] is None else 100 * h["val_recall"][k] for h in rows]
        ax.plot(xs, ys, marker="o", ms=2.5, lw=1.2, color=colors(k % 10), label=name)
    ax.set_xlabel({"images": "training images seen", "train_seconds": "training wall time, s", "step": "step"}.get(x, x))
    ax.set_ylabel("validation recall, %")
    ax.set_ylim(-3, 103)
    ax.set_title(title)
    legend_outside(ax)
    return ax


def plot_trajectory(frames: np.ndarray, times: Sequence[float], title: str = "", row_labels: Sequence[str] | None = None, size: float = 1.1):
    """States along an ODE path: ``frames`` is ``(T, B, H, W, C)`` uint8; one row per sample, one column per time."""
    plt = _plt()
    t_count, b = frames.shape[:2]
    size = min(size, (FIGURE_WIDTH - (LABEL_WIDTH if row_labels else 0.2)) / t_count)  # text stays at its size on a page
    fig, axes = plt.subplots(b, t_count, figsize=(t_count * size, b * size + 0.5), squeeze=False)
    for i in range(b):
        for j in range(t_count):
            ax = axes[i, j]
            img = frames[j, i]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"t = {times[j]:.2f}", fontsize=9)
            if j == 0 and row_labels:
                ax.set_ylabel(row_labels[i], fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_class_balance(counts: dict[str, Sequence[int]], labels: Sequence[str], title: str = "", ax=None):
    """Grouped bars of images per class, one group per split (``counts``: split -> per-class counts)."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4, 0.7 * len(labels) + 2), 3))
    k = len(labels)
    width = 0.8 / len(counts)
    for i, (split, c) in enumerate(counts.items()):
        total = max(sum(c), 1)
        ax.bar(np.arange(k) + i * width, 100 * np.asarray(c) / total, width, label=f"{split} (n = {total})")
    ax.set_xticks(np.arange(k) + 0.4 - width / 2)
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylabel("share of the split, %")
    ax.set_title(title)
    legend_outside(ax)
    return ax


def plot_codes(num_classes: int, labels: Sequence[str], beta: float = 4.0, title: str = ""):
    """The 64-colour palette with each class's RGB colour marked, and the grayscale code's levels."""
    from msflow.codes import GrayCode, class_palette_indices, palette

    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [1.3, 1]})
    pal = palette().numpy().reshape(4, 16, 3).astype(np.uint8)
    ax.imshow(pal, interpolation="nearest")
    for k, p in enumerate(class_palette_indices(num_classes).tolist()):
        r, c = divmod(p, 16)
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=2))
        ax.text(c, r, str(k), ha="center", va="center", fontsize=9, color="white" if pal[r, c].mean() < 128 else "black")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("RGB code: the 64-colour palette, classes boxed")
    gray = GrayCode(num_classes, beta)
    levels = gray.prototypes[:, 0].numpy()
    ax2.barh(np.arange(num_classes), levels, xerr=gray.noise_halfwidth, color=[str(0.5 + v / (2 * beta) * 0.9) for v in levels], ec="k")
    ax2.set_yticks(np.arange(num_classes))
    ax2.set_yticklabels([f"{k}: {n[:16]}" for k, n in enumerate(labels)])
    ax2.axvline(0, color="k", lw=0.5)
    ax2.set_xlabel("gray code value (bar: dequantisation noise)")
    ax2.set_title("SymmFlow's one-channel code")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_distances(distances: np.ndarray, labels: Sequence[str], true: int | None = None, ax=None, title: str = ""):
    """Bar chart of a predicted map's distance to each class colour (the nearest is the prediction)."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 2.6))
    d = np.asarray(distances)
    colors = ["tab:green" if k == int(d.argmin()) else "tab:gray" for k in range(len(d))]
    ax.barh(np.arange(len(d)), d, color=colors)
    ax.set_yticks(np.arange(len(d)))
    ax.set_yticklabels([f"{n[:14]}{' (true)' if k == true else ''}" for k, n in enumerate(labels)])
    ax.invert_yaxis()
    ax.set_xlabel("distance to class colour (lower = closer)")
    ax.set_title(title)
    return ax


def plot_reliability(calibrations: dict[str, "object"], title: str = "", ax=None):
    """Reliability diagram: accuracy against confidence per bin, one line per method.

    ``calibrations`` maps a label to a :class:`msflow.metrics.Calibration`; the legend shows each ECE.
    """
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], color="k", lw=0.8, ls="--", label="perfectly calibrated")
    colours = colours_for(list(calibrations))
    for label, cal in calibrations.items():
        keep = cal.bin_count > 0
        ax.plot(np.asarray(cal.bin_confidence)[keep], np.asarray(cal.bin_accuracy)[keep], marker="o", ms=3,
                color=colours[label], label=f"{label} (ECE {cal.ece:.3f})")
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    legend_outside(ax)
    return ax


def plot_time_to_accuracy(histories: dict[str, Sequence[dict]], x: str = "images", ax=None, title: str = "",
                          legend: bool = True):
    """Validation accuracy of several runs against training images seen (or ``x="train_seconds"``): each run in its
    recipe's colour (:func:`colours_for`), its other seeds dotted; the legend outside the axes."""
    import re

    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    colours = colours_for(list(histories))
    for label, history in histories.items():
        xs = np.array([h[x] for h in history], dtype=float) / (60 if x == "train_seconds" else 1)
        seed = re.search(r"-seed\d+$", label) is not None
        ax.plot(xs, [100 * h["val_acc"] for h in history], marker="o", ms=2.5 if seed else 3, label=label,
                color=colours[label], ls=":" if seed else "-", lw=1.2 if seed else 1.6)
    ax.set_xlabel({"images": "training images seen", "train_seconds": "training wall time, min"}.get(x, x))
    if x == "images":  # 150k, not 150000: the ticks stay apart
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:.0f}k" if v else "0"))
    ax.set_ylabel("validation accuracy, %")
    ax.set_title(title)
    if legend:
        legend_outside(ax)
    return ax


def plot_time_to_accuracy_panels(panels: dict[str, dict[str, Sequence[dict]]], x: str = "images", ncols: int = 2,
                                 width: float = 4.6, height: float = 2.9):
    """One :func:`plot_time_to_accuracy` panel per group of runs (``panels``: title -> {label: history}), all on the
    same axes' ranges, so that each panel has a few lines and the groups compare at a glance; each panel's legend
    sits to its right. Returns the figure."""
    plt = _plt()
    n = max(len(panels), 1)
    rows = -(-n // ncols)
    fig, axes = plt.subplots(rows, ncols, figsize=(ncols * (width + 2.2), rows * height), squeeze=False,
                             sharex=True, sharey=True)
    for ax, (title, histories) in zip(axes.flat, panels.items()):
        plot_time_to_accuracy(histories, x, ax=ax, title=title)
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.yaxis.set_tick_params(labelleft=True)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
