"""Every choice on validation: which recipe a dataset's headline uses, and the validation evidence behind each run and
ensemble the book shows.

The headline recipe of a dataset is chosen among the single networks trained on the CPU with seed 0 (the runs that
existed to be compared; the other seeds were trained after a choice) by the validation accuracy of the checkpoint each
kept, as its ``train.json`` records it. A tie goes to the higher validation AUC, then to the cheaper run (parameters
times training images). The test split plays no part.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from msflow.data import STUDY_DATASETS, get_info
from msflow.files import read_json

from msflow_study.registry import RECORD_FILE, run_path

HEADLINE = "cpu-ens"
"""The ensemble the at-a-glance table shows, every seed of each dataset's validation-chosen recipe."""

CRITERION = ("the validation accuracy of the checkpoint each run kept (train.json); ties to the higher validation AUC, "
             "then to fewer parameters × training images")


class EvidenceError(ValueError):
    """A run or ensemble the book shows lacks the validation record of one of its choices."""


def recipe_candidates(runs_dir: str | os.PathLike, dataset: str) -> dict[str, dict[str, Any]]:
    """The runs a dataset's recipe is chosen among, by name: its single networks trained on the CPU with seed 0, each
    with ``val_acc``, ``val_auc`` and ``step`` (of the checkpoint it kept), ``parameters``, ``images`` (to that
    checkpoint) and ``steps`` (trained)."""
    flag = get_info(dataset).flag
    out = {}
    for folder in sorted(Path(runs_dir).glob(f"{flag}-*")):
        train, config = folder / "train.json", folder / "config.json"
        if not (train.exists() and config.exists()):
            continue
        t = read_json(train)
        if int(read_json(config).get("seed", 0)) != 0 or not t["provenance"]["device"].startswith("CPU"):
            continue
        best = t["best"]
        out[folder.name.partition("-")[2]] = {"val_acc": best["val_acc"], "val_auc": best["val_auc"], "step": best["step"],
                                              "parameters": t["parameters"], "images": best["images"], "steps": t["steps"]}
    return out


def pick_recipe(candidates: dict[str, dict[str, Any]]) -> str:
    """The candidate with the highest validation accuracy; a tie goes to the higher validation AUC, then to the fewer
    parameters × training images, then to the name first in alphabetical order."""
    if not candidates:
        raise ValueError("no runs to choose a recipe among")
    return min(candidates, key=lambda n: (-candidates[n]["val_acc"], -candidates[n]["val_auc"],
                                          candidates[n]["parameters"] * candidates[n]["images"], n))


def choose_recipe(runs_dir: str | os.PathLike, dataset: str) -> dict[str, Any]:
    """The recipe validation chooses for ``dataset`` (:func:`pick_recipe` over :func:`recipe_candidates`), with the
    candidates, the criterion and the standard error that the validation split's size puts on the chosen accuracy."""
    info = get_info(dataset)
    found = recipe_candidates(runs_dir, info.flag)
    chosen = pick_recipe(found)
    acc, n = found[chosen]["val_acc"], info.n_samples["val"]
    return {"dataset": info.flag, "criterion": CRITERION, "candidates": found, "chosen": chosen,
            "val_images": n, "val_se": (acc * (1 - acc) / n) ** 0.5}


def headline_recipe(runs_dir: str | os.PathLike, dataset: str, ensemble: str = HEADLINE) -> str | None:
    """The run whose seeds the recorded ``ensemble`` of ``dataset`` reads together (None if it is not recorded)."""
    record = run_path(runs_dir, dataset, ensemble) / "eval_test.json"
    if not record.exists():
        return None
    from msflow_study.report import members_run

    return members_run(read_json(record))


def checkpoint_kept(run_dir: str | os.PathLike) -> bool:
    """Whether the run's selected weights are recorded (``run.json``'s ``checkpoint`` names a file and its hash), so
    that its numbers can be checked again; an ensemble's when every member's are."""
    run_dir = Path(run_dir)
    record = read_json(run_dir / RECORD_FILE) if (run_dir / RECORD_FILE).exists() else {}
    if "members" in record:
        return all(checkpoint_kept(run_dir.parent / f"{record['dataset']}-{m}") for m in record["members"])
    return bool(record.get("checkpoint", {}).get("sha256"))


def evidence(runs_dir: str | os.PathLike, dataset: str, name: str) -> dict[str, str]:
    """The validation evidence of each choice behind the run or ensemble ``name`` of ``dataset`` the book shows, as
    ``{choice: what validation said, and where it is recorded}``.

    For a run: the checkpoint (its validation metric and step, ``train.json``), the readout views (``readout.json``;
    without one, the paper's single read, which is no choice),
    the temperature of the MedMNIST AUC (``eval_test.json``) and whether its weights are kept. For an ensemble: the
    same for every member, the recipe (:func:`choose_recipe`, for the headline ensemble) and its own readout views.

    Raises:
        EvidenceError: a choice has no validation record, or the checkpoint evaluated on test is not the one
            validation chose.
    """
    run = run_path(runs_dir, dataset, name)
    test = _need(run / "eval_test.json", name)
    out: dict[str, str] = {}
    members = test.get("ensemble", {}).get("members")
    if members:
        for m in members:
            for choice, said in evidence(runs_dir, dataset, m["run"].partition("-")[2]).items():
                out[f"{m['run']}: {choice}"] = said
        if name == HEADLINE:
            pick = choose_recipe(runs_dir, dataset)
            base = headline_recipe(runs_dir, dataset, name)
            if pick["chosen"] != base:
                raise EvidenceError(f"{run.name} reads seeds of {base}, but validation chooses {pick['chosen']} "
                                    f"({pick['criterion']}): change its members in experiments/seeds.toml")
            out["recipe"] = (f"{base}: validation accuracy {100 * pick['candidates'][base]['val_acc']:.1f} %, the highest "
                             f"of {len(pick['candidates'])} CPU runs with seed 0")
    else:
        train = _need(run / "train.json", name)
        best, step = train["best"], test["checkpoint"]["step"]
        if best.get("val_acc") is None or best["step"] != step:
            raise EvidenceError(f"{run}: the test record reads the checkpoint of step {step}, but train.json's validation "
                                f"chose step {best['step']}")
        metric = train["config"]["train"].get("select", "acc")
        out["checkpoint"] = f"step {step}, by validation {metric} {100 * best['val_' + metric]:.1f} % (train.json)"
        out["weights"] = "kept (run.json checkpoint sha256)" if checkpoint_kept(run) else "not kept: cannot be re-checked"
        temperature = test["metrics"].get("temperature")
        if temperature is None:
            raise EvidenceError(f"{run}/eval_test.json has no temperature fitted on validation")
        out["temperature"] = f"T = {temperature:.2f}, fitted on validation (eval_test.json)"
    readout = run / "readout.json"
    if readout.exists():
        r = read_json(readout)
        out["readout"] = f"{r['chosen']}, by {r['criterion']} (readout.json)"
    else:
        out["readout"] = "one read, the paper's: nothing chosen (no readout.json)"
    return out


def _need(path: Path, name: str) -> dict[str, Any]:
    if not path.exists():
        raise EvidenceError(f"{name}: {path} is missing; the book shows this run, so its records must be there")
    return read_json(path)


def _choices(runs_dir: str | os.PathLike, datasets: Iterable[str]):
    """``(dataset info, choose_recipe record)`` of every dataset with runs to choose among."""
    for ds in datasets:
        info = get_info(ds)
        try:
            yield info, choose_recipe(runs_dir, info.flag)
        except ValueError:  # no candidate run on this dataset
            continue


def choices_table(runs_dir: str | os.PathLike, datasets: Iterable[str] = STUDY_DATASETS):
    """The recipe choice of every dataset with recorded runs, as a table: each candidate's validation accuracy and AUC
    (of the checkpoint it kept), its size and training, which one validation chooses and which the headline reads."""
    import pandas as pd

    rows = []
    for info, pick in _choices(runs_dir, datasets):
        head = headline_recipe(runs_dir, info.flag)
        order = sorted(pick["candidates"].items(), key=lambda kv: (-kv[1]["val_acc"], -kv[1]["val_auc"]))
        for name, c in order:
            rows.append({"dataset": info.title, "recipe": name, "validation ACC, %": f"{100 * c['val_acc']:.1f}",
                         "validation AUC, %": f"{100 * c['val_auc']:.1f}", "parameters, M": f"{c['parameters'] / 1e6:.1f}",
                         "steps": c["steps"],
                         "chosen": " · ".join(w for w, yes in (("by validation", name == pick["chosen"]),
                                                               ("the headline", name == head)) if yes)})
    return pd.DataFrame(rows).set_index(["dataset", "recipe"]) if rows else None


FORMER_HEADLINES = {"pneumoniamnist": "cpu-w24-ens", "retinamnist": "cpu-lam03-auc-x2-ens"}
"""The ensembles that were each dataset's headline before the recipes were chosen on validation alone. Their recipes
(``cpu-w24``, and ``cpu-lam03-auc-x2`` on the base ``cpu-lam03``) were designed after test AUCs had been seen."""


def choice_prose(runs_dir: str | os.PathLike, datasets: Iterable[str] = STUDY_DATASETS) -> str:
    """A sentence per dataset on its recipe choice: the chosen run's validation accuracy and the standard error the
    validation split puts on it, the runs within one standard error of it, and what the validation AUC would choose."""
    lines = []
    for info, pick in _choices(runs_dir, datasets):
        c, chosen = pick["candidates"], pick["chosen"]
        close = [n for n in c if n != chosen and c[chosen]["val_acc"] - c[n]["val_acc"] <= pick["val_se"]]
        by_auc = max(c, key=lambda n: (c[n]["val_auc"], n))
        lines.append(
            f"- **{info.title}**: `{chosen}`, {100 * c[chosen]['val_acc']:.1f} % on {pick['val_images']} validation images "
            f"(standard error {100 * pick['val_se']:.1f} pt); "
            + (f"within one standard error of it: {', '.join(f'`{n}`' for n in close)}; " if close
               else "no other run within one standard error; ")
            + ("the validation AUC would choose the same run." if by_auc == chosen else
               f"the validation AUC would choose `{by_auc}` ({100 * c[by_auc]['val_auc']:.1f} % against "
               f"{100 * c[chosen]['val_auc']:.1f} %)."))
    return "\n".join(lines)
