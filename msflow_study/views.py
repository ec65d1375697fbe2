"""Views of the explore page that answer in a browser without a kernel: frames computed when the page is executed,
shown by a menu and a slider (a few lines of JavaScript in the page; no request leaves it).

Three views, over the runs of an :class:`msflow_study.widgets.Explorer`: a test image's label map forming over t with
its distance to each class colour (:func:`classify_view`), generation of each class as the ODE steps grow
(:func:`generate_view`), and abstaining at a rejection threshold (:func:`abstain_view`).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json

import numpy as np
import torch

from msflow import metrics, plotting
from msflow.data import get_info
from msflow.runs import generate_from_run
from msflow.sampler import classify

_IDS = itertools.count()


def png_uri(fig, dpi: int = 72, colours: int = 64) -> str:
    """``fig`` as a ``data:`` URI of a PNG with at most ``colours`` colours (a few kB; the figure is closed)."""
    import matplotlib.pyplot as plt
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    buf.seek(0)
    small = io.BytesIO()
    Image.open(buf).convert("RGB").quantize(colors=colours).save(small, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(small.getvalue()).decode("ascii")


def array_uri(array: np.ndarray) -> str:
    """A ``(H, W, C)`` uint8 array as a ``data:`` URI of a PNG at its own pixels (the page enlarges it)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def static_view(frames: dict[str, list[tuple[str, str, str]]], title: str, choice_label: str, step_label: str,
                steps: list[str], start: int = 0, pixels: bool = False) -> str:
    """The HTML of a view: a menu over the keys of ``frames`` and a slider over ``steps``; ``frames[choice][i]`` is the
    ``(image URI, caption, alt text)`` shown for step ``i``. The first choice at step ``start`` is in the HTML itself,
    so the page shows it (with its alt text) before any script runs. With ``pixels``, the frames are arrays at their own
    pixels (:func:`array_uri`), drawn wide and without smoothing."""
    if not frames or any(len(f) != len(steps) for f in frames.values()):
        raise ValueError(f"every choice needs one frame per step ({len(steps)}); got "
                         + ", ".join(f"{c}: {len(f)}" for c, f in frames.items()))
    vid = f"msflow-view-{next(_IDS)}"
    first = next(iter(frames))
    src, caption, alt = frames[first][start]
    options = "".join(f'<option value="{i}">{html.escape(c)}</option>' for i, c in enumerate(frames))
    data = json.dumps([frames[c] for c in frames], separators=(",", ":"))
    esc = html.escape
    style = ("width: min(100%, 760px); height: auto; image-rendering: pixelated" if pixels
             else "max-width: 100%; height: auto")
    return f"""<div class="msflow-view" id="{vid}">
<p class="msflow-view-title"><strong>{esc(title)}</strong></p>
<p><label>{esc(choice_label)} <select>{options}</select></label>
<label>{esc(step_label)} <input type="range" min="0" max="{len(steps) - 1}" step="1" value="{start}"
 aria-label="{esc(step_label)}"></label> <output>{esc(steps[start])}</output></p>
<figure><img src="{src}" alt="{esc(alt)}" style="{style}"><figcaption>{esc(caption)}</figcaption></figure>
<script>(function () {{
  const root = document.getElementById("{vid}"), F = {data}, S = {json.dumps(steps)};
  const menu = root.querySelector("select"), range = root.querySelector("input"), out = root.querySelector("output");
  const img = root.querySelector("img"), cap = root.querySelector("figcaption");
  function show() {{
    const f = F[menu.value][range.value];
    img.src = f[0]; cap.textContent = f[1]; img.alt = f[2]; out.textContent = S[range.value];
  }}
  menu.addEventListener("change", show); range.addEventListener("input", show);
}})();</script>
</div>"""


def classify_view(ex, steps: int = 4, per_dataset: int = 3) -> str:
    """For each dataset, its most certain test image, its least certain and its most certain error: the label map at
    each time of a ``steps``-step Euler path from noise (t = 1) to the class colour (t = 0), and its distance to each
    class colour at that time (the prediction is the nearest)."""
    import matplotlib.pyplot as plt

    frames, times = {}, [1 - j / steps for j in range(steps + 1)]
    for flag, loaded in ex.runs.items():
        p, test, info = ex.passes[flag], ex.tests[flag], get_info(flag)
        order = np.argsort(p.uncertainty, kind="stable")
        wrong = [i for i in order if not p.correct[i]]
        picks = {"most certain": int(order[0]), "least certain": int(order[-1])}
        if wrong:
            picks["most certain error"] = int(wrong[0])
        comps = loaded.components
        device = next(comps.model.parameters()).device
        for what, i in list(picks.items())[:per_dataset]:
            x = comps.prepare(test.images[i: i + 1].to(device))
            path = classify(comps.model, comps.code, x, steps, "euler", torch.Generator(device).manual_seed(i),
                            keep_trajectory=True)
            states = path.trajectory[:, 0]
            maps = plotting.to_uint8(torch.stack([comps.code.to_rgb(s[None]) for s in states])[:, 0])
            dist = comps.code.distances(states.float()).cpu().numpy()
            true, names = int(test.labels[i]), info.label_names
            key, shown = f"{info.title}: {what} (test image {i})", []
            for j, t in enumerate(times):
                fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=(7.6, 2.2), gridspec_kw={"width_ratios": [1, 1, 2.2]})
                a0.imshow(test.images[i].permute(1, 2, 0).squeeze().numpy(), cmap="gray", vmin=0, vmax=255)
                a0.set_title(f"true: {names[true][:18]}")
                a1.imshow(maps[j].squeeze(), cmap="gray", vmin=0, vmax=255)
                a1.set_title(f"label map, t = {t:.2f}")
                for a in (a0, a1):
                    a.axis("off")
                plotting.plot_distances(dist[j], names, true, ax=a2, title="distance to each class colour")
                fig.tight_layout()
                pred = int(dist[j].argmin())
                shown.append((png_uri(fig),
                              f"t = {t:.2f}: nearest colour {names[pred]} ({'right' if pred == true else 'wrong'}), "
                              f"distance {dist[j, pred]:.3f}",
                              f"{info.title} test image {i} (true class {names[true]}), its label map at t = {t:.2f} and "
                              f"its distances to the class colours; the nearest is {names[pred]}"))
            frames[key] = shown
    return static_view(frames, "A test image's label map forming, step by step", "image", "time step",
                       [f"t = {t:.2f}" for t in times], start=steps)


def generate_view(ex, steps: tuple[int, ...] = (1, 2, 5, 25), samples: int = 8, seed: int = 0) -> str:
    """For each dataset and class, ``samples`` images generated with the same noise by Euler paths of each number of
    ``steps`` (the paper uses 25), shown at their own pixels."""
    frames = {}
    for flag, loaded in ex.runs.items():
        info = get_info(flag)
        for k, name in enumerate(info.label_names):
            labels = torch.full((samples,), k, dtype=torch.long)
            shown = []
            for n in steps:
                gen = generate_from_run(loaded, labels, n, "euler", seed)
                tiles = plotting.grid(plotting.to_uint8(gen.images), nrow=samples)
                shown.append((array_uri(tiles), f"{info.title}, {name}: {n} Euler step{'s' if n > 1 else ''} "
                              f"({gen.nfe} network evaluations per image)",
                              f"{samples} {info.title} images generated for class {name} with {n} Euler steps"))
            frames[f"{info.title}: {name}"] = shown
    return static_view(frames, "Generating a class: more steps, sharper images", "class", "Euler steps",
                       [str(n) for n in steps], start=len(steps) - 1, pixels=True)


def abstain_view(ex, fractions: tuple[float, ...] = tuple(np.round(np.arange(0, 0.95, 0.1), 2))) -> str:
    """For each dataset, the accuracy-rejection curve of its test pass with the point of each rejected fraction marked,
    and how many errors and correct answers that rejection sets aside."""
    import matplotlib.pyplot as plt

    frames = {}
    for flag in ex.runs:
        p, info = ex.passes[flag], get_info(flag)
        correct, order = p.correct, np.argsort(-p.uncertainty, kind="stable")
        arc = metrics.accuracy_rejection(correct, p.uncertainty)
        shown = []
        for f in fractions:
            n = int(np.floor(f * len(correct)))
            kept, rejected = order[n:], order[:n]
            acc = correct[kept].mean()
            fig, ax = plt.subplots(figsize=(6.2, 2.6))
            plotting.plot_accuracy_rejection({"this network, one pass": (metrics.REJECTION_FRACTIONS, arc, None)}, ax=ax)
            ax.plot([100 * n / len(correct)], [100 * acc], "o", ms=10, mfc="none", mec="#D62728", mew=2, label="rejected here")
            plotting.legend_outside(ax)
            fig.tight_layout()
            errors = int((~correct[rejected]).sum())
            shown.append((png_uri(fig),
                          f"{info.title}: rejecting the {n} most uncertain of {len(correct)} test images sets aside "
                          f"{errors} errors and {n - errors} correct answers; accuracy on the rest {100 * acc:.1f} %",
                          f"{info.title} accuracy-rejection curve with {100 * f:.0f} % rejected marked at "
                          f"{100 * acc:.1f} % accuracy"))
        frames[info.title] = shown
    return static_view(frames, "Abstaining: set the most uncertain aside", "dataset", "rejected",
                       [f"{100 * f:.0f} %" for f in fractions], start=min(2, len(fractions) - 1))


@torch.no_grad()
def flows_figure(ex, flag: str | None = None, times: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)):
    """The method in one figure, drawn by a trained network of the explorer (``flag``: its dataset, else the first):
    the image path x_t (noise at t = 0, a test image at t = 1) and the label path y_t (its class colour at t = 0, noise
    at t = 1) of the symmetrical flow, then the one-step readout: from (image, noise) at t = 1, one Euler step of the
    network gives a label map, whose distance to each class colour is the prediction and the uncertainty."""
    import matplotlib.pyplot as plt

    from msflow.flow import image_path, label_path
    from msflow.sampler import label_noise

    flag = flag or next(iter(ex.runs))
    loaded, test, p, info = ex.runs[flag], ex.tests[flag], ex.passes[flag], get_info(flag)
    comps, cfg = loaded.components, loaded.config
    device = next(comps.model.parameters()).device
    i = int(np.argsort(p.uncertainty, kind="stable")[0])  # the most certain test image
    true = int(test.labels[i])
    gen = torch.Generator(device).manual_seed(0)
    x = comps.prepare(test.images[i: i + 1].to(device))
    size = x.shape[-1]
    y = comps.code.encode(test.labels[i: i + 1].to(device), size, noise=False)
    xi_x = torch.randn(x.shape, generator=gen, device=device)
    xi_y = label_noise(1, comps.code, x.shape[2:], gen, device, x.dtype)
    sigma = cfg.flow.sigma_min
    read = classify(comps.model, comps.code, x, 1, "euler", gen)
    d = read.distances[0].float().cpu().numpy()

    fig = plt.figure(figsize=(10.5, 4.4))
    grid = fig.add_gridspec(2, len(times) + 4, width_ratios=[1] * len(times) + [0.2, 1, 1.3, 2.0], hspace=0.3, wspace=0.15,
                            left=0.07, right=0.98, top=0.8, bottom=0.14)
    for j, t in enumerate(times):
        tt = torch.full((1,), t, device=device)
        for row, (z, name) in enumerate(((image_path(x, xi_x, tt, sigma), "image $x_t$"),
                                         (comps.code.to_rgb(label_path(y, xi_y, tt, sigma)), "label map $y_t$"))):
            ax = fig.add_subplot(grid[row, j])
            ax.imshow(plotting.to_uint8(z)[0].squeeze(), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if row == 0:
                ax.set_title(f"t = {t:g}")
            if j == 0:
                ax.set_ylabel(name)
    ax = fig.add_subplot(grid[1, len(times) + 1])
    ax.imshow(plotting.to_uint8(comps.code.to_rgb(read.y_hat))[0].squeeze(), cmap="gray", vmin=0, vmax=255)
    ax.set_title("$\\hat{y}$, one step\nback from t = 1")
    ax.axis("off")
    bars = fig.add_subplot(grid[:, len(times) + 3])
    plotting.plot_distances(d, info.label_names, true, ax=bars, title="distance of $\\hat{y}$ to each class colour")
    bars.set_xlabel("distance (the nearest is the prediction)")
    fig.text(0.01, 0.99, f"{info.title}, test image {i} (true class: {info.label_names[true]})", ha="left", va="top",
             fontsize=10, fontweight="bold")
    fig.text(0.01, 0.92, "generation \u2192 integrates from t = 0 (noise image, class colour) to t = 1, in the paper's "
             "25 Euler steps", ha="left", va="top")
    fig.text(0.01, 0.02, "\u2190 classification integrates from t = 1 (the image, a noise label) back to t = 0; the "
             "readout takes one Euler step", ha="left", va="bottom")
    return fig
