"""Plain file I/O for run folders: atomic writes, JSON and arrays, and the provenance every record carries.

Everything is written atomically (to a temporary file in the same folder, then renamed), so an
interrupted write never leaves a half file behind. A run folder holds::

    config.json          the resolved RunConfig
    train_state.pt       resumable training state (weights, EMA, optimiser, history)
    best.pt, final.pt    EMA weights selected on validation / at the end of training (:mod:`msflow.model`)
    train.json           training results: history, wall time, images seen, provenance
    eval_<split>.json    evaluation results (metrics with mean and std), provenance
    predictions_<split>.npz   per-image distances of every stochastic evaluation

This module imports nothing else of msflow but its version, so every other module may use it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from msflow import __version__


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


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process's umask (os.umask can only set it)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then rename the result to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes the file private (0600); a results file is an ordinary file
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


def write_text_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Atomically write ``text`` to ``path`` unless the file holds it already; True if it was written."""
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return True


class RecordError(ValueError):
    """A results file that cannot be read; the message names the file and how to recover."""


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON results file.

    Raises:
        FileNotFoundError: there is no such file.
        RecordError: the file is damaged (truncated, not JSON); the message names it and says how to recover.
    """
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        detail = f"{err.msg} at line {err.lineno}" if isinstance(err, json.JSONDecodeError) else str(err)
        raise RecordError(f"{path} is damaged (not valid JSON: {detail}); restore it with `git checkout -- {path}` if it is "
                          "committed, or delete it so that it is computed again") from err


class RunLockedError(RuntimeError):
    """Another live process is writing the run folder."""


_HELD: dict[Path, tuple[Any, int]] = {}


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the advisory lock of a run folder while the block writes it (``<run_dir>/.lock``, holding the writer's PID,
    host and start time). Re-entrant within a process. The lock is the kernel's (``flock``): it goes with the process
    that held it, so the lock file of a killed process is taken over, with a message.

    Raises:
        RunLockedError: another live process holds the lock; the message names it.
    """
    run_dir = Path(run_dir).resolve()
    if run_dir in _HELD:
        handle, depth = _HELD[run_dir]
        _HELD[run_dir] = (handle, depth + 1)
        try:
            yield
        finally:
            handle, depth = _HELD[run_dir]
            _HELD[run_dir] = (handle, depth - 1)
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".lock"
    handle = open(path, "a+")
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no advisory locks
        fcntl = None
    if fcntl is not None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLockedError(f"{run_dir} is being written by {holder}; wait until it ends or stop it, "
                                 "or write this run into another folder") from None
    handle.seek(0)
    previous = handle.read().strip()
    if previous:
        print(f"{run_dir}: took over the lock left by {previous}, which no longer holds it")
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {platform.node()} since {_dt.datetime.now().isoformat(timespec='seconds')}\n")
    handle.flush()
    _HELD[run_dir] = (handle, 1)
    try:
        yield
    finally:
        _HELD.pop(run_dir, None)
        handle.seek(0)
        handle.truncate()  # an empty lock file: released cleanly
        handle.close()


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Atomic ``torch.save``."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


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
