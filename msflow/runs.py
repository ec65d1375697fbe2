"""Operations on a run folder (see :mod:`msflow.files` for its layout): load, evaluate, read out many times, generate."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msflow import distributed, metrics
from msflow.config import EvalConfig, RunConfig
from msflow.data import load_split
from msflow.evaluate import EvalResult, Predictions, bf16_autocast, evaluate
from msflow.files import provenance, read_json, run_lock, save_predictions, write_json
from msflow.model import LoadedModel, load_weights
from msflow.sampler import Generation, generate
from msflow.train import resolve_device
from msflow.uncertainty import MultiPass, multi_pass

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
    reuse: bool = True,
) -> tuple[EvalResult, dict[str, Any]]:
    """Evaluate a run on a split and write ``eval_<split>.json`` and ``predictions_<split>.npz``.

    Args:
        eval_overrides: fields of :class:`~msflow.config.EvalConfig` to change (repeats, steps, solver...).
        reuse: return the recorded evaluation when the results files hold one of the same checkpoint with the
            same settings (so that a run evaluated on a GPU is rendered, not recomputed, on a laptop).

    Returns:
        The evaluation and the results record written to disk.
    """
    run_dir = Path(run_dir)
    ctx, device = distributed.join(resolve_device(device))  # under torchrun the processes share the batches
    loaded = load_run(run_dir, checkpoint, device)
    cfg = loaded.config
    ecfg: EvalConfig = dataclasses.replace(cfg.eval, **(eval_overrides or {}))
    suffix = eval_suffix(split, checkpoint, ecfg.views)
    if reuse:
        found = load_evaluation(run_dir, split, checkpoint, ecfg.views)
        if found is not None:
            result, record = found
            recorded = dataclasses.replace(EvalConfig(**record["eval"]), batch_size=ecfg.batch_size)  # older records lack newer fields
            same = recorded == ecfg
            if same and record["checkpoint"]["step"] == loaded.meta.get("step") and RunConfig.from_dict(record["config"]) == cfg:
                return result, record
    target = load_split(cfg.data.dataset, split, cfg.data.size, data_root, download)
    val = load_split(cfg.data.dataset, "val", cfg.data.size, data_root, download)
    comps = loaded.components
    result = evaluate(comps, target, val, ecfg, seed=cfg.seed, progress=progress and ctx.main, ctx=ctx)
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
        "provenance": provenance(next(comps.model.parameters()).device) | ({"world_size": ctx.world} if ctx.world > 1 else {}),
    }
    if ctx.main:  # every process has the whole evaluation; one writes it
        with run_lock(run_dir):
            write_json(run_dir / f"eval_{suffix}.json", record)
            save_predictions(
                run_dir / f"predictions_{suffix}.npz",
                distances=np.stack([p.distances for p in result.passes]).astype(np.float16),
                labels=result.passes[0].labels,
            )
    ctx.barrier()
    return result, record


def eval_suffix(split: str, checkpoint: str, views: str = "none") -> str:
    """File suffix of an evaluation: the split, the checkpoint unless it is the selected one, and the readout
    views unless they are the reference's (so that a readout over views is recorded beside the reference's)."""
    return split + ("" if checkpoint == "best" else f"_{checkpoint}") + ("" if views == "none" else f"_{views}")


def load_evaluation(run_dir: str | Path, split: str = "test", checkpoint: str = "best",
                    views: str = "none") -> tuple[EvalResult, dict[str, Any]] | None:
    """The evaluation recorded by :func:`evaluate_run` (metrics from the record, passes from the predictions
    file), or None if the run has none for that split, checkpoint and readout views."""
    run_dir = Path(run_dir)
    suffix = eval_suffix(split, checkpoint, views)
    rec_path, pred_path = run_dir / f"eval_{suffix}.json", run_dir / f"predictions_{suffix}.npz"
    if not (rec_path.exists() and pred_path.exists()):
        return None
    record = read_json(rec_path)
    with np.load(pred_path) as z:
        distances, labels = z["distances"].astype(np.float32), z["labels"]
    m = record["metrics"]
    arc = m["accuracy_rejection"]
    passes = [Predictions(d, d.argmin(1), d.min(1), labels) for d in distances]
    result = EvalResult(
        mean=m["mean"], std=m["std"], per_pass=m["per_pass"], temperature=m["temperature"],
        arc_fractions=np.asarray(arc["fractions"]),
        arc_accuracy=np.stack([metrics.accuracy_rejection(p.correct, p.uncertainty, np.asarray(arc["fractions"])) for p in passes]),
        confusion=np.asarray(m["confusion"]), passes=passes, settings=m["settings"],
    )
    return result, record


def multi_pass_run(
    run_dir: str | Path,
    split: str,
    draws: int,
    seed: int,
    data_root: str | Path | None = None,
    device: str | torch.device = "auto",
    loaded: LoadedModel | None = None,
) -> MultiPass:
    """``draws`` stochastic readouts of a split by a run's best weights (see :func:`msflow.uncertainty.multi_pass`),
    kept in ``multipass_<split>.npz`` (distances in float16, also in what a first call returns); a recorded file
    with at least as many draws of the same seed and checkpoint is reused (its first ``draws``)."""
    run_dir = Path(run_dir)
    path = run_dir / f"multipass_{split}.npz"
    ctx, device = distributed.join(resolve_device(device))  # under torchrun the processes share the batches
    loaded = loaded or load_run(run_dir, "best", device)
    step = int(loaded.meta.get("step") or -1)
    if path.exists():
        with np.load(path) as z:
            if int(z["seed"]) == seed and int(z["step"]) == step and z["distances"].shape[0] >= draws:
                return MultiPass(z["distances"].astype(np.float32), z["spread"], z["labels"]).first(draws)
    cfg = loaded.config
    target = load_split(cfg.data.dataset, split, cfg.data.size, data_root)
    with bf16_autocast(next(loaded.components.model.parameters()).device):
        mp = multi_pass(loaded.components, target, draws, cfg.eval.steps, cfg.eval.solver, seed=seed,
                        batch_size=cfg.eval.batch_size, ctx=ctx)
    # the distances are kept in float16; what is returned is what a later call reads, so that a page computed
    # from a fresh readout and the same page executed again from the file give the same numbers
    mp = MultiPass(mp.distances.astype(np.float16).astype(np.float32), mp.spread.astype(np.float32), mp.labels)
    if not ctx.main:  # every process has the readouts; one writes them
        ctx.barrier()
        return mp
    save_predictions(path, distances=mp.distances.astype(np.float16), spread=mp.spread,
                     labels=mp.labels, seed=np.array(seed), step=np.array(step), draws=np.array(draws))
    write_json(path.with_suffix(".json"), {"split": split, "draws": draws, "seed": seed, "checkpoint_step": step,
                                           "md5": target.md5, "synthetic": target.synthetic,
                                           "provenance": provenance(next(loaded.components.model.parameters()).device)})
    ctx.barrier()
    return mp


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
