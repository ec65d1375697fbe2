"""Operations on a run folder (see :mod:`msflow.results` for its layout): evaluate it, generate from it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msflow.config import EvalConfig
from msflow.data import load_split
from msflow.evaluate import EvalResult, bf16_autocast, evaluate
from msflow.results import LoadedModel, load_weights, provenance, read_json, save_predictions, write_json
from msflow.sampler import Generation, generate
from msflow.train import resolve_device

CHECKPOINTS = ("best", "final")


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "auto") -> LoadedModel:
    """Load a run's EMA weights: ``best`` (chosen on validation) or ``final``."""
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    return load_weights(Path(run_dir) / f"{checkpoint}.pt", resolve_device(device))


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    checkpoint: str = "best",
    data_root: str | Path | None = None,
    device: str | torch.device = "auto",
    download: bool = False,
    eval_overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[EvalResult, dict[str, Any]]:
    """Evaluate a run on a split and write ``eval_<split>.json`` and ``predictions_<split>.npz``.

    Args:
        eval_overrides: fields of :class:`~msflow.config.EvalConfig` to change (repeats, steps, solver...).

    Returns:
        The evaluation and the results record written to disk.
    """
    run_dir = Path(run_dir)
    loaded = load_run(run_dir, checkpoint, device)
    cfg = loaded.config
    ecfg: EvalConfig = dataclasses.replace(cfg.eval, **(eval_overrides or {}))
    target = load_split(cfg.data.dataset, split, cfg.data.size, data_root, download)
    val = load_split(cfg.data.dataset, "val", cfg.data.size, data_root, download)
    comps = loaded.components
    result = evaluate(comps, target, val, ecfg, seed=cfg.seed, progress=progress)
    train_record = read_json(run_dir / "train.json") if (run_dir / "train.json").exists() else {}
    record = {
        "run": run_dir.name,
        "dataset": {"flag": target.info.flag, "title": target.info.title, "split": split, "n": len(target),
                    "md5": target.md5, "synthetic": target.synthetic},
        "checkpoint": {"name": checkpoint, "step": loaded.meta.get("step"), "val": loaded.meta.get("val")},
        "config": cfg.to_dict(),
        "eval": dataclasses.asdict(ecfg),
        "metrics": result.to_dict(),
        "training": {k: train_record.get(k) for k in ("steps", "images_seen", "train_seconds", "images_per_second", "parameters")}
        | {k: train_record.get("provenance", {}).get(k) for k in ("device", "git_commit")},
        "provenance": provenance(next(comps.model.parameters()).device),
    }
    suffix = split if checkpoint == "best" else f"{split}_{checkpoint}"
    write_json(run_dir / f"eval_{suffix}.json", record)
    save_predictions(
        run_dir / f"predictions_{suffix}.npz",
        distances=np.stack([p.distances for p in result.passes]).astype(np.float16),
        labels=result.passes[0].labels,
    )
    return result, record


def generate_from_run(
    loaded: LoadedModel,
    labels: torch.Tensor,
    steps: int | None = None,
    solver: str | None = None,
    seed: int = 0,
    batch_size: int = 256,
    keep_trajectory: bool = False,
) -> Generation:
    """Generate images of ``labels`` with a loaded run (steps and solver default to its eval config).

    Images (and trajectory frames) are returned in pixel space, decoded by the VAE for a latent run.
    """
    cfg, comps = loaded.config, loaded.components
    model = comps.model
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    labels = labels.to(device)
    parts = []
    for i in range(0, len(labels), batch_size):
        with bf16_autocast(device):
            parts.append(
                generate(model, comps.code, labels[i : i + batch_size], model.image_channels, model.resolution,
                         steps or cfg.eval.gen_steps, solver or cfg.eval.gen_solver, gen, keep_trajectory)
            )
    images = comps.to_image(torch.cat([p.images for p in parts]))
    traj = None
    if keep_trajectory:
        frames = torch.cat([p.trajectory for p in parts], dim=1)  # (T, B, C, h, w)
        traj = torch.stack([comps.to_image(f) for f in frames])
    return Generation(images, labels, traj, parts[0].nfe)
