"""The study's runs: where each lives, what each records, and which the book shows (its editions).

A run is the folder ``<runs_dir>/<dataset>-<name>`` of an experiment entry ``name`` (:mod:`msflow_study.experiments`):
its ``config.json`` (written by :func:`msflow.train.train`) is the single truth of what ran, and its ``run.json``
(written here) records where it comes from: the experiment file and its question, the entry's base and why, the
overrides of its recipe, the seed, the command that trains it and the commit it was trained at.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

from msflow.config import SPEED_FIELDS, RunConfig, apply_overrides, config_diff
from msflow.data import STUDY_DATASETS, DataError, get_info, locate
from msflow.files import read_json, write_json
from msflow.model import ConfigMismatchError

from msflow_study.experiments import Experiments, ExperimentError, load, recipe_overrides, relative

RECORD_FILE = "run.json"

BOOK_CHECKPOINTS = (
    "pneumoniamnist-gpu", "pneumoniamnist-cpu", "pneumoniamnist-cpu-w24",
    "bloodmnist-gpu", "bloodmnist-cpu", "bloodmnist-cpu-lam05-x6", "bloodmnist-cpu-lam05-x8",
    "retinamnist-gpu", "retinamnist-cpu", "retinamnist-cpu-lam03-auc", "retinamnist-cpu-lam03-auc-x2",
)
"""The runs whose selected weights (``best.pt``) a page of the book or the explorer loads: the only checkpoints kept in
git. The others are in the repository's history and would be published as a release asset (see the README)."""
TIME_BOX_FIELDS = ("train.max_steps", "train.eval_every", "train.checkpoint_every")
"""The fields a time-boxed session fits to its box (the GPU session); the rest of a run's config is its entry's."""


def run_path(runs_dir: str | os.PathLike, dataset: str, name: str) -> Path:
    """``<runs_dir>/<dataset>-<name>``."""
    return Path(runs_dir) / f"{get_info(dataset).flag}-{name}"


def run_config(name: str, dataset: str, overrides: dict[str, Any] | None = None,
               experiments: Experiments | None = None) -> RunConfig:
    """The configuration of run ``name`` on ``dataset``: its experiment entry's, else the recipe ``name``; then
    ``overrides``."""
    from msflow.config import RECIPES, make_config

    exp = experiments or load()
    if name in exp.runs:
        cfg = exp.config(name, dataset)
    elif name in RECIPES:
        cfg = make_config(dataset, name)
    else:
        raise ExperimentError(f"{name!r} is neither a run of the experiment files nor a recipe; runs: "
                              f"{', '.join(sorted(exp.runs))}; recipes: {', '.join(RECIPES)}")
    return apply_overrides(cfg, overrides or {})


def recorded_config(run: str | os.PathLike, cfg: RunConfig) -> RunConfig:
    """The configuration the run folder records when it differs from ``cfg`` at most in the fields a time box fits
    (:data:`TIME_BOX_FIELDS`, printed) and in its recipe's name; ``cfg`` when the folder has none. The speed fields
    (``msflow.config.SPEED_FIELDS``) are those of ``cfg``: a run may go on faster than it started.

    Raises:
        ConfigMismatchError: the folder holds a run of another configuration; the message lists the differences.
    """
    path = Path(run) / "config.json"
    if not path.exists():
        return cfg
    found = RunConfig.from_dict(read_json(path))
    found = apply_overrides(found, {k: v for k, (v, _) in config_diff(cfg, found).items() if k in SPEED_FIELDS})
    diff = {k: v for k, v in config_diff(cfg, found).items() if k != "recipe"}
    other = {k: v for k, v in diff.items() if k not in TIME_BOX_FIELDS}
    if other:
        raise ConfigMismatchError(
            f"{path.parent} holds a run of another configuration than the one asked for ("
            + "; ".join(f"{k}: {b!r} there, {a!r} asked" for k, (a, b) in other.items())
            + "): give the new run a name of its own in its experiment file, or start afresh with --force")
    if diff:
        print(f"{Path(run).name} records a length fitted to a time box: "
              + ", ".join(f"{k} = {b} (entry: {a})" for k, (a, b) in diff.items()))
    return found


def run_record(name: str, dataset: str, cfg: RunConfig, experiments: Experiments, commit: str) -> dict[str, Any]:
    """The ``run.json`` of run ``name`` on ``dataset`` trained with ``cfg`` at ``commit``."""
    from msflow.config import RECIPES

    flag = get_info(dataset).flag
    if name in experiments.runs:
        entry, recipe = experiments.entry(name), experiments.recipe(name)
        origin = {"experiment": relative(entry.file), "question": entry.question, "base": entry.base, "why": entry.why}
    elif name in RECIPES:
        recipe, origin = name, {"experiment": None, "question": None, "base": name, "why": f"the recipe {name} as it is"}
    else:
        raise ExperimentError(f"{name!r} is neither a run of the experiment files nor a recipe")
    return {"run": f"{flag}-{name}", "name": name, "dataset": flag, **origin, "recipe": recipe,
            "overrides": recipe_overrides(cfg, recipe), "seed": cfg.seed,
            "command": f"python -m msflow_study train {name} --dataset {flag}", "commit": commit}


def write_record(run_dir: str | os.PathLike, record: dict[str, Any]) -> bool:
    """Write ``run.json`` unless the folder holds the same record already; True if it was written."""
    path = Path(run_dir) / RECORD_FILE
    if path.exists():
        try:
            if read_json(path) == record:
                return False
        except ValueError:
            pass  # a damaged record is replaced
    write_json(path, record)
    return True


def train_run(name: str, dataset: str, runs_dir: str | os.PathLike, data_root: str | None = None, device: str = "auto",
              download: bool = False, force: bool = False, overrides: dict[str, Any] | None = None,
              experiments: Experiments | None = None, progress: bool = True):
    """Train run ``name`` of the experiment files (or the recipe ``name``) on ``dataset`` into its folder, after
    writing its ``run.json``; a finished run is reused, an unfinished one resumes.

    Raises:
        ConfigMismatchError: the folder holds a run of another configuration (the entry changed since it was
            trained): the message lists the differences.
    """
    from msflow.files import git_commit
    from msflow.train import train

    exp = experiments or load()
    cfg = run_config(name, dataset, overrides, exp)
    run = run_path(runs_dir, dataset, name)
    if not force:
        cfg = recorded_config(run, cfg)
    result = train(cfg, run, data_root, device, download, force, progress=progress)
    commit = read_json(run / "train.json").get("provenance", {}).get("git_commit") if (run / "train.json").exists() else None
    write_record(run, run_record(name, dataset, cfg, exp, commit or git_commit()) | {"checkpoint": checkpoint_entry(run)})
    return result


def checkpoint_entry(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``checkpoint`` of a run's ``run.json``: its selected weights' file, size and SHA-256, from ``best.pt`` when
    the folder has it, else as recorded before (a clone holds only :data:`BOOK_CHECKPOINTS`; the others are in the
    repository's history). A run that never had its weights recorded says so: its numbers cannot be checked again."""
    import hashlib

    run_dir = Path(run_dir)
    weights = run_dir / "best.pt"
    if weights.exists():
        digest = hashlib.sha256()
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return {"file": "best.pt", "bytes": weights.stat().st_size, "sha256": digest.hexdigest()}
    recorded = read_json(run_dir / RECORD_FILE).get("checkpoint") if (run_dir / RECORD_FILE).exists() else None
    return recorded or {"file": None, "sha256": None,
                        "note": "the selected weights were never recorded: the run's numbers cannot be checked again"}


def migrate(runs_dir: str | os.PathLike, experiments: Experiments | None = None, say=print) -> dict[str, str]:
    """Write the ``run.json`` of every run and ensemble folder of ``runs_dir`` from its recorded files; idempotent.

    A run's record comes from its ``config.json``, which must be exactly its entry's configuration (apart from the
    recipe's name, which older records call by the entry's); its commit is the one ``train.json`` recorded.

    Returns:
        ``{folder: "written" | "unchanged"}``.

    Raises:
        ExperimentError: a folder with no entry in the experiment files, or whose recorded configuration is not its
            entry's (the message lists the differences).
    """
    exp = experiments or load()
    out: dict[str, str] = {}
    for folder in sorted(Path(runs_dir).iterdir()):
        if not folder.is_dir() or folder.name in ("baselines", "gpu-sessions"):
            continue
        flag, name = _split_folder(folder.name)
        if name in exp.ensembles and (folder / "eval_test.json").exists():
            record = ensemble_record(name, flag, exp)
        elif (folder / "config.json").exists():
            recorded = RunConfig.from_dict(read_json(folder / "config.json"))
            entry_cfg = exp.config(name, flag) if name in exp.runs else None
            if entry_cfg is None:
                raise ExperimentError(f"{folder} has no entry {name!r} in the experiment files of {relative(exp.folder)}: "
                                      "add one (base, set, seed, datasets, why) or move the folder out of the runs")
            diff = {k: v for k, v in config_diff(entry_cfg, recorded).items() if k != "recipe"}
            if diff:
                raise ExperimentError(f"{folder} records another configuration than its entry {name!r} in "
                                      f"{relative(exp.entry(name).file)} ("
                                      + "; ".join(f"{k}: {b!r} recorded, {a!r} in the entry" for k, (a, b) in diff.items()) + ")")
            train = read_json(folder / "train.json") if (folder / "train.json").exists() else {}
            commit = train.get("provenance", {}).get("git_commit", "not recorded")
            record = run_record(name, flag, entry_cfg, exp, commit) | {"checkpoint": checkpoint_entry(folder)}
        else:
            continue
        out[folder.name] = "written" if write_record(folder, record) else "unchanged"
    say(f"run records: {sum(v == 'written' for v in out.values())} written, "
        f"{sum(v == 'unchanged' for v in out.values())} unchanged")
    return out


def ensemble_record(name: str, dataset: str, experiments: Experiments) -> dict[str, Any]:
    """The ``run.json`` of ensemble ``name`` on ``dataset``."""
    ens = experiments.ensembles[name]
    flag = get_info(dataset).flag
    if flag not in ens.members:
        raise ExperimentError(f"{relative(ens.file)}, ensemble {name!r} has no members on {flag}")
    return {"run": f"{flag}-{name}", "name": name, "dataset": flag, "experiment": relative(ens.file), "question": ens.question,
            "why": ens.why, "members": list(ens.members[flag]),
            "command": f"python -m msflow_study ensemble {name} --dataset {flag}"}


def _split_folder(folder: str) -> tuple[str, str]:
    """``"bloodmnist-cpu-lam05"`` -> ``("bloodmnist", "cpu-lam05")``."""
    flag, _, name = folder.partition("-")
    try:
        return get_info(flag).flag, name
    except ValueError as err:
        raise ExperimentError(f"run folder {folder!r} is not named <dataset>-<run>: {err}") from err


def data_status(dataset: str, root: str | None, size: int = 28) -> str:
    """``"ok"`` if the dataset's file of this size is present and verified, else the reason it is not."""
    try:
        locate(dataset, size, root)
        return "ok"
    except (DataError, FileNotFoundError) as err:
        return str(err)


EDITIONS = ("gpu-long", "gpu", "cpu-ens", "cpu-w24-ens", "cpu-lam03-auc-x2-ens", "cpu-lam05-x8", "cpu-lam05-x6", "cpu-w24", "cpu-lam03-auc-x2", "cpu-lam03-auc", "cpu-long", "cpu")
"""The runs and ensembles the book's results chapter shows (its editions), in this order."""


def editions(runs_dir: str | os.PathLike, first: str, datasets: Iterable[str] = STUDY_DATASETS) -> list[str]:
    """The rows of the results page: the editions (:data:`EDITIONS`) of which a finished run exists, in their order, and
    ``first`` (the run just executed) in its place among them, or before them if it is no edition, even without a run."""
    datasets = list(datasets)
    found = [e for e in EDITIONS if e == first  # a run is there when its test record is; the pages read it
             or any((run_path(runs_dir, ds, e) / "eval_test.json").exists() for ds in datasets)]
    return found if first in EDITIONS else [first] + found


def our_results(runs_dir: str | os.PathLike, name: str, datasets: Iterable[str] = STUDY_DATASETS,
                readout: bool = False) -> dict[str, dict[str, Any]]:
    """Evaluation records (``eval_test.json``) of the finished runs named ``name``, by dataset.

    With ``readout``, the test records of the readout views chosen on validation instead (the runs whose
    ``readout.json`` exists, see :func:`msflow_study.protocol.choose_readout`), each with its ``readout.json`` under ``"readout"``.
    """
    out = {}
    for ds in datasets:
        run = run_path(runs_dir, ds, name)
        if readout:
            if (run / "readout.json").exists():
                choice = read_json(run / "readout.json")
                out[get_info(ds).flag] = read_json(run / choice["test"]["file"]) | {"readout": choice}
        elif (run / "eval_test.json").exists():
            out[get_info(ds).flag] = read_json(run / "eval_test.json")
    return out


def seed_runs(runs_dir: str | os.PathLike, dataset: str, name: str) -> dict[int, Path]:
    """The finished runs of ``name`` on ``dataset`` by training seed, as each run's ``config.json`` records it: the
    run itself and every ``<dataset>-<name>-seed<K>`` (its entries of ``experiments/seeds.toml``)."""
    base = run_path(runs_dir, dataset, name)
    found = {}
    for run in [base, *sorted(base.parent.glob(f"{base.name}-seed*"))]:
        if run != base and not re.fullmatch(rf"{re.escape(base.name)}-seed\d+", run.name):
            continue  # e.g. <name>-seed1-other: another run
        if (run / "eval_test.json").exists() and (run / "config.json").exists():
            seed = int(read_json(run / "config.json")["seed"])
            if seed in found:
                raise ValueError(f"{found[seed]} and {run} were both trained with seed {seed}; one of them is misnamed")
            found[seed] = run
    return dict(sorted(found.items()))


def _one_network(run: Path) -> Path:
    """``run`` itself, or the first member of the ensemble recorded there."""
    record = run / "eval_test.json"
    if record.exists() and not (run / "best.pt").exists():
        members = read_json(record).get("ensemble", {}).get("members", [])
        if members:
            return run.parent / members[0]["run"]
    return run


def explorer_runs(runs_dir: str | os.PathLike, name: str, root: str | None, smoke: bool = False,
                  quick_steps: int = 300, device: str = "auto") -> dict[str, Path]:
    """Runs for the exploration page: the finished runs named ``name`` whose data is here (for an ensemble, such as
    ``cpu-ens``, its first member: one network of the headline per dataset); if there are none, a quick
    PneumoniaMNIST run (the ``cpu`` recipe cut to ``quick_steps`` steps) is trained first."""
    if smoke:
        from msflow_study.sandbox import smoke_run

        return {get_info(d).flag: smoke_run(d) for d in ("pneumoniamnist", "bloodmnist")}
    found = {get_info(d).flag: _one_network(run_path(runs_dir, d, name)) for d in STUDY_DATASETS}
    found = {f: p for f, p in found.items() if (p / "best.pt").exists() and data_status(f, root) == "ok"}
    if found:
        return found
    from msflow.config import make_config
    from msflow.train import train

    cfg = make_config("pneumoniamnist", "cpu", {"train.max_steps": quick_steps, "train.eval_every": quick_steps})
    path = run_path(runs_dir, "pneumoniamnist", "quick")
    train(cfg, path, root, device)
    return {"pneumoniamnist": path}
