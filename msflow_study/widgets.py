"""Interactive panels for students: generate, classify, abstain, and the class codes (ipywidgets).

Everything expensive is computed once when the :class:`Explorer` is built (one stochastic pass over
each test split); a control then re-runs only what it changes: a few ODE solves of a small network,
well under a second on a laptop CPU with the default settings. ipywidgets is imported when a panel is
built, so the rest of msflow does not need it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from msflow import metrics, plotting
from msflow.data import Split, get_info, load_split
from msflow.evaluate import Predictions, predict
from msflow.model import LoadedModel
from msflow.runs import generate_from_run, load_run
from msflow.sampler import SOLVERS, classify

TRAJECTORY_STEPS = 8


@dataclass
class Explorer:
    """Loaded runs, their test splits and one precomputed pass over each (keyed by dataset flag)."""

    runs: dict[str, LoadedModel]
    tests: dict[str, Split]
    passes: dict[str, Predictions]
    sources: dict[str, str]


def build_explorer(run_dirs: dict[str, Path], data_root: str | None, device: str = "auto", progress: bool = False) -> Explorer:
    """Load each run's selected weights and classify its test split once."""
    runs, tests, passes, sources = {}, {}, {}, {}
    for flag, run in run_dirs.items():
        loaded = load_run(run, "best", device)
        test = load_split(flag, "test", loaded.config.data.size, data_root)
        runs[flag], tests[flag], sources[flag] = loaded, test, str(run)
        passes[flag] = predict(loaded.components, test, seed=0, batch_size=loaded.config.eval.batch_size, progress=progress)
    if not runs:
        raise ValueError("no run to explore; train one first (msflow train) or let the notebook train a quick one")
    return Explorer(runs, tests, passes, sources)


def _show(out, fig, alt: str) -> None:
    """Put ``fig`` into the HTML widget ``out`` as a PNG whose alt text is ``alt`` (an ``Output`` widget would show it
    without one, and the book's static copy of the page keeps the image with its description)."""
    import base64
    import html
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    out.value = f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" style="max-width: 100%; height: auto">'


def _names(ex: Explorer) -> list[tuple[str, str]]:
    return [(get_info(f).title, f) for f in ex.runs]


def generate_panel(ex: Explorer):
    """Dataset, class, steps, solver, seed -> a grid of generated images and one sample's trajectory."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    first = next(iter(ex.runs))
    dataset = w.Dropdown(options=_names(ex), value=first, description="dataset")
    klass = w.Dropdown(description="class")
    steps = w.IntSlider(value=10, min=1, max=50, description="steps", continuous_update=False)  # 25 in the paper
    solver = w.Dropdown(options=sorted(SOLVERS), value="euler", description="solver")
    seed = w.BoundedIntText(value=0, min=0, max=10_000, description="seed")
    status, out = w.Label(), w.HTML()

    def set_classes(*_):
        names = get_info(dataset.value).label_names
        klass.options = [(f"{k}: {n}", k) for k, n in enumerate(names)]
        klass.value = 0

    def draw(*_):
        status.value = "generating..."
        loaded = ex.runs[dataset.value]
        labels = torch.full((8,), klass.value, dtype=torch.long)
        gen = generate_from_run(loaded, labels, steps.value, solver.value, seed.value, keep_trajectory=True)
        frames = plotting.to_uint8(gen.trajectory[:, 0])  # (T, H, W, C) of the first sample
        pick = np.linspace(0, len(frames) - 1, min(len(frames), 9)).round().astype(int)
        # two tiled images (one axes each) draw several times faster than one axes per image
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 2.9))
        for ax, tiles, caption in ((top, plotting.to_uint8(gen.images), "8 samples"),
                                   (bottom, frames[pick], "the first one at t = " + ", ".join(f"{p / (len(frames) - 1):.2f}" for p in pick))):
            ax.imshow(plotting.grid(tiles, nrow=len(tiles)).squeeze(), cmap="gray", vmin=0, vmax=255)
            ax.set_title(caption, fontsize=9)
            ax.axis("off")
        fig.suptitle(f"{get_info(dataset.value).title}, class {klass.label}: {gen.nfe} network evaluations per image", fontsize=9)
        fig.tight_layout()
        _show(out, fig, f"{get_info(dataset.value).title}: eight images generated for class {klass.label} with {steps.value} "
                        f"{solver.value} steps, and the first of them forming from noise as t runs from 0 to 1")
        status.value = f"done: {len(labels)} images with {steps.value} {solver.value} steps"

    set_classes()
    dataset.observe(set_classes, "value")
    for c in (dataset, klass, steps, solver, seed):
        c.observe(draw, "value")
    draw()
    return w.VBox([w.HBox([dataset, klass]), w.HBox([steps, solver, seed]), status, out])


def classify_panel(ex: Explorer):
    """A test image (by index, or the most / least certain) -> its label map forming backward in time,
    its distances to every class colour, the prediction and the uncertainty, over N noise draws."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    first = next(iter(ex.runs))
    dataset = w.Dropdown(options=_names(ex), value=first, description="dataset")
    index = w.IntSlider(value=0, min=0, max=len(ex.tests[first]) - 1, description="test image", continuous_update=False)
    rank = w.ToggleButtons(options=["by index", "most certain", "least certain"], value="by index", description="pick")
    draws = w.IntSlider(value=1, min=1, max=16, description="noise draws", continuous_update=False)
    status, out = w.Label(), w.HTML()

    def chosen() -> int:
        p = ex.passes[dataset.value]
        if rank.value == "by index":
            return index.value
        order = np.argsort(p.uncertainty, kind="stable")
        return int(order[0] if rank.value == "most certain" else order[-1])

    def draw(*_):
        status.value = "classifying..."
        flag, i = dataset.value, chosen()
        loaded, test = ex.runs[flag], ex.tests[flag]
        comps = loaded.components
        device = next(comps.model.parameters()).device
        x = comps.prepare(test.images[i : i + 1].to(device)).expand(draws.value, -1, -1, -1)
        gen = torch.Generator(device).manual_seed(i)
        one = classify(comps.model, comps.code, x, 1, "euler", gen)  # the readout: one Euler step per draw
        path = classify(comps.model, comps.code, x[:1], TRAJECTORY_STEPS, "euler", gen, keep_trajectory=True)
        d = one.distances.float().cpu().numpy()
        votes = np.bincount(d.argmin(1), minlength=d.shape[1])
        mean_d = d.mean(0)
        names, true = get_info(flag).label_names, int(test.labels[i])
        maps = plotting.to_uint8(torch.stack([comps.code.to_rgb(f) for f in path.trajectory])[:, 0])
        fig = plt.figure(figsize=(11, 3.2))
        grid = fig.add_gridspec(2, 10)  # image | label map at 9 times (two rows) | distances
        ax = fig.add_subplot(grid[:, :2])
        ax.imshow(test.images[i].permute(1, 2, 0).squeeze().numpy(), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"test image {i}\ntrue: {names[true][:20]}", fontsize=9)
        ax.axis("off")
        for j, frame in enumerate(maps):
            a = fig.add_subplot(grid[j // 5, 2 + j % 5])
            a.imshow(frame.squeeze(), vmin=0, vmax=255, cmap="gray")
            a.set_title(f"t = {1 - j / TRAJECTORY_STEPS:.2f}", fontsize=9)
            a.axis("off")
        plotting.plot_distances(mean_d, names, true, ax=fig.add_subplot(grid[:, 7:]), title=f"mean over {draws.value} draw(s)")
        pred = int(mean_d.argmin())
        fig.suptitle(f"prediction: {names[pred]} ({'right' if pred == true else 'wrong'}); uncertainty δ = {mean_d.min():.3f}; "
                     f"votes {dict((names[k][:10], int(v)) for k, v in enumerate(votes) if v)}", fontsize=9)
        with warnings.catch_warnings():  # eight class names beside nine small maps: tight_layout does what it can
            warnings.simplefilter("ignore", UserWarning)
            fig.tight_layout()
        _show(out, fig, f"{get_info(flag).title} test image {i} (true class: {names[true]}), its label map forming backward "
                        f"from noise over {TRAJECTORY_STEPS} Euler steps, and its mean distance to each class colour over "
                        f"{draws.value} draw(s): predicted {names[pred]}, {'right' if pred == true else 'wrong'}, with "
                        f"uncertainty {mean_d.min():.3f}")
        status.value = f"image {i}: {draws.value} draw(s), label map shown over {TRAJECTORY_STEPS} backward Euler steps"

    def set_range(*_):
        index.max = len(ex.tests[dataset.value]) - 1

    dataset.observe(set_range, "value")
    for c in (dataset, index, rank, draws):
        c.observe(draw, "value")
    draw()
    return w.VBox([w.HBox([dataset, rank]), w.HBox([index, draws]), status, out])


def abstain_panel(ex: Explorer):
    """A rejection threshold -> accuracy and coverage on the test set, the point on the accuracy-rejection
    curve, and how many errors and correct answers the rejection removed."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    first = next(iter(ex.runs))
    dataset = w.Dropdown(options=_names(ex), value=first, description="dataset")
    reject = w.FloatSlider(value=0.2, min=0.0, max=0.95, step=0.05, description="reject", readout_format=".0%", continuous_update=False)
    summary, out = w.HTML(), w.HTML()

    def draw(*_):
        p = ex.passes[dataset.value]
        correct = p.correct
        order = np.argsort(-p.uncertainty, kind="stable")
        n_rej = int(np.floor(reject.value * len(correct)))
        rejected, kept = order[:n_rej], order[n_rej:]
        acc = correct[kept].mean()
        arc = metrics.accuracy_rejection(correct, p.uncertainty)
        threshold = p.uncertainty[order[n_rej - 1]] if n_rej else float("inf")
        summary.value = (f"<b>{get_info(dataset.value).title}</b>: rejecting the {n_rej} most uncertain of {len(correct)} test images "
                         f"(δ &ge; {threshold:.3f}) leaves coverage {len(kept) / len(correct):.0%} at accuracy <b>{acc:.1%}</b> "
                         f"(all: {correct.mean():.1%}). Rejected: <b>{int((~correct[rejected]).sum())}</b> errors and "
                         f"<b>{int(correct[rejected].sum())}</b> correct answers.")
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        plotting.plot_accuracy_rejection({"this model (one pass)": (metrics.REJECTION_FRACTIONS, arc, None)}, ax=ax,
                                         title="accuracy-rejection curve")
        ax.plot([100 * n_rej / len(correct)], [100 * acc], "o", ms=11, mfc="none", mec="red", mew=2, label="your threshold")
        plotting.legend_outside(ax)
        fig.tight_layout()
        _show(out, fig, f"Accuracy-rejection curve of the {get_info(dataset.value).title} model over its test images, with the "
                        f"chosen rejection of {reject.value:.0%} marked at {acc:.1%} accuracy")

    for c in (dataset, reject):
        c.observe(draw, "value")
    draw()
    return w.VBox([w.HBox([dataset, reject]), summary, out])


def codes_panel(datasets: tuple[str, ...] = ("pneumoniamnist", "bloodmnist", "dermamnist", "retinamnist")):
    """The RGB palette with each class's colour, and what the grayscale code would look like."""
    import ipywidgets as w

    dataset = w.Dropdown(options=[(get_info(d).title, d) for d in datasets], value=datasets[0], description="dataset")
    out = w.HTML()

    def draw(*_):
        info = get_info(dataset.value)
        _show(out, plotting.plot_codes(info.num_classes, info.label_names, title=f"{info.title}: {info.num_classes} classes"),
              f"The 64-colour palette with the RGB colours of {info.title}'s {info.num_classes} classes marked, beside the "
              "levels of SymmFlow's grayscale code")

    dataset.observe(draw, "value")
    draw()
    return w.VBox([dataset, out])
