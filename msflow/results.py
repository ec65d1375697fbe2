"""Saving and loading runs: checkpoints, results files and their provenance.

Everything is written atomically (to a temporary file in the same folder, then renamed), so an
interrupted write never leaves a half file behind. A run folder holds::

    config.json          the resolved RunConfig
    train_state.pt       resumable training state (weights, EMA, optimiser, history)
    best.pt, final.pt    EMA weights selected on validation / at the end of training
    train.json           training results: history, wall time, images seen, provenance
    eval_<split>.json    evaluation results (metrics with mean and std), provenance
    predictions_<split>.npz   per-image distances of every stochastic evaluation
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msflow import __version__
from msflow.config import RunConfig, config_diff
from msflow.model import Components, build

CHECKPOINT_FORMAT = "msflow-weights/1"


class ConfigMismatchError(ValueError):
    """A checkpoint or run folder was made with another configuration than the one asked for."""


def git_commit(path: str | os.PathLike | None = None) -> str:
    """The current git commit of the msflow checkout (``-dirty`` if uncommitted changes), or ``unknown``.

    A copy of the tree sent to another machine (a GPU machine, say) reports the commit named by
    ``$MSFLOW_GIT_COMMIT``, suffixed ``(declared)``, whenever that variable is set.
    """
    cwd = Path(path) if path else Path(__file__).resolve().parent
    declared = os.environ.get("MSFLOW_GIT_COMMIT")
    if declared:  # declared wins: a copied tree may carry a stale git folder (the GPU session's did)
        return f"{declared} (declared)"
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return f"{declared} (declared)" if declared else "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return f"{declared} (declared)" if declared else "unknown"


def device_name(device: torch.device | str) -> str:
    """A human-readable device name (GPU model, or CPU with its core count)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Where and with what a result was computed."""
    import diffusers

    return {
        "msflow_version": __version__,
        "git_commit": git_commit(),
        "torch_version": str(torch.__version__),
        "diffusers_version": diffusers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device_name(device),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then rename the result to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write JSON (numpy scalars and arrays are converted)."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, default=_json_default)
            f.write("\n")

    atomic_write(path, write)


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Atomic ``torch.save``."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_weights(
    path: str | os.PathLike,
    model: torch.nn.Module,
    cfg: RunConfig,
    meta: dict[str, Any] | None = None,
    half: bool = False,
) -> None:
    """Save a model's weights with its config and provenance.

    Args:
        half: store fp16 weights (half the size; for checkpoints that are committed and published).
    """
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone() for k, v in model.state_dict().items()}
    torch_save({"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "meta": meta or {}, "weights": state}, path)


@dataclass(frozen=True)
class LoadedModel:
    """A model rebuilt from a checkpoint.

    Attributes:
        components: model (in eval mode, on the requested device), class code and dataset info.
        config: the configuration it was trained with.
        meta: what was saved beside the weights (step, validation metrics, provenance).
    """

    components: Components
    config: RunConfig
    meta: dict[str, Any]


def load_weights(path: str | os.PathLike, device: torch.device | str = "cpu", expect: RunConfig | None = None) -> LoadedModel:
    """Rebuild a model from :func:`save_weights` output.

    Args:
        expect: if given, the checkpoint's config must match it in data, model, flow and latent (the fields
            that decide what the weights mean); otherwise :class:`ConfigMismatchError` lists the
            differences.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train the run first (msflow train) or check the path")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise ValueError(f"{path} is not a readable msflow checkpoint ({err}); delete it and train or download it again") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an msflow weights file (format {ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt)!r}, expected {CHECKPOINT_FORMAT})")
    cfg = RunConfig.from_dict(ckpt["config"])
    if expect is not None:
        check_compatible(cfg, expect, what=str(path))
    comps = build(cfg, device)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["weights"].items()}
    comps.model.load_state_dict(weights)
    comps.model.to(device).eval()
    return LoadedModel(comps, cfg, ckpt.get("meta", {}))


def check_compatible(found: RunConfig, expected: RunConfig, what: str, sections: tuple[str, ...] = ("data", "model", "flow", "latent")) -> None:
    """Raise :class:`ConfigMismatchError` if the configs differ in ``sections``."""
    diff = {k: v for k, v in config_diff(found, expected).items() if k.split(".")[0] in sections}
    if diff:
        lines = "; ".join(f"{k}: {a!r} there, {b!r} asked" for k, (a, b) in diff.items())
        raise ConfigMismatchError(
            f"{what} was made with another configuration ({lines}). Use a new output folder, "
            f"pass the matching profile/overrides, or start afresh with --force."
        )


def save_predictions(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Atomically save named arrays (``.npz``)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(path, write)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")
