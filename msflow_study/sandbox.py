"""Smoke mode: the study's notebooks and tests on synthetic data and tiny runs, trained once in seconds."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from msflow.data import STUDY_DATASETS, get_info, write_synthetic

from msflow_study.registry import run_path


def smoke_dir() -> Path:
    """Where smoke mode keeps its synthetic data and runs: ``$MSFLOW_SMOKE_DIR``, else a temp folder."""
    return Path(os.environ.get("MSFLOW_SMOKE_DIR") or Path(tempfile.gettempdir()) / "msflow-smoke")


def data_root(smoke: bool, root: str = "", datasets: Iterable[str] = STUDY_DATASETS) -> str | None:
    """The data root a notebook uses: synthetic files in smoke mode, else ``root`` (``""``: the default)."""
    if not smoke:
        return root or None
    out = smoke_dir() / "data"
    for name in datasets:
        flag = get_info(name).flag
        if not (out / f"{flag}.npz").exists():
            write_synthetic(out, flag, 28, seed=0)
    return str(out)


def smoke_run(dataset: str, seed: int = 0) -> Path:
    """A trained smoke run of ``dataset`` (trained once, in seconds, on synthetic data); ``smoke-seed<K>`` for seed K > 0."""
    from msflow.config import make_config
    from msflow.model import ConfigMismatchError
    from msflow.train import train

    cfg = make_config(dataset, "smoke", seed=seed)
    path = run_path(smoke_dir() / "runs", dataset, "smoke" + (f"-seed{seed}" if seed else ""))
    root = data_root(True, datasets=[dataset])
    try:
        train(cfg, path, root, "cpu", progress=False)
    except ConfigMismatchError:  # left by another msflow version: smoke runs are disposable
        train(cfg, path, root, "cpu", progress=False, force=True)
    return path


def smoke_results(datasets: Iterable[str] = STUDY_DATASETS, seeds: int = 1) -> Path:
    """Smoke runs of ``datasets``, trained and evaluated on the test split; returns their runs folder. With ``seeds``
    above 1, also ``smoke-seed1`` ... and their ensemble ``smoke-ens`` (every seed evaluated on validation too)."""
    from msflow.runs import evaluate_run
    from msflow_study.protocol import ensemble_runs

    for ds in datasets:
        root = data_root(True, datasets=[ds])
        members = [smoke_run(ds, seed) for seed in range(seeds)]
        for run in members:
            for split in ("test", "val") if seeds > 1 else ("test",):
                if not (run / f"eval_{split}.json").exists():
                    evaluate_run(run, split, data_root=root, device="cpu", progress=False)
        ens = run_path(smoke_dir() / "runs", ds, "smoke-ens")
        if seeds > 1 and not (ens / "eval_test.json").exists():
            ensemble_runs(members, ens)
    return smoke_dir() / "runs"
