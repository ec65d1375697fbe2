"""One prepared GPU session: the study's heavy computations in one time box, results packed to bring back.

    python -m msflow_study gpu-session [--budget 510] [--train-seconds 220] [--out DIR] [--smoke]
    bash scripts/gpu_session.sh ...            # the same

Processes that share the GPU (small networks leave most of it idle, so several runs in parallel cost little more
than one); on a machine with several GPUs they are spread over them in turn, each process on one GPU:

1. per dataset, the ``gpu`` run (``--name``), its length (``train.max_steps``) fitted by a measured probe to
   ``--train-seconds`` (``--train-seconds-for DATASET=SECONDS`` for one dataset) so that the cosine schedule
   ends inside the time box, trained and evaluated on the test split (``results/<flag>-gpu``), then its
   uncertainty readouts (16 stochastic passes over the test and validation splits, ``multipass_*.npz``) and
   its generation measurements (``generation.json``: sweep, class fidelity, CAS), which wait for the
   dataset's first ResNet-18 (their feature network);
2. per dataset, the ResNet-18 baselines, ``--ensemble`` seeds of ``--baseline-epochs`` epochs, with their
   logits and the first member's MC-dropout logits (``results/baselines/<flag>-resnet18-<E>e-seed<k>``);
3. the ``gpu-reference`` run (the same network with the reference's optimisation) on PneumoniaMNIST,
   and the ``--levers`` runs (``DATASET:RUN``; by default ``gpu-wide``, the reference network at full
   width, on PneumoniaMNIST and RetinaMNIST, and ``gpu-lam05``, the loss weight 0.5, on BloodMNIST), each for
   the same time box, trained and evaluated only: the book compares them at equal compute.

Because the probes run while every process is starting, a fitted length is conservative: a run ends early
rather than late once the baselines are done.

Every stage writes its results files as it finishes; a stage that fails is logged and the next one runs; a
stage that would start after the time box is skipped. Everything is then packed into ``--out`` as a
gzipped tar split into parts of at most 15 MB (the device tool brings back 8 files of 16 MB): the results
files (with each run's ``run.json``: its experiment entry and the length fitted to the box), fp16 copies of the
selected weights (``best.pt``) of the runs whose copy is small enough to commit, and the logs. Locally,
``python -m msflow_study run --name gpu --extra uncertainty fidelity`` then renders the notebooks from these files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

from msflow.files import read_json

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("pneumoniamnist", "bloodmnist", "retinamnist")
READY = ".feature-network-ready"  # marker: a dataset's first ResNet-18 and its logits are written


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stage(name: str, deadline: float, need: float, fn) -> bool:
    """Run ``fn`` unless fewer than ``need`` seconds are left; log its time or its traceback."""
    left = deadline - time.time()
    if left < need:
        log(f"{name}: skipped ({left:.0f} s left, needs about {need:.0f})")
        return False
    t0 = time.time()
    try:
        fn()
    except Exception:  # noqa: BLE001 - a failed stage must not cost the others
        log(f"{name}: FAILED after {time.time() - t0:.0f} s\n{traceback.format_exc()}")
        return False
    log(f"{name}: done in {time.time() - t0:.0f} s")
    return True


def setup(args: argparse.Namespace):
    """A worker process's device, data root and runs folder; cuDNN autotuning, and two threads per process
    (several processes share the machine's cores)."""
    import torch

    from msflow.train import resolve_device

    torch.backends.cudnn.benchmark = True
    torch.set_num_threads(2)
    return resolve_device(args.device), args.data_root or None, Path(args.runs_dir) if args.runs_dir else ROOT / "results"


def worker(args: argparse.Namespace) -> int:
    """Train, evaluate and measure one dataset (see the module docstring)."""
    from msflow.config import apply_overrides
    from msflow.files import git_commit
    from msflow.runs import evaluate_run, multi_pass_run
    from msflow.train import steps_for_budget, train
    from msflow_study import baselines
    from msflow_study.experiments import load
    from msflow_study.protocol import generation_metrics
    from msflow_study.registry import run_config, run_path, run_record, write_record

    deadline = args.deadline
    dev, root, runs = setup(args)
    experiments = load()
    cfg = run_config("smoke" if args.smoke else args.name, args.dataset, experiments=experiments)
    run = run_path(runs, cfg.data.dataset, args.name)
    fitted: dict = {}

    def fit_and_train() -> None:
        nonlocal cfg
        steps, per_step = steps_for_budget(cfg, args.train_seconds, root, dev, probe_steps=10 if args.smoke else 40,
                                           round_to=10 if args.smoke else 100)
        fitted.update(seconds=args.train_seconds, seconds_per_step=per_step, steps=steps)
        log(f"{args.dataset}/{args.name}: {per_step * 1000:.1f} ms per step -> {steps} steps in {args.train_seconds:.0f} s")
        cfg = apply_overrides(cfg, {"train.max_steps": steps, "train.eval_every": max(1, steps // 12),
                                    "train.checkpoint_every": max(1, steps // 4)})
        result = train(cfg, run, root, dev, progress=False)
        if not args.smoke:  # the record names the entry and the length fitted to the box
            write_record(run, run_record(args.name, args.dataset, cfg, experiments, git_commit()))
        log(f"{args.dataset}/{args.name}: {result.steps} steps, {result.images_seen} images, {result.train_seconds:.0f} s; "
            f"best val acc {result.best['val_acc']:.4f} at step {result.best['step']}")
        (run / "time_box.json").write_text(json.dumps(fitted, indent=1))

    if not stage(f"{args.dataset}: train {args.name}", deadline, 60, fit_and_train):
        return 1

    def evaluate() -> None:
        _, record = evaluate_run(run, "test", "best", root, dev, progress=False)
        m = record["metrics"]["mean"]
        log(f"{args.dataset}/{args.name} test: acc {m['acc']:.4f} auc(paper) {m['auc_paper']:.4f} auc(medmnist) {m['auc_medmnist']:.4f}")

    stage(f"{args.dataset}: evaluate", deadline, 10, evaluate)
    if not args.extras:
        return 0

    def readouts() -> None:
        for split, seed in (("test", 1), ("val", 2)):
            multi_pass_run(run, split, args.draws, seed, root, dev)

    stage(f"{args.dataset}: multi-pass readouts", deadline, 15, readouts)
    epochs = 1 if args.smoke else args.baseline_epochs
    feature_net = baselines.member_dir(runs / "baselines", cfg.data.dataset, epochs)

    def generation() -> None:
        while not (feature_net / READY).exists():  # the baselines process trains it first
            if time.time() > deadline - 60:
                raise TimeoutError(f"{feature_net.name} was not ready in time")
            time.sleep(2)
        rec = generation_metrics(run, feature_net, root, dev,
                                 per_class=8 if args.smoke else args.per_class, classifier_epochs=epochs,
                                 cas_images=64 if args.smoke else 0, progress=False)
        key = [r for r in rec["sweep"] if [r["solver"], r["nfe"]] == rec["settings"]["key"]]
        log(f"{args.dataset}: generation floor {rec['floor']['frechet']:.3f}; at the key setting {key}; CAS {rec['cas']}")

    stage(f"{args.dataset}: generation metrics", deadline, 40, generation)
    return 0


def baselines_worker(args: argparse.Namespace) -> int:
    """Train one dataset's ResNet-18 ensemble and keep its logits (see the module docstring)."""
    from msflow_study import baselines
    from msflow.data import load_split

    dev, root, runs = setup(args)
    size = baselines.BaselineConfig(dataset=args.dataset).size  # the file the baselines train on
    test, val = (load_split(args.dataset, s, size, root) for s in ("test", "val"))
    epochs = 1 if args.smoke else args.baseline_epochs

    def member(seed: int):
        def go() -> None:
            cfg = baselines.BaselineConfig(dataset=args.dataset, epochs=epochs, seed=seed)
            out = baselines.train_baseline(cfg, baselines.member_dir(runs / "baselines", args.dataset, epochs, seed), root, dev,
                                           progress=False)
            for split in (test, val):
                baselines.cached_logits(out, split, device=dev)
            if seed == 0:
                baselines.cached_logits(out, test, mc_samples=args.mc_samples, device=dev)
                (out / READY).touch()  # the generation measurements may use it now
            log(f"{args.dataset}: ResNet-18 seed {seed}: best val acc {read_json(out / 'baseline.json')['best']}")
        return go

    for seed in range(args.ensemble):
        stage(f"{args.dataset}: ResNet-18 seed {seed}", args.deadline, 20, member(seed))
    return 0


def _visible_gpus() -> list[str]:
    """The GPUs this session may use, as ``CUDA_VISIBLE_DEVICES`` names them (every GPU of the machine by default)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def pack(out: Path, runs: Path, logs: list[Path], since: float, part_mb: float = 15, max_weights_mb: float = 8) -> None:
    """fp16 copies of the selected weights, then the results files written since ``since`` and the logs, as a
    split .tar.gz in ``out``."""
    from msflow.model import load_weights, save_weights

    too_big = set()
    for best in runs.glob("*/best.pt"):
        if best.stat().st_mtime < since:
            continue
        try:
            loaded = load_weights(best)
            save_weights(best, loaded.components.model, loaded.config, loaded.meta, half=True)
        except Exception:  # noqa: BLE001
            log(f"fp16 copy of {best} failed:\n{traceback.format_exc()}")
        if best.stat().st_size > max_weights_mb * 1e6:  # not committable: the run's results files still come back
            too_big.add(best)
            log(f"{best.parent.name}: best.pt is {best.stat().st_size / 1e6:.1f} MB in fp16, left behind")
    keep = [p for p in runs.rglob("*") if p.is_file() and p.name not in ("train_state.pt", "final.pt", "baseline.pt")
            and not p.name.startswith(".") and p.stat().st_mtime >= since and p not in too_big]
    blob = out / "results.tar.gz"
    with tarfile.open(blob, "w:gz", compresslevel=6) as tar:
        for p in keep:
            tar.add(p, arcname=str(p.relative_to(runs.parent)))
        for p in logs:
            tar.add(p, arcname=f"logs/{p.name}")
    data = blob.read_bytes()
    blob.unlink()
    size = int(part_mb * 1024 * 1024)
    for i in range(0, len(data), size):
        (out / f"results.tar.gz.part{i // size}").write_bytes(data[i : i + size])
    log(f"packed {len(keep)} files, {len(data) / 1e6:.1f} MB, into {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m msflow_study gpu-session", description=__doc__.splitlines()[0])
    p.add_argument("role", nargs="?", default="session", choices=("session", "worker", "baselines"))
    p.add_argument("dataset", nargs="?", default="")
    p.add_argument("--datasets", nargs="*", default=list(DATASETS))
    p.add_argument("--name", default="gpu", help="the run each dataset trains: an entry of experiments/*.toml or a recipe")
    p.add_argument("--reference", default="pneumoniamnist", help="dataset of the gpu-reference run ('' for none)")
    p.add_argument("--budget", type=float, default=510, help="seconds for the whole session, packing included")
    p.add_argument("--train-seconds", type=float, default=220, help="training time box of each run")
    p.add_argument("--train-seconds-for", nargs="*", default=[], metavar="DATASET=SECONDS",
                   help="another time box for a dataset's runs")
    p.add_argument("--levers", nargs="*", default=["pneumoniamnist:gpu-wide", "retinamnist:gpu-wide", "bloodmnist:gpu-lam05"],
                   metavar="DATASET:RUN",
                   help="further runs, trained and evaluated only, for the recipes comparison")
    p.add_argument("--deadline", type=float, default=0, help=argparse.SUPPRESS)
    p.add_argument("--extras", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--draws", type=int, default=16)
    p.add_argument("--ensemble", type=int, default=5)
    p.add_argument("--baseline-epochs", type=int, default=20)
    p.add_argument("--mc-samples", type=int, default=16)
    p.add_argument("--per-class", type=int, default=300)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default=os.environ.get("MSFLOW_DATA", ""))
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/msflow-gpu-out"))
    p.add_argument("--runs-dir", default="", help="runs folder of a smoke session (default: a folder under --out)")
    p.add_argument("--smoke", action="store_true", help="the smoke recipe on whatever device (a dry run of this script)")
    args = p.parse_args(argv)
    if args.role == "worker":
        return worker(args)
    if args.role == "baselines":
        return baselines_worker(args)

    t_start = time.time()
    deadline = t_start + args.budget - 25  # leave time to pack
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(args.runs_dir) if args.runs_dir else (out.parent / "msflow-smoke-runs" if args.smoke else ROOT / "results")
    runs.mkdir(parents=True, exist_ok=True)
    logs_dir = out.parent / "msflow-gpu-logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    seconds = {ds: args.train_seconds for ds in DATASETS} | {
        k: float(v) for k, v in (item.split("=") for item in args.train_seconds_for)}
    jobs = [("worker", ds, args.name, 1) for ds in args.datasets]
    jobs += [("baselines", ds, "resnet18", 0) for ds in args.datasets if args.ensemble > 0]
    if args.reference:
        jobs.append(("worker", args.reference, "gpu-reference", 0))
    jobs += [("worker", *lever.split(":"), 0) for lever in args.levers]
    gpus = _visible_gpus()
    procs = []
    for k, (role, ds, name, extras) in enumerate(jobs):
        logf = logs_dir / f"{ds}-{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if len(gpus) > 1:  # the processes are spread over the machine's GPUs, in turn
            env["CUDA_VISIBLE_DEVICES"] = gpus[k % len(gpus)]
        cmd = [sys.executable, "-m", "msflow_study.gpu_session", role, ds, "--name", name, "--deadline", str(deadline),
               "--extras", str(extras), "--train-seconds", str(seconds[ds]), "--draws", str(args.draws),
               "--ensemble", str(args.ensemble), "--baseline-epochs", str(args.baseline_epochs),
               "--mc-samples", str(args.mc_samples), "--per-class", str(args.per_class), "--device", args.device,
               "--data-root", args.data_root, "--runs-dir", str(runs)] + (["--smoke"] if args.smoke else [])
        procs.append((logf, subprocess.Popen(cmd, stdout=logf.open("w"), stderr=subprocess.STDOUT, cwd=ROOT, env=env)))
        log(f"started {ds}/{name} (log {logf.name}" + (f", GPU {env['CUDA_VISIBLE_DEVICES']})" if len(gpus) > 1 else ")"))
    for logf, proc in procs:
        try:
            proc.wait(timeout=max(1.0, deadline + 10 - time.time()))
        except subprocess.TimeoutExpired:
            proc.terminate()  # training saves its state on SIGTERM
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
            log(f"{logf.name}: stopped at the time box")
        log(f"{logf.name}: exit {proc.returncode}")
    for logf, _ in procs:
        print(f"----- {logf.name}\n" + "\n".join(logf.read_text().splitlines()[-40:]), flush=True)
    pack(out, runs, [lf for lf, _ in procs], t_start)
    log(f"session: {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
