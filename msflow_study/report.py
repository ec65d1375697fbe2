"""The report helpers: the results tables, the prose and the ``{run}`` facts of the book, each read from results files."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from msflow.data import STUDY_DATASETS, get_info
from msflow.files import read_json

from msflow_study.paper import PAPER_MODEL_28, TABLE1
from msflow_study.registry import run_path, seed_runs


def pct(mean: float, std: float | None = None, digits: int = 1) -> str:
    """``0.8812, 0.004`` -> ``"88.1 ± 0.4"``."""
    return f"{100 * mean:.{digits}f}" + (f" ± {100 * std:.{digits}f}" if std is not None else "")


def readout_table(choice: dict[str, Any], reference: dict[str, Any]):
    """The readout views compared on validation (``readout.json``), with the test metrics of the reference readout
    (``reference``: the run's ``eval_test.json``) and of the chosen views; the others are not evaluated on test."""
    import pandas as pd

    rows = []
    for views, o in choice["options"].items():
        test = reference["metrics"] if views == reference["eval"].get("views", "none") else (
            choice["test"] if views == choice["chosen"] else None)
        rows.append({
            "views": views, "network evaluations per image": o["views"] * reference["eval"]["steps"],
            "validation ACC": pct(o["mean"]["acc"], o["std"]["acc"]),
            "validation AUC (paper's)": pct(o["mean"]["auc_paper"], o["std"]["auc_paper"]),
            "chosen": "yes" if views == choice["chosen"] else "",
            "test ACC": pct(test["mean"]["acc"], test["std"]["acc"]) if test else "not evaluated",
            "test AUC (paper's)": pct(test["mean"]["auc_paper"], test["std"]["auc_paper"]) if test else "not evaluated",
            "test AUC (MedMNIST)": pct(test["mean"]["auc_medmnist"], test["std"]["auc_medmnist"]) if test else "not evaluated",
        })
    return pd.DataFrame(rows).set_index("views")


def readout_prose(chosen: dict[str, dict[str, dict[str, Any]]], ours: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One Markdown line per run whose readout views were chosen on validation (``{name: our_results(...,
    readout=True)}``), against the same run's reference readout (``ours``)."""
    lines = []
    for name, runs in chosen.items():
        for flag, rec in runs.items():
            choice, ref = rec["readout"], ours.get(name, {}).get(flag)
            val = {v: o["mean"]["acc"] for v, o in choice["options"].items()}
            m = rec["metrics"]
            line = (f"- **{get_info(flag).title}**, `{name}`: validation accuracy "
                    + ", ".join(f"{pct(a)} % with views {v}" for v, a in val.items())
                    + f"; chosen: **{choice['chosen']}**, test accuracy {pct(m['mean']['acc'], m['std']['acc'])} %, "
                    f"AUC {pct(m['mean']['auc_paper'], m['std']['auc_paper'])} % (paper's)")
            if ref is not None and choice["chosen"] != "none":
                r = ref["metrics"]
                line += (f", against {pct(r['mean']['acc'], r['std']['acc'])} % and "
                         f"{pct(r['mean']['auc_paper'], r['std']['auc_paper'])} % read once")
            lines.append(line + ".")
    return "\n".join(lines) if lines else "No run has its readout views chosen yet (`python -m msflow_study choose-views --run RUN`)."


def results_table(ours: dict[str, dict[str, dict[str, Any]]], datasets: Iterable[str] = STUDY_DATASETS,
                  missing: dict[str, str] | None = None):
    """One row per model, one (AUC, ACC) column pair per dataset: our runs first (one row per name, as
    ``{name: our_results(...)}``), then Table 1.

    AUC is the paper's distance AUC for our rows, as in the paper's MedSymmFlow rows. Missing results
    are shown as "not run", or as ``missing[name]`` says. Rows from the paper are labelled "paper, Table 1" (``msflow_study.paper.SOURCE_PAPER`` cites it).
    """
    import pandas as pd

    datasets = [get_info(d).flag for d in datasets]
    rows = []
    for name, runs in ours.items():
        row: dict[str, Any] = {"model": f"MedSymmFlow (28), ours, {name}", "source": "this study"}
        for ds in datasets:
            rec = runs.get(ds)
            m = rec["metrics"] if rec else None
            gap = (missing or {}).get(name, "not run")
            row[(ds, "AUC")] = pct(m["mean"]["auc_paper"], m["std"]["auc_paper"]) if m else gap
            row[(ds, "ACC")] = pct(m["mean"]["acc"], m["std"]["acc"]) if m else gap
        rows.append(row)
    for model, vals in TABLE1.items():
        r: dict[str, Any] = {"model": model, "source": "paper, Table 1"}
        for ds in datasets:
            r[(ds, "AUC")], r[(ds, "ACC")] = (f"{v:.1f}" for v in vals[ds])
        rows.append(r)
    df = pd.DataFrame(rows).set_index(["model", "source"])
    df.columns = pd.MultiIndex.from_tuples([(get_info(d).title, k) for d, k in df.columns])
    return df


def short_commit(commit: str | None) -> str:
    """A recorded commit shortened to 12 hex digits, keeping what follows the hash (``-dirty``, `` (declared)``)."""
    if not commit:
        return "not recorded"
    sha = commit[:40]
    return sha[:12] + commit[40:] if all(c in "0123456789abcdef" for c in sha) and len(sha) == 40 else commit


def runs_table(ours: dict[str, dict[str, dict[str, Any]]]):
    """Provenance of each result (``{name: our_results(...)}``): training length, wall time, device, commit, data."""
    import pandas as pd

    rows = []
    for name, runs in ours.items():
        for ds, rec in runs.items():
            t, prov = rec["training"], rec["provenance"]
            rows.append({
                "dataset": get_info(ds).title,
                "run": name,
                "parameters": f"{t['parameters'] / 1e6:.2f} M" if t.get("parameters") else "",
                "steps": t["steps"],
                "images seen": t["images_seen"],
                "training, min": round(t["train_seconds"] / 60, 1),
                "trained on": t["device"],
                "trained at commit": short_commit(t.get("git_commit")),
                "evaluated on": prov["device"],
                "evaluated at commit": short_commit(prov["git_commit"]),
                "data": "synthetic" if rec["dataset"]["synthetic"] else f"MedMNIST, MD5 {rec['dataset']['md5'][:8]}",
            })
    if not rows:
        return pd.DataFrame({"dataset": [], "note": []})
    return pd.DataFrame(rows).set_index(["dataset", "run"]).sort_index(level=0, sort_remaining=False)


def seeds_table(runs_dir: str | os.PathLike, names: Iterable[str], datasets: Iterable[str] = STUDY_DATASETS):
    """Test accuracy and AUC of each training seed of the runs ``names`` trained with more than one, and their mean with
    the range over seeds; None if no run was. The ± of each seed's row is over stochastic passes of that one network."""
    import numpy as np
    import pandas as pd

    rows = []
    for ds in datasets:
        for name in names:
            runs = seed_runs(runs_dir, ds, name)
            if len(runs) < 2:
                continue
            means = []
            for seed, run in runs.items():
                m = read_json(run / "eval_test.json")["metrics"]
                best = read_json(run / "train.json")["best"]["step"] if (run / "train.json").exists() else ""
                means.append(m["mean"])
                rows.append({"dataset": get_info(ds).title, "run": name, "seed": str(seed), "selected step": str(best),
                             **{label: pct(m["mean"][key], m["std"][key]) for label, key in _SEED_METRICS}})
            summary = {}
            for label, key in _SEED_METRICS:
                v = np.array([mean[key] for mean in means])
                summary[label] = f"{pct(v.mean(), digits=1)} ({pct(v.min(), digits=1)} to {pct(v.max(), digits=1)})"
            rows.append({"dataset": get_info(ds).title, "run": name, "seed": f"mean of {len(runs)} (range)",
                         "selected step": "", **summary})
    if not rows:
        return None
    return pd.DataFrame(rows).set_index(["dataset", "run", "seed"])


_SEED_METRICS = (("ACC", "acc"), ("AUC, paper's", "auc_paper"), ("AUC, MedMNIST", "auc_medmnist"))


def _recorded(runs_dir: str | os.PathLike, names: Iterable[str], filename: str, datasets: Iterable[str]) -> Iterator[tuple[str, str, dict]]:
    """``(dataset title, run name, record)`` of each run that holds the results file ``filename``."""
    names = list(names)
    for ds in datasets:
        for name in names:
            path = run_path(runs_dir, ds, name) / filename
            if path.exists():
                yield get_info(ds).title, name, read_json(path)


def uncertainty_overview(runs_dir: str | os.PathLike, names: Iterable[str], datasets: Iterable[str] = STUDY_DATASETS):
    """The uncertainty targets per dataset and run, from each run's ``uncertainty.json`` (written by the
    uncertainty notebook); None if no run has one."""
    import pandas as pd

    rows = []
    for title, name, rec in _recorded(runs_dir, names, "uncertainty.json", datasets):
        for c in rec["checks"]:
            ref = c["reference"]
            rows.append({"dataset": title, "run": name, "target": c["check"], "MedSymmFlow score": c["MedSymmFlow"],
                         "ours": round(c["ours"], 4), "reference": "not measured" if ref is None or ref != ref else round(ref, 4),
                         "met": c["met"],
                         "baselines": f"{rec['settings']['ensemble']} ResNet-18, {rec['settings']['baseline_epochs']} epochs"})
    return pd.DataFrame(rows).set_index(["dataset", "run", "target"]) if rows else None


def generation_overview(runs_dir: str | os.PathLike, names: Iterable[str], datasets: Iterable[str] = STUDY_DATASETS):
    """Generation at each run's own setting (the paper's 25 Euler steps unless the name says otherwise), from
    ``generation.json``, per dataset and run; None if no run has one."""
    import pandas as pd

    rows = []
    for title, name, rec in _recorded(runs_dir, names, "generation.json", datasets):
        key = _key_setting(rec)
        solver, nfe = rec["settings"]["key"]
        cas = rec["cas"]
        rows.append({
            "dataset": title, "run": name, "setting": f"{solver}, {nfe} NFE",
            "Fréchet distance": round(key["frechet"], 2),
            "floor: validation split": f"{rec['floor']['val']['frechet']:.2f} ({rec['floor']['val']['n']} images)",
            "training images, as many": round(rec["floor"]["frechet"], 2),
            "precision": round(key["precision"], 3), "recall": round(key["recall"], 3),
            "class fidelity": round(key["class_fidelity"], 3),
            "CAS (generated)": round(cas["generated"], 3),
            "same classifier, as many real": round(cas["real_same_n"], 3),
            "CAS classifier": f"{cas['classifier']}, {cas['epochs']} epochs, {cas['n_generated']} images",
            "images/s": f"{key['images_per_second']:.0f} ({rec['provenance']['device']})",
            "samples per class": rec["settings"]["per_class"],
        })
    return pd.DataFrame(rows).set_index(["dataset", "run"]) if rows else None


def _key_setting(rec: dict[str, Any]) -> dict[str, Any]:
    """The sweep row of a ``generation.json`` at the run's own setting (``settings.key``: solver and NFE)."""
    solver, nfe = rec["settings"]["key"]
    return next(r for r in rec["sweep"] if (r["solver"], r["nfe"]) == (solver, nfe))


def results_prose(ours: dict[str, dict[str, dict[str, Any]]], datasets: Iterable[str] = STUDY_DATASETS) -> str:
    """One Markdown line per dataset and run (``{name: our_results(...)}``), every number read from the
    results files."""
    lines = []
    for ds in datasets:
        info = get_info(ds)
        auc, acc = TABLE1[PAPER_MODEL_28][info.flag]
        found = {p: runs[info.flag] for p, runs in ours.items() if info.flag in runs}
        if not found:
            lines.append(f"- **{info.title}**: no run of {', '.join(f'`{p}`' for p in ours) or 'any run'} here yet.")
            continue
        lines.append(f"- **{info.title}** (paper: accuracy {acc:.1f} %, AUC {auc:.1f} %):")
        for name, rec in found.items():
            m, t = rec["metrics"], rec["training"]
            lines.append(
                f"  - `{name}`: accuracy {pct(m['mean']['acc'], m['std']['acc'])} %, "
                f"AUC {pct(m['mean']['auc_paper'], m['std']['auc_paper'])} % by the paper's definition and "
                f"{pct(m['mean']['auc_medmnist'], m['std']['auc_medmnist'])} % by the MedMNIST evaluator's, "
                f"over {m['settings']['repeats']} stochastic passes, after {t['images_seen']:,} training images "
                f"({t['train_seconds'] / 60:.1f} min on {t['device']})" + _ensemble_note(rec) + "."
            )
    return "\n".join(lines)


def _ensemble_note(rec: dict[str, Any]) -> str:
    """", the mean of 3 networks: seeds 0, 1, 2 of `cpu-w24`, ..." for an ensemble's record, else ""."""
    if "ensemble" not in rec:
        return ""
    members = rec["ensemble"]["members"]
    return (f", the mean of {len(members)} networks: seeds {', '.join(str(m['seed']) for m in members)} of "
            f"`{members_run(rec)}` (images and minutes are their sum)")


def run_facts(train: dict[str, Any], evaluation: dict[str, Any], readout: dict[str, Any] | None = None,
              train_split: dict[str, Any] | None = None) -> dict[str, str]:
    """One run's numbers as the book's prose quotes them, each formatted and read from its results files.

    ``train``, ``evaluation``: the run's ``train.json`` and ``eval_test.json``; ``readout``: its ``readout.json`` if the
    readout views were chosen on validation; ``train_split``: its ``eval_train.json`` if the training split was
    evaluated. Percentages have one decimal, as everywhere in the book. Keys:
    ``steps``, ``images``, ``minutes``, ``seconds``, ``steps_per_s``, ``device``, ``params`` (the network's parameter
    count in millions, with its unit), ``select`` (the validation metric that
    chose the checkpoint), ``step`` (the one it chose), ``best_val`` and ``best_val_auc`` (its validation accuracy and
    AUC), ``val_<step>`` and ``val_auc_<step>`` for every validation point of training, ``acc``, ``acc_std``, ``auc``,
    ``aucm`` (test: accuracy, AUC by the paper's definition and by the MedMNIST evaluator's), ``recall_<k>`` (test
    recall of class ``k`` in the evaluation's first pass, whose confusion matrix is recorded), and where recorded
    ``readout``, ``readout_acc``, ``readout_auc``, ``readout_aucm`` (the chosen views and their test metrics; the
    views are ``none`` when a single read was kept) and ``train_acc``.
    """
    best = train["best"]
    seconds = train["train_seconds"]
    facts = {
        "steps": f"{train['steps']}", "images": f"{train['images_seen']:,}", "minutes": f"{seconds / 60:.1f}",
        "seconds": f"{seconds:.0f}", "steps_per_s": f"{train['steps'] / seconds:.1f}",
        "device": train["provenance"]["device"], "params": f"{train['parameters'] / 1e6:.1f} M",
        "select": {"acc": "accuracy", "auc": "AUC"}.get(train["config"]["train"].get("select", "acc"), "accuracy"),
        "step": f"{best['step']}", "best_val": pct(best["val_acc"]), "best_val_auc": pct(best["val_auc"]),
    } | _test_facts(evaluation)
    for point in train["history"]:
        if point.get("val_acc") is not None:
            facts[f"val_{point['step']}"] = pct(point["val_acc"])
            facts[f"val_auc_{point['step']}"] = pct(point["val_auc"])
    facts |= _readout_facts(readout, evaluation)
    if train_split is not None:
        facts["train_acc"] = pct(train_split["metrics"]["mean"]["acc"])
    return facts


def _readout_facts(readout: dict[str, Any] | None, evaluation: dict[str, Any]) -> dict[str, str]:
    """The readout facts of :func:`run_facts` (none without a ``readout.json``): ``readout``, ``readout_acc``,
    ``readout_auc``, ``readout_aucm``, those of the single read (``evaluation``) where it was kept."""
    if readout is None:
        return {}
    chosen = readout["test"]["mean"] if readout["chosen"] != "none" else evaluation["metrics"]["mean"]
    return {"readout": readout["chosen"], "readout_acc": pct(chosen["acc"]),
            "readout_auc": pct(chosen["auc_paper"]), "readout_aucm": pct(chosen["auc_medmnist"])}


def _test_facts(evaluation: dict[str, Any]) -> dict[str, str]:
    """The test facts of :func:`run_facts`: ``acc``, ``acc_std``, ``auc``, ``aucm`` and ``recall_<k>``."""
    m = evaluation["metrics"]["mean"]
    facts = {"acc": pct(m["acc"]), "acc_std": pct(evaluation["metrics"]["std"]["acc"]),
             "auc": pct(m["auc_paper"]), "aucm": pct(m["auc_medmnist"])}
    if evaluation["metrics"].get("confusion") is not None:
        from msflow.metrics import recall_from_confusion

        for k, recall in enumerate(recall_from_confusion(evaluation["metrics"]["confusion"])):
            if recall is not None:
                facts[f"recall_{k}"] = pct(recall)
    return facts


def ensemble_facts(evaluation: dict[str, Any], readout: dict[str, Any] | None = None) -> dict[str, str]:
    """An ensemble's numbers (its ``eval_test.json`` and ``readout.json``, written by
    :func:`msflow_study.protocol.ensemble_runs`) as the prose quotes them: the test and readout facts of :func:`run_facts`,
    ``members`` (how many networks), ``seeds``, ``run`` (the run they are seeds of), and ``images``, ``minutes`` and ``params``
    summed over the members."""
    t, members = evaluation["training"], evaluation["ensemble"]["members"]
    return ({"members": f"{len(members)}", "seeds": ", ".join(str(m["seed"]) for m in members),
             "run": members_run(evaluation), "images": f"{t['images_seen']:,}",
             "minutes": f"{t['train_seconds'] / 60:.1f}", "params": f"{t['parameters'] / 1e6:.1f} M"}
            | _test_facts(evaluation) | _readout_facts(readout, evaluation))


def recipes_prose(facts: dict[str, dict[str, str]]) -> str:
    """One Markdown line per run (``{name: run_facts(...)}``): its length and cost, the checkpoint its validation
    metric chose, its test metrics and, where recorded, its readout and training-split accuracy."""
    lines = []
    for name, f in facts.items():
        line = (f"- `{name}`: {f['steps']} steps ({f['images']} images) in {f['minutes']} min on {f['device']} "
                f"({f['steps_per_s']} steps/s); validation {f['select']} chose step {f['step']} "
                f"({f['best_val']} % accuracy, {f['best_val_auc']} % AUC on validation); test: {f['acc']} ± {f['acc_std']} % "
                f"accuracy, AUC {f['auc']} % by the paper's definition and {f['aucm']} % by the MedMNIST evaluator's")
        if f.get("readout", "none") != "none":
            line += (f"; with the {f['readout']} readout chosen on validation, {f['readout_acc']} % and "
                     f"{f['readout_auc']} % ({f['readout_aucm']} %)")
        elif "readout" in f:
            line += "; a single read was kept on validation"
        if "train_acc" in f:
            line += f"; {f['train_acc']} % of the training split classified correctly"
        lines.append(line + ".")
    return "\n".join(lines) if lines else "No finished run to describe."


def val_at_steps(facts: dict[str, dict[str, str]], every: int | None = None):
    """Validation accuracy (%) of each run (rows) at the training steps that are multiples of ``every`` and at each
    run's last step (columns); empty where a run has no validation point there. ``every`` defaults to 500 steps, or
    a multiple of 500 that keeps the longest run to twelve columns or so."""
    import math

    import pandas as pd

    points = {p: [int(k[4:]) for k in f if k.startswith("val_") and k[4:].isdigit()] for p, f in facts.items()}
    steps = sorted({s for run in points.values() for s in run})
    last = {max(run) for run in points.values() if run}
    every = every or 500 * max(1, math.ceil(max(steps, default=0) / 6000))
    cols = [s for s in steps if s % every == 0 or s in last]
    return pd.DataFrame({s: {p: f.get(f"val_{s}", "") for p, f in facts.items()} for s in cols}).rename_axis(
        columns="step")


def confusion_prose(confusion, names: list[str], below: float = 0.5) -> str:
    """A Markdown sentence on the classes whose recall is under ``below``, each with the class it is most often
    taken for (rows of ``confusion`` = true class), or that every class reaches it."""
    import numpy as np

    from msflow.metrics import recall_from_confusion

    m = np.asarray(confusion)
    support = m.sum(axis=1)
    weak = []
    for k, (name, recall) in enumerate(zip(names, recall_from_confusion(m))):
        if recall is None or recall >= below:
            continue
        others = m[k].copy()
        others[k] = -1
        j = int(others.argmax())
        weak.append(f"{name} (recall {100 * recall:.1f} %; {100 * m[k, j] / support[k]:.1f} % of its "
                    f"{support[k]:,} images are taken for {names[j]})")
    if not weak:
        return f"Every class has a recall of at least {100 * below:.0f} % in this pass."
    return (f"Classes with a recall under {100 * below:.0f} % in this pass: " + "; ".join(weak) + ".")


def members_run(evaluation: dict[str, Any]) -> str:
    """The run whose seeds an ensemble's record reads together: its first member's name without the dataset and seed."""
    first = evaluation["ensemble"]["members"][0]["run"]
    return re.sub(r"-seed\d+$", "", first.partition("-")[2])


def member_dirs(runs_dir: str | os.PathLike, evaluation: dict[str, Any]) -> list[Path]:
    """The run folders of the members an ensemble's record (its ``eval_test.json``) names, in its order."""
    return [Path(runs_dir) / m["run"] for m in evaluation["ensemble"]["members"]]


def _spread(values) -> str:
    """``values`` (fractions) as their mean ± sample standard deviation in %, a ± that does not break the line."""
    return pct(values.mean(), values.std(ddof=1)).replace(" ± ", "\u00a0±\u00a0")


README_START = "<!-- headline results: written by python -m msflow_study readme -->"
"""The line before the README's headline table."""
README_END = "<!-- end of headline results -->"
"""The line after the README's headline table."""


HEADLINE_ROWS = {"paper": "paper (28)", "one": "ours, one network", "together": "ours, seeds together",
                 "resnet": "ResNet-18 (28)", "ours": "our training", "theirs": "the paper's", "verdict": "**reproduced?**"}
"""The rows of the at-a-glance table (:func:`headline_table`), by key of :func:`headline_cells`."""


def headline_table(runs_dir: str | os.PathLike, ensemble: str = "cpu-ens", datasets: Iterable[str] = STUDY_DATASETS) -> str:
    """The study at a glance, as a Markdown table with a column per dataset with a recorded ``ensemble`` and a row per
    entry of :data:`HEADLINE_ROWS` (:func:`headline_cells`). Test accuracy / AUC (the paper's distance AUC for ours), in %."""
    titles, cells = [], {k: [] for k in HEADLINE_ROWS}
    for ds in datasets:
        found = headline_cells(runs_dir, ds, ensemble)
        if found is None:
            continue
        titles.append(get_info(ds).title)
        for k in HEADLINE_ROWS:
            cells[k].append(found[k])
    rows = ["| test ACC / AUC, % | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
    rows += [f"| {HEADLINE_ROWS[k]} | " + " | ".join(v) + " |" for k, v in cells.items()]
    return "\n".join(rows)


def headline_cells(runs_dir: str | os.PathLike, dataset: str, ensemble: str = "cpu-ens") -> dict[str, str] | None:
    """One dataset's column of the at-a-glance table, read from the records of ``ensemble`` (None if it has none): the
    paper's MedSymmFlow (28); one of our networks (mean ± standard deviation over the ensemble's seeds, each read once);
    the seeds read together (with the readout views chosen on validation); the MedMNIST ResNet-18 (28); our networks'
    size and training and the paper's; and the verdict of :func:`verdict`."""
    import numpy as np

    from msflow import metrics
    from msflow.config import make_config
    from msflow.model import build

    info = get_info(dataset)
    ens = run_path(runs_dir, info.flag, ensemble)
    if not (ens / "eval_test.json").exists():
        return None
    record = read_json(ens / "eval_test.json")
    chosen = (read_json(ens / "readout.json")["test"]["mean"] if (ens / "readout.json").exists()
              else record["metrics"]["mean"])
    tested = [read_json(f / "eval_test.json") for f in member_dirs(runs_dir, record)]
    members = [t["metrics"]["mean"] for t in tested]
    one = {k: np.array([m[k] for m in members]) for k in ("acc", "auc_paper")}
    auc, acc = TABLE1[PAPER_MODEL_28][info.flag]
    r_auc, r_acc = TABLE1["ResNet-18 (28)"][info.flag]
    t = record["training"]
    paper = make_config(info.flag, "paper")
    epochs = t["images_seen"] / len(members) / info.n_samples["train"]
    with np.load(ens / "predictions_test.npz") as passes:
        se = metrics.bootstrap_se(passes["distances"][0], passes["labels"])
    # "CPU (x86_64, 2 threads)": the kind of device is enough here (the results page has each in full)
    kinds = {(t["training"].get("device") or "?").split(" (")[0] for t in tested}
    device = kinds.pop() if len(kinds) == 1 else "several kinds of device"
    return {
        "paper": f"{acc:.1f} / {auc:.1f}",
        "one": f"{_spread(one['acc'])} / {_spread(one['auc_paper'])}",
        "together": f"{pct(chosen['acc'])} / {pct(chosen['auc_paper'])}",
        "resnet": f"{r_acc:.1f} / {r_auc:.1f}",
        "ours": (f"{len(members)} × `{members_run(record)}`, {t['parameters'] / len(members) / 1e6:.1f} M each, "
                 f"{epochs:.0f} epochs, {t['train_seconds'] / 60:.0f} min in all on {device}"),
        "theirs": f"{build(paper).model.num_parameters() / 1e6:.1f} M, {paper.train.epochs:.0f} epochs",
        "verdict": verdict({"acc": one["acc"].mean(), "auc_paper": one["auc_paper"].mean()},
                           {"acc": acc / 100, "auc_paper": auc / 100}, se),
    }


def changed_headlines(runs_dir: str | os.PathLike, former: dict[str, str], ensemble: str = "cpu-ens"):
    """What choosing the recipes on validation changed: for each dataset of ``former`` (``{dataset: the ensemble that
    was its headline}``), the at-a-glance cells of that former headline beside those of ``ensemble``, as a table."""
    import pandas as pd

    rows = []
    for ds, old in former.items():
        for label, name in (("before: chosen partly on test", old), ("now: chosen on validation", ensemble)):
            cells = headline_cells(runs_dir, ds, name)
            if cells is not None:
                rows.append({"dataset": get_info(ds).title, "headline": label}  # an HTML table: no Markdown in it
                            | {HEADLINE_ROWS[k].strip("*"): cells[k].replace("`", "") for k in ("ours", "one", "together", "verdict")})
    return pd.DataFrame(rows).set_index(["dataset", "headline"]) if rows else None


def verdict(ours: dict[str, float], paper: dict[str, float], se: dict[str, float]) -> str:
    """Whether our accuracy and AUC (fractions) reproduce the paper's: both at or above them ("yes"), each at most one
    standard error of the test set ``se`` below ("within one standard error of the test set"), or not, with the
    metrics that fall short, by how many points (−) and the standard error."""
    gaps = {k: paper[k] - ours[k] for k in ("acc", "auc_paper")}
    names = {"acc": "ACC", "auc_paper": "AUC"}
    if all(g <= 0 for g in gaps.values()):
        return "yes: ACC and AUC at or above the paper's"
    short = {k: g for k, g in gaps.items() if g > se[k]}
    if not short:
        return "within one standard error of the test set (" + ", ".join(
            f"{names[k]} −{100 * g:.1f} pt, SE {100 * se[k]:.1f}" for k, g in gaps.items() if g > 0) + ")"
    return "no: " + ", ".join(f"{names[k]} −{100 * g:.1f} pt (SE {100 * se[k]:.1f})" for k, g in short.items())


def readme_with_headline(text: str, table: str) -> str:
    """``text`` (the README) with the block between :data:`README_START` and :data:`README_END` replaced by ``table``."""
    start, end = text.index(README_START), text.index(README_END)
    return text[:start + len(README_START)] + "\n" + table + "\n" + text[end:]


def _passes(path) -> tuple["np.ndarray", "np.ndarray"]:
    """The distances (passes × images × classes) and labels of a ``predictions_<split>.npz``."""
    import numpy as np

    with np.load(path) as f:
        d = f["distances"]
        return (d if d.ndim == 3 else d[None]), f["labels"]


def auc_table(runs_dir: str | os.PathLike, ensemble: str = "cpu-ens", datasets: Iterable[str] = STUDY_DATASETS):
    """The test AUC of the headline three ways, per dataset: the paper's distance AUC (the ranking of ``-d_k``, no
    probabilities); the MedMNIST evaluator on ``softmax(-d / T)`` with ``T`` fitted on validation (the recorded
    ``auc_medmnist``); and the same evaluator on plain ``softmax(-d)``. Rows: one network (mean ± sd over the
    ensemble's seeds, each the mean over its passes) and the seeds together; in %."""
    import numpy as np
    import pandas as pd

    from msflow import metrics

    def three(d, y, temperature, task):
        per = [(metrics.auc_distance(p, y), metrics.auc_standard(metrics.softmax_distances(p, temperature), y, task),
                metrics.auc_standard(metrics.softmax_distances(p, 1.0), y, task)) for p in d]
        return np.mean(per, axis=0)

    rows = []
    for ds in datasets:
        info = get_info(ds)
        ens = run_path(runs_dir, info.flag, ensemble)
        if not (ens / "eval_test.json").exists():
            continue
        record = read_json(ens / "eval_test.json")
        nets = []
        for run in member_dirs(runs_dir, record):
            nets.append(three(*_passes(run / "predictions_test.npz"),
                              read_json(run / "eval_test.json")["metrics"]["temperature"], info.task))
        nets = np.array(nets)
        together = three(*_passes(ens / "predictions_test.npz"), record["metrics"]["temperature"], info.task)
        cols = ("paper's distance AUC", "MedMNIST evaluator, T fitted on validation", "MedMNIST evaluator, plain softmax(−d)")
        rows.append({"dataset": info.title, "network": f"one network ({len(nets)} seeds)"}
                    | {c: _spread(nets[:, i]) for i, c in enumerate(cols)})
        rows.append({"dataset": info.title, "network": "seeds together"} | {c: pct(together[i]) for i, c in enumerate(cols)})
    return pd.DataFrame(rows).set_index(["dataset", "network"]) if rows else None


def recall_table(runs_dir: str | os.PathLike, dataset: str, ensemble: str = "cpu-ens"):
    """Per-class recall and balanced accuracy (their mean) of the headline's networks on the validation and test splits
    (each network's first pass; the seeds together on test), with each split's share of every class; in %."""
    import numpy as np
    import pandas as pd

    from msflow import metrics

    info = get_info(dataset)
    ens = run_path(runs_dir, info.flag, ensemble)
    if not (ens / "eval_test.json").exists():
        return None
    names = dict(enumerate(info.label_names))

    def row(label, split, d, y):
        recall = metrics.per_class_recall(d.argmin(-1), y, len(names))
        return ({"network": label, "split": split} | {f"recall: {names[k]}": pct(r) for k, r in enumerate(recall)}
                | {"balanced accuracy": pct(float(np.mean(recall))), "accuracy": pct(metrics.accuracy(d.argmin(-1), y))})

    rows, shares = [], {}
    for run in member_dirs(runs_dir, read_json(ens / "eval_test.json")):
        for split in ("val", "test"):
            d, y = _passes(run / f"predictions_{split}.npz")
            rows.append(row(run.name.partition("-")[2], split, d[0], y))
            shares[split] = np.bincount(y, minlength=len(names)) / len(y)
    d, y = _passes(ens / "predictions_test.npz")
    rows.append(row("seeds together", "test", d[0], y))
    for split, share in shares.items():
        rows.append({"network": "share of the split", "split": split}
                    | {f"recall: {names[k]}": pct(s) for k, s in enumerate(share)})
    return pd.DataFrame(rows).set_index(["network", "split"]).fillna("")


def mark_best(table, higher: bool = True):
    """``table`` (a DataFrame of formatted numbers, e.g. ``"95.0 ± 0.1"``) styled with the best value of each column in
    bold: the highest (or, with ``higher=False``, the lowest) leading number; cells without a number are left alone.
    Its HTML is the same at every execution (a fixed element id, not pandas' random one)."""
    import numpy as np

    def lead(cell) -> float:
        found = re.match(r"\s*\**(-?\d+(?:\.\d+)?)", str(cell))
        return float(found.group(1)) if found else np.nan

    def bold(column):
        values = column.map(lead)
        if values.isna().all():
            return [""] * len(column)
        best = values.max() if higher else values.min()
        return ["font-weight: bold" if v == best else "" for v in values]

    return table.style.set_uuid("best").apply(bold, axis=0)


def uncertainty_grid(runs_dir: str | os.PathLike, runs: dict[str, str]):
    """The uncertainty targets as a grid, a row per check and a column per dataset, for one run per dataset (``runs``:
    ``{dataset: run}``, e.g. one network of each headline): whether the target is met, ours against the reference.
    Rows at the bottom name each column's run and the baselines it was measured against. None if no run has an
    ``uncertainty.json``."""
    import pandas as pd

    grid: dict[str, dict[str, str]] = {}
    for ds, name in runs.items():
        path = run_path(runs_dir, ds, name) / "uncertainty.json"
        if not path.exists():
            continue
        rec, title = read_json(path), get_info(ds).title
        for c in rec["checks"]:
            ref = c["reference"]
            shown = "not measured" if ref is None or ref != ref else f"{ref:.3f}"
            grid.setdefault(c["check"], {})[title] = f"{c['met']}: {c['ours']:.3f} against {shown}"
        grid.setdefault("run", {})[title] = name
        s = rec["settings"]
        grid.setdefault("baselines", {})[title] = f"{s['ensemble']} ResNet-18, {s['baseline_epochs']} epochs"
    if not grid:
        return None
    order = [k for k in grid if k not in ("run", "baselines")] + ["run", "baselines"]
    return pd.DataFrame({k: grid[k] for k in order}).T.fillna("not measured")


SELECTIVE = {"aurc": "AURC", "eaurc": "E-AURC", "error_auroc": "error-detection AUROC", "ece": "ECE (calibrated)"}
"""The selective-prediction measures of :func:`selective_table`, by key of an evaluation record's metrics."""


def selective_table(runs_dir: str | os.PathLike, ensemble: str = "cpu-ens", datasets: Iterable[str] = STUDY_DATASETS):
    """How well the headline's distance ranks its errors, for one network and for the seeds together: for each dataset
    with a recorded ``ensemble``, the measures of :data:`SELECTIVE` (each a mean over stochastic passes) of its members,
    as mean ± standard deviation over the seeds, and of the ensemble read with the views chosen on validation (as
    the at-a-glance table reads it). AURC, E-AURC and ECE are fractions, lower being better; the AUROC is in %. None if
    no dataset has the ensemble."""
    import numpy as np
    import pandas as pd

    rows = {}
    for ds in datasets:
        ens = run_path(runs_dir, ds, ensemble)
        if not (ens / "eval_test.json").exists():
            continue
        record = read_json(ens / "eval_test.json")
        together = (read_json(ens / "readout.json")["test"]["mean"] if (ens / "readout.json").exists()
                    else record["metrics"]["mean"])
        members = [read_json(f / "eval_test.json")["metrics"]["mean"] for f in member_dirs(runs_dir, record)]
        title = get_info(ds).title
        one, both = {}, {}
        for key, name in SELECTIVE.items():
            values = np.array([m[key] for m in members])
            if key == "error_auroc":
                one[name], both[name] = _spread(values), pct(together[key])
            else:
                one[name] = f"{values.mean():.3f}\u00a0±\u00a0{values.std(ddof=1):.3f}"
                both[name] = f"{together[key]:.3f}"
        rows[(title, f"one network ({len(members)} seeds of `{members_run(record)}`)")] = one
        rows[(title, "seeds together")] = both
    if not rows:
        return None
    table = pd.DataFrame(rows).T
    table.index.names = ["dataset", "read by"]
    return table


def uncertainty_key(runs_dir: str | os.PathLike, runs: dict[str, str]) -> str:
    """One sentence for the uncertainty chapter's summary: how many of the uncertainty targets one network of each
    headline (``runs``: ``{dataset: run}``) meets, from its ``uncertainty.json``."""
    parts = []
    for ds, name in runs.items():
        path = run_path(runs_dir, ds, name) / "uncertainty.json"
        if path.exists():
            checks = read_json(path)["checks"]
            met = [c["check"].split(",")[0] for c in checks if c["met"] == "yes"]
            parts.append(f"{get_info(ds).title} `{name}` {len(met)} of {len(checks)}" + (f" ({'; '.join(met)})" if met else ""))
    if not parts:
        return "No headline network has its uncertainty measured yet."
    return "Uncertainty targets met by one network of each headline: " + ", ".join(parts) + "."


def generation_key(runs_dir: str | os.PathLike, runs: dict[str, str]) -> str:
    """One sentence for the generation chapter's summary: class fidelity and the Classification Accuracy Score (against
    the same classifier trained on as many real images) of one network of each headline, from its ``generation.json``."""
    parts, missing = [], []
    for ds, name in runs.items():
        path = run_path(runs_dir, ds, name) / "generation.json"
        if not path.exists():
            missing.append(f"{get_info(ds).title} `{name}`")
            continue
        rec = read_json(path)
        key = _key_setting(rec)
        parts.append(f"{get_info(ds).title} `{name}`: class fidelity {pct(key['class_fidelity'])} %, CAS "
                     f"{pct(rec['cas']['generated'])} % against {pct(rec['cas']['real_same_n'])} % for real images")
    text = ("Generation by one network of each headline, at the paper's 25 Euler steps: " + "; ".join(parts) + "."
            if parts else "No headline network has its generation measured yet.")
    return text + (f" Not measured yet: {', '.join(missing)}." if missing else "")
