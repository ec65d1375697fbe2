"""The study's experiments as data: one TOML file per question under ``experiments/``, one entry per run.

A file states its question and its runs::

    question = "Does weighting the label loss more help the small CPU network?"

    [runs.cpu-lam05]
    base = "cpu"                       # a recipe of msflow.config.RECIPES, or another run of any file
    set = { "flow.lam" = 0.5 }         # typed section.field overrides, as `msflow train --set` takes them
    datasets = ["bloodmnist", "retinamnist"]
    why = "Equal weight on the image and the label loss."

    [runs.cpu-lam05.set_for.bloodmnist]   # overrides for one dataset only (a length fitted to a time box)
    "train.max_steps" = 500

    [ensembles.cpu-ens]                # seeds of one run read together (msflow_study.protocol.ensemble_runs)
    why = "Every seed trained of each dataset's CPU recipe."
    members.bloodmnist = ["cpu-lam05-x6", "cpu-lam05-x6-seed1"]

A run's entry ``seed`` (default: its base's, 0 for a recipe) is the seed of every random draw. The run of entry
``NAME`` on dataset ``D`` lives in ``<runs_dir>/D-NAME``. Its configuration is the root recipe's, with the overrides
of every entry on the way from the root down to it applied in that order, so a run differs from its base exactly by
its own ``set``: the experiment says what changed, and nothing else can.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from msflow.config import RECIPES, RunConfig, apply_overrides, make_config
from msflow.data import get_info

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS_DIR = ROOT / "experiments"

RUN_KEYS = {"base", "set", "set_for", "seed", "datasets", "why"}
ENSEMBLE_KEYS = {"members", "why"}
FILE_KEYS = {"question", "runs", "ensembles"}


class ExperimentError(ValueError):
    """An experiment file or entry that cannot be read or resolved; the message names the file and the entry."""


@dataclass(frozen=True)
class RunEntry:
    """One run of an experiment file.

    Attributes:
        name: the run's name; its folder on dataset ``D`` is ``D-<name>``.
        file: the experiment file that defines it.
        question: that file's question.
        base: a recipe (``msflow.config.RECIPES``) or another run's name.
        set: overrides on top of the base, ``{"section.field": value}``.
        set_for: overrides for single datasets, ``{dataset: {"section.field": value}}``.
        seed: the seed, or None to keep the base's.
        datasets: the datasets it is run on.
        why: one line: what the run asks.
    """

    name: str
    file: Path
    question: str
    base: str
    set: dict[str, Any] = field(default_factory=dict)
    set_for: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int | None = None
    datasets: tuple[str, ...] = ()
    why: str = ""

    @property
    def where(self) -> str:
        return f"{relative(self.file)}, run {self.name!r}"


@dataclass(frozen=True)
class EnsembleEntry:
    """Seeds of one run read together: ``members[dataset]`` are run names, each of a distinct seed."""

    name: str
    file: Path
    question: str
    members: dict[str, tuple[str, ...]]
    why: str = ""


@dataclass(frozen=True)
class Experiments:
    """Every run and ensemble entry of an experiments folder, checked: known keys, known bases, no cycle, no name twice."""

    folder: Path
    runs: dict[str, RunEntry]
    ensembles: dict[str, EnsembleEntry]

    def entry(self, name: str) -> RunEntry:
        """The run entry ``name``; an error lists the names that exist."""
        if name not in self.runs:
            raise ExperimentError(f"no run {name!r} in the experiment files of {relative(self.folder)}; "
                                  f"runs there: {', '.join(sorted(self.runs)) or 'none'}")
        return self.runs[name]

    def chain(self, name: str) -> list[RunEntry]:
        """The entries from the root (whose base is a recipe) down to ``name``."""
        out, seen = [], []
        entry = self.entry(name)
        while True:
            if entry.name in seen:
                raise ExperimentError(f"{entry.where}: its bases form a cycle ({' -> '.join(seen + [entry.name])})")
            seen.append(entry.name)
            out.append(entry)
            if entry.base in self.runs and entry.base != entry.name:
                entry = self.runs[entry.base]
            else:
                return out[::-1]

    def recipe(self, name: str) -> str:
        """The recipe at the root of ``name``'s chain of bases."""
        return self.chain(name)[0].base

    def config(self, name: str, dataset: str) -> RunConfig:
        """The resolved configuration of run ``name`` on ``dataset``.

        Raises:
            ExperimentError: the run is not defined for ``dataset``, or an override names an unknown field or a value
                of the wrong type (the message names the file and the entry).
        """
        flag = get_info(dataset).flag
        entry = self.entry(name)
        if entry.datasets and flag not in entry.datasets:
            raise ExperimentError(f"{entry.where} is run on {', '.join(entry.datasets)}, not on {flag}; "
                                  "add the dataset to its datasets to run it there")
        chain = self.chain(name)
        seed = next((e.seed for e in reversed(chain) if e.seed is not None), 0)
        cfg = make_config(flag, chain[0].base, seed=seed)
        for e in chain:
            for overrides in (e.set, e.set_for.get(flag, {})):
                try:
                    cfg = apply_overrides(cfg, overrides)
                except (ValueError, TypeError) as err:
                    raise ExperimentError(f"{e.where}: {err}") from err
        return cfg

    def overrides(self, name: str, dataset: str) -> dict[str, Any]:
        """``name``'s configuration on ``dataset`` as the overrides of its root recipe (``{"section.field": value}``)."""
        cfg = self.config(name, dataset)
        return recipe_overrides(cfg, self.recipe(name))


def recipe_overrides(cfg: RunConfig, recipe: str) -> dict[str, Any]:
    """The fields in which ``cfg`` differs from ``recipe`` on the same dataset and seed, as ``{"section.field": value}``."""
    from msflow.config import config_diff

    base = make_config(cfg.data.dataset, recipe, seed=cfg.seed)
    return {k: b for k, (_, b) in config_diff(base, dataclasses.replace(cfg, recipe=recipe)).items()}


def load(folder: str | Path | None = None) -> Experiments:
    """Read every ``*.toml`` of ``folder`` (default: the repository's ``experiments/``) into checked entries.

    Raises:
        ExperimentError: a file that is not TOML, an unknown key, a missing ``base``/``why``/``datasets``, an unknown base
            or dataset, a name defined twice, a cycle of bases, or an override that does not resolve; the message
            names the file and the entry.
    """
    folder = Path(folder) if folder is not None else EXPERIMENTS_DIR
    files = sorted(folder.glob("*.toml"))
    if not files:
        raise ExperimentError(f"no experiment files (*.toml) in {folder}")
    runs: dict[str, RunEntry] = {}
    ensembles: dict[str, EnsembleEntry] = {}
    for path in files:
        try:
            doc = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ExperimentError(f"{relative(path)} is not valid TOML ({err}); fix the file") from err
        _check_keys(doc, FILE_KEYS, f"{relative(path)}")
        question = doc.get("question")
        if not isinstance(question, str) or not question.strip():
            raise ExperimentError(f"{relative(path)} has no question = \"...\" line; say what its runs ask")
        for name, raw in doc.get("runs", {}).items():
            where = f"{relative(path)}, run {name!r}"
            if name in runs:
                raise ExperimentError(f"{where} is also defined in {relative(runs[name].file)}; a run name is defined once")
            runs[name] = _run_entry(name, path, question, raw, where)
        for name, raw in doc.get("ensembles", {}).items():
            where = f"{relative(path)}, ensemble {name!r}"
            if name in ensembles or name in runs:
                raise ExperimentError(f"{where} is defined twice; a name is defined once")
            _check_keys(raw, ENSEMBLE_KEYS, where)
            members = {get_info(d).flag: tuple(m) for d, m in raw.get("members", {}).items()}
            ensembles[name] = EnsembleEntry(name, path, question, members, raw.get("why", ""))
    exp = Experiments(folder, runs, ensembles)
    for entry in runs.values():
        if entry.base not in runs and entry.base not in RECIPES:
            raise ExperimentError(f"{entry.where}: unknown base {entry.base!r}; a base is a recipe "
                                  f"({', '.join(RECIPES)}) or a run of the experiment files")
        for flag in entry.datasets:
            exp.config(entry.name, flag)  # every override resolves on every dataset it is run on
    for ens in ensembles.values():
        for flag, names in ens.members.items():
            for n in names:
                if n not in runs:
                    raise ExperimentError(f"{relative(ens.file)}, ensemble {ens.name!r}: member {n!r} is no run of the experiment files")
    return exp


def _run_entry(name: str, path: Path, question: str, raw: Mapping[str, Any], where: str) -> RunEntry:
    _check_keys(raw, RUN_KEYS, where)
    for key in ("base", "why", "datasets"):
        if not raw.get(key):
            raise ExperimentError(f"{where} has no {key}; every run names its base, its datasets and why it exists")
    try:
        datasets = tuple(get_info(d).flag for d in raw["datasets"])
    except ValueError as err:
        raise ExperimentError(f"{where}: {err}") from err
    seed = raw.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ExperimentError(f"{where}: seed must be a non-negative integer, got {seed!r}")
    set_for = {}
    for d, over in raw.get("set_for", {}).items():
        flag = get_info(d).flag
        if flag not in datasets:
            raise ExperimentError(f"{where}: set_for names {flag}, which is not among its datasets {list(datasets)}")
        set_for[flag] = dict(over)
    return RunEntry(name, path, question, raw["base"], dict(raw.get("set", {})), set_for, seed, datasets, raw["why"])


def _check_keys(raw: Any, allowed: set[str], where: str) -> None:
    if not isinstance(raw, Mapping):
        raise ExperimentError(f"{where} is not a table")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ExperimentError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")


def relative(path: Path) -> str:
    """``path`` relative to the repository when it is inside it, as messages and records name files."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
