"""What an executed page shows of its own making: its parameters cells stay in the notebook but leave the book, its
title names the dataset, the run and the subject, and a small settings table says what it was made from.

``tidy`` is idempotent and applied by the pipeline to every executed page, the ones it executes and the committed
ones it reuses, so that a page executed before these rules existed reads like one executed after.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from msflow.data import STUDY_DATASETS, get_info
from msflow.files import write_text_if_changed

SUBJECTS = {"train": "training", "evaluate": "evaluation", "generate": "generation",
            "uncertainty": "uncertainty against baselines", "fidelity": "generation measured"}
"""The subject of each stage's page, in its title."""
HIDDEN = "remove-cell"
SETTINGS_TAG = "msflow-settings"
MACHINERY = ("runs_dir", "device", "data_root", "smoke")
"""Parameters that say where a page ran, not what it shows: left out of its settings table."""


def page_title(rel: str) -> str | None:
    """The title of the page at ``rel`` (relative to ``book/executed``, without ``.ipynb``) when its name says it: a
    run's page (``<flag>-<run>/<stage>``) or a dataset's recipes page; ``None`` for the others, which keep theirs."""
    parts = rel.split("/")
    for ds in STUDY_DATASETS:
        info = get_info(ds)
        if len(parts) == 2 and parts[0].startswith(info.flag + "-") and parts[1] in SUBJECTS:
            return f"{info.title}, {parts[0][len(info.flag) + 1:]}: {SUBJECTS[parts[1]]}"
        if parts == [f"{info.flag}-recipes"]:
            return f"{info.title}: recipes compared"
    return None


def declared(source: str) -> dict[str, tuple[Any, str]]:
    """The parameters a notebook's ``parameters`` cell declares: ``{name: (default, its comment)}``."""
    import ast

    out = {}
    lines = source.splitlines()
    for node in ast.parse(source).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            comment = lines[node.lineno - 1].partition("#")[2].strip()
            out[target.id] = (value, comment)
    return out


def settings_table(declared: dict[str, tuple[Any, str]], params: dict[str, Any], stage: str, run: str) -> str:
    """A Markdown table of what a run's page was made from: each declared parameter with the value it ran with and its
    meaning (without the machinery of :data:`MACHINERY`), and the command that makes the page again."""
    flag = params.get("dataset", "")
    rows = [("dataset", get_info(flag).title if flag else "?", "MedMNIST dataset"), ("run", f"`{run}`", "the run's name in experiments/*.toml")]
    for name, (default, meaning) in declared.items():
        if name not in MACHINERY + ("dataset", "profile", "run_name", "profiles", "run_names"):
            value = params.get(name, default)
            rows.append((name, f"`{value}`" if value != "" else "(empty)", meaning.replace("|", "/")))
    option = {"uncertainty": " --extra uncertainty", "fidelity": " --extra fidelity"}.get(stage, "")
    rows.append(("made by", f"`notebooks/{stage}.ipynb`", f"`python -m msflow_study run --name {run}{option} {flag}` executes it"))
    return "| setting | value | meaning |\n|---|---|---|\n" + "\n".join(f"| {k} | {v} | {m} |" for k, v, m in rows)


FIGURES = {
    "plotting.plot_history(": (
        "history", "Validation accuracy and AUC (the paper's) at each evaluation during training, against the training "
        "images seen (left) and the wall time of training (right)."),
    "plotting.plot_class_recall(": (
        "recall", "Validation recall of each class at each evaluation during training, against the training images seen."),
    'accuracy after rejecting the most uncertain")': (
        "arc", "Accuracy on the test images kept after rejecting the most uncertain ones (the largest distance to the "
        "nearest class colour): this run, mean ± std over its stochastic passes, beside the paper's MedSymmFlow (28) "
        "curve."),
    "generation: image channels from t = 0": (
        "generation-path", "One generated image per class (rows) forming from noise at t = 0 to an image at t = 1, along "
        "the Euler steps of its path."),
    "classification: label channels from t = 1": (
        "classification-path", "One test image per class (rows, labelled true -> predicted class): its label map forming "
        "from noise at t = 1 to a class colour at t = 0."),
    "plotting.plot_confusion(": (
        "confusion", "Confusion matrix of the first stochastic pass on the test split: rows are the true classes, columns "
        "the predicted ones."),
    'picked = {"most certain"': (
        "certain", "The six test images read with the smallest uncertainty u (top row) and the six with the largest "
        "(bottom row) in the first pass, each titled true → predicted class; u is the distance of the predicted label "
        "map to the nearest class colour."),
    'groups=[("real test images"': (
        "generated", "Real test images (left) and images generated from each class (right), one row per class, with "
        "the number of network evaluations named in the heading."),
    "quality against compute": (
        "quality", "Fréchet distance of the generated images to the test split, in the features of the in-domain "
        "ResNet-18, against the network evaluations per image (left) and the time per image (right), for the Euler "
        "and Heun solvers; dashed: the validation split's distance, the floor a generator can reach."),
    "plotting.show_image_blocks(": (
        "samples", "Training images of each dataset drawn at random, one row per class (names shortened; the table "
        "below gives the full ones)."),
    "plotting.plot_class_balance(": (
        "balance", "The share of each class in the training, validation and test splits of each dataset; n is the "
        "split's number of images."),
    "plotting.plot_reliability(": (
        "uncertainty", "Left: accuracy after rejecting the most uncertain test images, for MedSymmFlow's scores and the "
        "ResNet-18 baselines, beside the paper's curve. Right: reliability of each method's probabilities, with its "
        "expected calibration error (ECE)."),
}
"""Captions of the figures of the run pages and the data page, by a piece of the code that draws each (the cells of pages executed long ago
have other ids): :func:`tidy` puts a cell with that code and a single image output into a numbered figure with this
caption, named after its page so that names stay unique."""


def _caption_figures(cells: list[dict[str, Any]], rel: str) -> None:
    """Give the cells of :data:`FIGURES` whose one displayed output is an image their caption and a unique name."""
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        found = next((f for code, f in FIGURES.items() if code in source), None)
        if not found:
            continue
        shown = [o for o in cell.get("outputs", []) if o.get("output_type") in ("display_data", "execute_result")
                 and "scrapbook" not in o.get("metadata", {})]
        if len(shown) == 1 and "image/png" in shown[0].get("data", {}):
            key, caption = found
            name = "fig-" + re.sub(r"[^a-z0-9]+", "-", f"{rel}-{key}".lower())
            cell["metadata"].setdefault("mystnb", {})["figure"] = {"caption": caption, "name": name}


def tidy(nb: dict[str, Any], rel: str) -> dict[str, Any]:
    """``nb`` (an executed notebook as JSON) with its parameters cells removed from the book, its title set by
    :func:`page_title` and, on a run's page, its settings table after the title; a run's page is
    marked ``orphan`` (its dataset's page links it; the table of contents does not list it), and the figures of
    :data:`FIGURES` get their caption."""
    if "cells" not in nb:  # not a notebook: nothing to tidy
        return nb
    nb = copy.deepcopy(nb)
    params = nb.get("metadata", {}).get("papermill", {}).get("parameters", {})
    cells = [c for c in nb["cells"] if SETTINGS_TAG not in c.get("metadata", {}).get("tags", [])]
    for cell in cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and HIDDEN not in tags:
            cell["metadata"]["tags"] = [*tags, HIDDEN]
    stage = rel.split("/")[-1]
    meta = {k: v for k, v in nb.get("metadata", {}).items() if k != "orphan"}
    if stage in SUBJECTS:  # reached from its dataset's page, not the table of contents
        meta["orphan"] = True
    nb = {**nb, "metadata": meta}
    title = page_title(rel)
    first = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"), None)
    if title and first is not None:
        text = "".join(cells[first]["source"])
        cells[first]["source"] = re.sub(r"\A# .*", lambda _: f"# {title}", text, count=1)
        if stage in SUBJECTS:
            run = params.get("run_name") or params.get("profile") or rel.split("/")[0].partition("-")[2]
            source = next(("".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), "")
            cells.insert(first + 1, {"cell_type": "markdown", "id": "msflow-settings", "metadata": {"tags": [SETTINGS_TAG]},
                                     "source": settings_table(declared(source), params, stage, run)})
    _caption_figures(cells, rel)
    return {**nb, "cells": cells}


def tidy_file(path: Path, executed: Path) -> bool:
    """Tidy the executed page at ``path`` in place; True if it changed."""
    import nbformat

    nb = json.loads(path.read_text())
    if "cells" not in nb:  # not a notebook (a test's stand-in): left as it is
        return False
    rel = path.relative_to(executed).with_suffix("").as_posix()
    return write_text_if_changed(path, nbformat.writes(nbformat.from_dict(tidy(nb, rel))))


FACTS = ("acc", "acc_std", "auc", "aucm", "minutes", "params")
"""The numbers a dataset page quotes for each of its runs (``{run}`` facts of the dataset's recipes page)."""


def glued_runs(recipes_page: Path) -> dict[str, set[str]]:
    """The runs whose :data:`FACTS` the executed recipes page glued, so that a dataset page may quote them, each with
    every fact glued for it."""
    if not recipes_page.exists():
        return {}
    nb = json.loads(recipes_page.read_text())
    keys = {o.get("metadata", {}).get("scrapbook", {}).get("name") for c in nb.get("cells", []) for o in c.get("outputs", [])}
    facts: dict[str, set[str]] = {}
    for k in keys:
        if k and "__" in k:
            run, _, fact = k.partition("__")
            facts.setdefault(run, set()).add(fact)
    return {run: f for run, f in facts.items() if set(FACTS) <= f}


def _evidence(fact, glued: set[str]) -> str:
    """The validation evidence a dataset page's tab names (``fact``: a fact's ``{run}`` reference; ``glued``: the facts
    glued for the run): the checkpoint and the readout chosen on validation, or the seeds an ensemble reads."""
    readout = f"readout {fact('readout')}, chosen on validation" if "readout" in glued else "the paper's single read"
    if {"step", "select", "best_val", "best_val_auc"} <= glued:
        return (f"Chosen on validation: the checkpoint of step {fact('step')}, by its {fact('select')} (validation "
                f"accuracy {fact('best_val')} %, AUC {fact('best_val_auc')} %); {readout}.")
    if "members" in glued:
        return f"Seeds {fact('seeds')} of {fact('run')}, read together; {readout}."
    return f"Read with {readout}."


def dataset_page(flag: str, runs: list[str], pages: dict[str, list[str]], quoted: dict[str, set[str]],
                 recipes: bool, headline: tuple[str, ...] = ()) -> str:
    """The Markdown of a dataset's page in the results chapter: a tab per run with its test numbers and the validation
    evidence of its choices (for the runs in ``quoted``, with the facts glued for each) and links to its pages
    (``pages``: run -> the stages executed for it), then the link to the dataset's recipes page. The runs of
    ``headline`` (the seeds read together, then the recipe they are seeds of) come first, marked, then the other
    ``runs`` in their order."""
    info = get_info(flag)
    roles = dict(zip(headline, ("the seeds read together", "the recipe of those seeds")))
    lead = [r for r in roles if r in runs]
    lines = [f"# {info.title}: the runs", "",
             f"The runs of {info.title} that the results chapter reports, one tab each: its test numbers, read from its "
             "results files, and its pages. Accuracy and AUC are in %, the AUC by the paper's definition (the MedMNIST "
             "evaluator's in brackets); the ± is the spread over stochastic passes of the readout."]
    if lead:
        lines.append(f"The {'first two tabs are' if len(lead) > 1 else 'first tab is'} the headline of the at-a-glance "
                     "table ({doc}`../intro`): " + ", and ".join(f"`{r}`, {roles[r]}" for r in lead) + ".")
    lines += ["", "::::{tab-set}"]
    for run in lead + [r for r in runs if r not in lead]:
        lines += ["", f":::{{tab-item}} {run}" + (" (headline)" if run in lead else "")]
        if run in quoted:
            fact = lambda f: f"{{run}}`{flag}/{run}:{f}`"  # noqa: E731
            lines.append(f"Test accuracy {fact('acc')} ± {fact('acc_std')}, AUC {fact('auc')} ({fact('aucm')}); "
                         f"{fact('params')} parameters, {fact('minutes')} min of training.")
            lines.append("")
            lines.append(_evidence(fact, quoted[run]))
        links = [f"{{doc}}`{SUBJECTS[stage]} <../executed/{flag}-{run}/{stage}>`" for stage in pages.get(run, [])]
        lines.append("")
        lines.append("Its pages: " + " · ".join(links) + "." if links else
                     "It has no pages of its own: the results chapter and the recipes page read its records.")
        lines.append(":::")
    lines += ["", "::::", ""]
    if recipes:
        lines.append(f"{{doc}}`../executed/{flag}-recipes` compares every run of {info.title}, against images seen and wall time.")
    return "\n".join(lines) + "\n"
