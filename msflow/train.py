"""Training: AdamW with a cosine warm-up and cosine decay, EMA weights, validation-based selection,
atomic resumable checkpoints.

Randomness is stateless per step: step ``n`` draws its batch from epoch ``n // steps_per_epoch``'s
permutation (seeded by the run seed and the epoch) and its noises from a generator seeded by the run
seed and ``n``. A resumed run therefore continues exactly as an uninterrupted one would, and the
resumable state is just weights, EMA, optimiser, step and history. An interrupt (Ctrl-C or SIGTERM)
saves that state before stopping; a hard kill loses at most ``checkpoint_every`` steps.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
import signal
import threading
import time
import contextlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm.auto import tqdm

from msflow import distributed, metrics
from msflow.config import RunConfig, TrainConfig, config_diff
from msflow.data import load_split, random_flips, to_model_input, uses_flips
from msflow.evaluate import predict
from msflow.flow import flow_loss, sample_t
from msflow.latent import posterior_cache
from msflow.model import build
from msflow.files import RecordError, device_name, provenance, read_json, run_lock, torch_save, write_json
from msflow.model import check_compatible, save_weights

STATE_FILE = "train_state.pt"


def lr_at(step: int, total: int, peak: float, warmup_frac: float) -> float:
    """Learning rate of step ``step`` (0-based): cosine warm-up to ``peak``, then cosine decay to 0."""
    warmup = int(round(warmup_frac * total))
    if step < warmup:
        return peak * 0.5 * (1 - math.cos(math.pi * (step + 1) / warmup))
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def ema_decay_at(step: int, decay: float, warmup: bool) -> float:
    """EMA decay of update ``step`` (0-based); with warm-up, ``min(decay, (1 + n) / (10 + n))``."""
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model``, parameter by parameter."""
    with torch.no_grad():  # one multi-tensor kernel rather than one launch per parameter
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


def epoch_permutation(epoch: int, n: int, seed: int) -> torch.Tensor:
    """The seeded order of the training images in epoch ``epoch``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def batch_indices(step: int, n: int, batch_size: int, seed: int, perm: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of step ``step``'s batch: epochs of a seeded permutation, the last batch possibly short.

    ``perm``, the epoch's :func:`epoch_permutation` already on the training device, saves drawing it again
    (and, on a GPU, copying it from the host, which makes the host wait for the device) at every step.
    """
    per_epoch = math.ceil(n / batch_size)
    epoch, i = divmod(step, per_epoch)
    if perm is None:
        perm = epoch_permutation(epoch, n, seed)
    return perm[i * batch_size : (i + 1) * batch_size]


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The generator of step ``step``'s noises (time, flips, code dequantisation, Gaussian noises)."""
    return torch.Generator(device).manual_seed((seed + 1) * 2_147_483_647 + step)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes:
        run_dir: the run folder.
        steps: optimisation steps done.
        images_seen: training images processed.
        train_seconds: wall time spent in training steps (validation excluded).
        total_seconds: wall time including validation and checkpointing.
        best: the validation record whose EMA weights are in ``best.pt``.
        history: one record per validation (step, images, seconds, loss, val metrics).
    """

    run_dir: Path
    steps: int
    images_seen: int
    train_seconds: float
    total_seconds: float
    best: dict[str, Any]
    history: list[dict[str, Any]]


def train_autocast(tc: TrainConfig, device: torch.device) -> torch.autocast:
    """The autocast of a training step: bfloat16 on CUDA when ``tc.bf16``, on the CPU when ``tc.cpu_bf16``, else off.

    On the CPU, bfloat16 needs hardware support (AVX512-BF16 or AMX) to pay; time both settings back to back on your
    machine (``benchmarks/recipe_cost.py --set train.cpu_bf16=true``), as the book's measurement of it was made.
    """
    on = tc.bf16 if device.type == "cuda" else tc.cpu_bf16 and device.type == "cpu"
    return torch.autocast("cuda" if device.type == "cuda" else "cpu", dtype=torch.bfloat16, enabled=on)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no GPU; use --device cpu or auto")
    return device


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    data_root: str | Path | None = None,
    device: str | torch.device = "auto",
    download: bool = False,
    force: bool = False,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train (or resume) a run in ``run_dir``.

    Args:
        cfg: the resolved run configuration.
        run_dir: output folder; if it holds an unfinished run of the same config, training resumes.
        data_root: MedMNIST data root (see :mod:`msflow.data`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        download: allow downloading missing data.
        force: discard whatever ``run_dir`` holds and start afresh.
        progress: show a tqdm bar.
        on_step: called with the number of finished steps after each step (for tests and hooks).

    Under ``torchrun`` the run is trained by every process together (see :mod:`msflow.distributed`): each trains on
    its share of every global batch, and the main process alone writes the run folder. A run resumes on any number
    of processes, whatever number wrote its state.

    Raises:
        ConfigMismatchError: ``run_dir`` holds a run of another configuration.
        RunLockedError: another live process is writing ``run_dir``.
        RecordError: its resumable state is damaged.
        ValueError: the processes cannot share the batch evenly.
    """
    run_dir = Path(run_dir)
    ctx, device = distributed.join(resolve_device(device))
    if cfg.train.batch_size % ctx.world:
        raise ValueError(f"train.batch_size = {cfg.train.batch_size} cannot be shared evenly by {ctx.world} processes: "
                         f"start a number of processes that divides it, or set train.batch_size to a multiple of {ctx.world}")
    # the main process writes the folder: a second process training into it gets an error naming the first
    with run_lock(run_dir) if ctx.main else contextlib.nullcontext():
        return _train(cfg, run_dir, data_root, device, download, force, progress and ctx.main, on_step, ctx)


def _train(cfg: RunConfig, run_dir: Path, data_root, device: torch.device, download: bool, force: bool, progress: bool,
           on_step: Callable[[int], None] | None, ctx: distributed.Context) -> TrainResult:
    if force and ctx.main:
        for child in run_dir.iterdir():
            if child.name != ".lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    ctx.barrier()  # the other processes read the folder once the main one has cleared it
    recorded = RunConfig.from_dict(read_json(run_dir / "config.json")) if (run_dir / "config.json").exists() else None
    if recorded is not None:  # before anything is loaded or written
        check_compatible(recorded, cfg, str(run_dir), sections=("data", "model", "flow", "latent", "train", "seed"))
    tc = cfg.train

    train_split = load_split(cfg.data.dataset, "train", cfg.data.size, data_root, download)
    val_split = load_split(cfg.data.dataset, "val", cfg.data.size, data_root, download)
    comps = build(cfg, device)
    model, code = comps.model.to(device), comps.code
    if tc.channels_last:  # the EMA copy and the checkpoints follow; a checkpoint loads into either order
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    ema_comps = dataclasses.replace(comps, model=ema)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, fused=device.type == "cuda")
    total = tc.total_steps(len(train_split))

    step, history, best, elapsed, running = 0, [], {}, {"train": 0.0, "total": 0.0}, None
    # provenance of the code that runs: recorded when training starts, and again at every resume
    devices = ctx.gather(device_name(device))
    started = provenance(device) | {"world_size": ctx.world, "devices": devices}
    resumed = []
    state_path = run_dir / STATE_FILE
    if state_path.exists():
        try:
            state = torch.load(state_path, map_location=device, weights_only=False)
        except Exception as err:  # torch raises many types for a damaged file
            raise RecordError(f"{state_path} is damaged ({type(err).__name__}: {str(err)[:200]}); delete it to train this run "
                              "from step 0 again, or start afresh with --force") from err
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        step, history, best, elapsed, running = (state[k] for k in ("step", "history", "best", "elapsed", "running"))
        resumed = state.get("resumed", []) + [{"step": step, **started}]  # absent from states written before it was recorded
        started = state.get("started", {"git_commit": "not recorded"})
    if ctx.main and (recorded is None or set(config_diff(recorded, cfg)) - {"recipe"}):  # a recorded run keeps its file
        write_json(run_dir / "config.json", cfg.to_dict())
    if (run_dir / "train.json").exists() and (run_dir / "best.pt").exists():
        done = read_json(run_dir / "train.json")
        if done["steps"] >= total:  # a finished run (its resumable state need not travel with it)
            return TrainResult(run_dir, done["steps"], done["images_seen"], done["train_seconds"], done["total_seconds"], done["best"], done["history"])

    res, s_min = cfg.data.resolution, cfg.flow.sigma_min
    labels = train_split.labels.to(device)
    if comps.codec is not None:  # latent run: sample each step from the cached VAE posteriors
        if not ctx.main:
            ctx.barrier()  # the main process builds the cache once; the others read it
        cache = posterior_cache(comps.codec, train_split, cfg.latent, progress=progress)
        if ctx.main:
            ctx.barrier()

        def inputs(idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            return cache.sample(comps.codec, idx, g)
    else:
        images = train_split.images.to(device)

        def inputs(idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            return to_model_input(images[idx], res)
    flips = uses_flips(train_split.info, cfg.data.augment)
    per_epoch, perm, perm_epoch = math.ceil(len(train_split) / tc.batch_size), None, -1
    eval_every = tc.eval_every if tc.eval_every > 0 else total

    def save_state() -> None:
        if not ctx.main:
            return
        torch_save(
            {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(), "step": step,
             "history": history, "best": best, "elapsed": elapsed, "running": running, "config": cfg.to_dict(),
             "started": started, "resumed": resumed},
            state_path,
        )

    def validate(loss: float) -> None:
        nonlocal best
        if not math.isfinite(loss):
            raise FloatingPointError(f"the training loss became {loss} before step {step}; lower train.lr or set train.grad_clip")
        p = predict(ema_comps, val_split, seed=cfg.seed, batch_size=cfg.eval.batch_size, limit=tc.val_samples)
        record = {
            "step": step,
            "images": _images_seen(step, len(train_split), tc.batch_size),
            "train_seconds": elapsed["train"],
            "loss": loss,
            "val_acc": metrics.accuracy(p.pred, p.labels),
            "val_auc": metrics.auc_distance(p.distances, p.labels),
            # which classes the run has learned to tell apart, and when (MSE on class codes learns some classes late)
            "val_recall": metrics.per_class_recall(p.pred, p.labels, val_split.info.num_classes),
        }
        if not best or record[f"val_{tc.select}"] > best[f"val_{tc.select}"]:
            # the weights first, then the record: an interrupt in between leaves a validation that a resume repeats
            save_weights(run_dir / "best.pt", ema, cfg, {"step": step, "val": record, "provenance": provenance(device)})
            best = record
        history.append(record)

    def validation_due() -> bool:
        return step > 0 and (step % eval_every == 0 or step == total)

    t_start = t_mark = time.perf_counter()
    if isinstance(running, torch.Tensor):
        running = float(running)
    bar = tqdm(total=total, initial=step, desc=f"train {cfg.data.dataset}", disable=not progress, unit="step")
    stop = _Interrupts()
    try:
        with stop:
            if ctx.main and validation_due() and (not history or history[-1]["step"] != step):
                validate(running)  # the run was stopped during this step's validation: it is done now, as it would have been
            model.train()
            net = model
            if ctx.world > 1:  # averages the gradients of the processes' shares
                net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
            if tc.compile:  # compiled at the first step; ``model`` keeps the weights and their names
                net = torch.compile(net)
            while step < total:
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total, tc.lr, tc.warmup_frac)
                g = step_generator(cfg.seed, step, device)
                epoch = step // per_epoch
                if epoch != perm_epoch:  # one host-to-device copy per epoch
                    perm, perm_epoch = epoch_permutation(epoch, len(train_split), cfg.seed).to(device), epoch
                idx = batch_indices(step, len(train_split), tc.batch_size, cfg.seed, perm)
                x = inputs(idx, g)
                if flips:
                    x = random_flips(x, g)
                y = code.encode(labels[idx], res, generator=g)
                t = sample_t(x.shape[0], cfg.flow.t_one_frac, g, device)
                xi_x = torch.randn(x.shape, generator=g, device=device)
                xi_y = torch.randn(y.shape, generator=g, device=device)
                scale = 1.0
                if ctx.world > 1:  # every process drew the whole batch; it trains on its share
                    mine, scale = _share(len(idx), ctx)
                    x, y, t, xi_x, xi_y = (a[mine] for a in (x, y, t, xi_x, xi_y))
                with train_autocast(tc, device):
                    out = flow_loss(net, x, y, t, xi_x, xi_y, s_min, cfg.flow.lam)
                loss = out.loss * scale  # so that the processes' mean gradient is the whole batch's
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                with stop.deferred():  # the weights, their EMA and the step counter change together or not at all
                    opt.step()
                    if ctx.main:
                        ema_update(ema, model, ema_decay_at(step, tc.ema_decay, tc.ema_warmup))
                    step += 1
                    # the running loss stays on the device: reading it every step would stall the GPU queue
                    loss_t = loss.detach().float()
                    running = loss_t if running is None else 0.98 * torch.as_tensor(running, device=device) + 0.02 * loss_t
                if step % eval_every == 0 or step == total or step % tc.checkpoint_every == 0:
                    # one host sync: the device has finished the steps timed since the last; the processes' mean
                    running = float(ctx.mean(torch.as_tensor(running, device=device)))
                    elapsed["train"] += time.perf_counter() - t_mark
                if ctx.main and validation_due():
                    validate(running)
                    bar.set_postfix(loss=f"{running:.4f}", val_acc=f"{history[-1]['val_acc']:.3f}")
                if step % tc.checkpoint_every == 0 or step == total:
                    if not math.isfinite(running):
                        raise FloatingPointError(f"the training loss became {running} before step {step}; lower train.lr or set train.grad_clip")
                    elapsed["total"] += time.perf_counter() - t_start
                    t_start = time.perf_counter()
                    save_state()
                if isinstance(running, float):
                    t_mark = time.perf_counter()  # training time is measured between host syncs, without validation
                bar.update(1)
                if on_step is not None:
                    on_step(step)
    except KeyboardInterrupt:
        if not isinstance(running, float):  # stopped between syncs: the steps since the last one count too
            elapsed["train"] += time.perf_counter() - t_mark
        elapsed["total"] += time.perf_counter() - t_start
        save_state()
        bar.close()
        raise
    bar.close()
    if not ctx.main:  # the main process writes the results; the others return what it wrote
        ctx.barrier()
        done = read_json(run_dir / "train.json")
        return TrainResult(run_dir, done["steps"], done["images_seen"], done["train_seconds"], done["total_seconds"],
                           done["best"], done["history"])

    save_weights(run_dir / "final.pt", ema, cfg, {"step": step, "val": history[-1], "provenance": provenance(device)})
    result = TrainResult(run_dir, step, _images_seen(step, len(train_split), tc.batch_size), elapsed["train"], elapsed["total"], best, history)
    write_json(
        run_dir / "train.json",
        {
            "config": cfg.to_dict(),
            "dataset": {"flag": train_split.info.flag, "md5": train_split.md5, "synthetic": train_split.synthetic,
                        "n_train": len(train_split), "n_val": len(val_split)},
            "steps": step,
            "images_seen": result.images_seen,
            "train_seconds": result.train_seconds,
            "total_seconds": result.total_seconds,
            "images_per_second": result.images_seen / max(result.train_seconds, 1e-9),
            "parameters": model.num_parameters(),
            "best": best,
            "history": history,
            "provenance": started,
            "resumed": resumed,
            "finished": provenance(device),
        },
    )
    ctx.barrier()
    return result


def _share(n: int, ctx: distributed.Context) -> tuple[slice, float]:
    """This process's contiguous share of a batch of ``n`` (the last of an epoch may be short) and the weight of its
    mean loss, so that the mean over the processes of their weighted gradients is the whole batch's mean gradient.
    A process with no image trains on one with weight 0: its gradients still meet the others'."""
    lo, hi = n * ctx.rank // ctx.world, n * (ctx.rank + 1) // ctx.world
    if hi == lo:
        return slice(0, 1), 0.0
    return slice(lo, hi), (hi - lo) * ctx.world / n


def _images_seen(steps: int, n: int, batch_size: int) -> int:
    per_epoch = math.ceil(n / batch_size)
    epochs, rest = divmod(steps, per_epoch)
    return epochs * n + min(rest * batch_size, n)


class _Interrupts:
    """While training (in the main thread), SIGINT and SIGTERM raise KeyboardInterrupt, so that the state is saved and the
    run resumes where it stopped; inside :meth:`deferred` they wait until the block ends, so that an interrupted run
    never saves a half-applied optimisation step. SIGKILL cannot be caught: the run resumes from its last checkpoint,
    and the steps since are computed again, identically."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.critical, self.pending, self.previous = False, None, {}

    def _handler(self, signum, frame):
        if self.critical:
            self.pending = signum
            return
        raise KeyboardInterrupt(f"signal {signum}")

    def __enter__(self) -> "_Interrupts":
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self.critical = True
        try:
            yield
        finally:
            self.critical = False
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise KeyboardInterrupt(f"signal {signum}")


def steps_for_budget(
    cfg: RunConfig,
    seconds: float,
    data_root: str | Path | None = None,
    device: str | torch.device = "auto",
    probe_steps: int = 40,
    round_to: int = 100,
) -> tuple[int, float]:
    """How many training steps of ``cfg`` fit in ``seconds`` on ``device``, measured.

    A short probe run (in a scratch folder) times ``probe_steps`` real steps after ten warm-up steps; the
    length is rounded down to a multiple of ``round_to``. Used to fit a run's cosine schedule to a time box
    (the GPU session) instead of cutting a run short, which would leave its learning rate high.

    Returns:
        ``(steps, seconds_per_step)``.
    """
    import tempfile

    device = resolve_device(device)
    stamps: list[float] = []

    def on_step(step: int) -> None:
        # wait for the device only at the ends of the timed steps: a sync at every step would time each step's
        # launches and kernels one after the other, which training overlaps (the probe of the first GPU session,
        # synced at every step, measured 2.7 times the training's own time per step)
        if device.type == "cuda" and step in (10, probe_steps + 10):
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    probe = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=probe_steps + 10, eval_every=0,
                                                               checkpoint_every=10**9))
    with tempfile.TemporaryDirectory(prefix="msflow-probe-") as scratch:
        train(probe, scratch, data_root, device, progress=False, on_step=on_step)
    per_step = (stamps[-1] - stamps[9]) / (len(stamps) - 10)
    return fit_steps(seconds, per_step, round_to), per_step


def fit_steps(seconds: float, per_step: float, round_to: int = 100) -> int:
    """The most steps of ``per_step`` seconds that fit in ``seconds``, rounded down to a multiple of ``round_to``, and
    at least ``round_to``."""
    if per_step <= 0:
        raise ValueError(f"a step cannot take {per_step} s")
    return max(round_to, int(seconds / per_step) // round_to * round_to)
