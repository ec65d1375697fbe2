"""How fast msflow trains and classifies, and what torch.compile, channels_last and a second process buy.

Prints two tables, measured on synthetic BloodMNIST-shaped data (no data file, no download):

1. For the ``paper``, ``gpu`` and ``cpu`` networks, each with no option, ``channels_last``, ``compile`` and both:
   images/s of a training step (msflow's own ``train``, timed between steps) and of one-step classification
   (``msflow.evaluate.predict``), on one process and on two (torchrun, gloo or NCCL). On the CPU, two processes of
   half the threads each stand against one process of all of them; on CUDA, two GPUs against one. Every cell runs
   in processes of its own, so that threads, compilation and memory do not carry from one to the next.
2. With ``--plain``: msflow's training step against a plain PyTorch loop over the same diffusers UNet at the
   reference's settings (the network, batch 64, AdamW, the EMA, the flips, the RGB code) and at equal precision
   (fp32 on the CPU, bf16 autocast on CUDA), in rounds taken in turn in one process; the ratio of their medians is
   msflow's framework overhead.

    python benchmarks/throughput.py                                # both tables on this machine's device
    python benchmarks/throughput.py --networks cpu --options none,compile --processes 1
    python benchmarks/throughput.py --device cuda --no-plain       # table 1 on one GPU and, if there are two, two

The option columns are what ``train.compile`` and ``train.channels_last`` turn on; their defaults are what this
benchmark chose on the device it ran on (see ``msflow.config.TrainConfig``). ``benchmarks/recipe_cost.py`` prints a
whole recipe's costs (generation and the latent path included).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

NETWORKS = ("paper", "gpu", "cpu")
OPTIONS = {  # name: (train.compile, train.channels_last)
    "none": (False, False),
    "channels_last": (False, True),
    "compile": (True, False),
    "compile+channels_last": (True, True),
}
DATASET = "bloodmnist"  # three channels, eight classes, flips: the reference's one published command
SYNTHETIC = {"train": 4096, "val": 64, "test": 512}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _config(recipe: str, option: str, steps: int):
    from msflow.config import make_config

    compiled, channels_last = OPTIONS[option]
    return make_config(DATASET, recipe, {"train.max_steps": steps, "train.eval_every": 0, "train.val_samples": 64,
                                         "train.checkpoint_every": 10**6, "train.compile": compiled,
                                         "train.channels_last": channels_last})


def time_training(cfg, run_dir: str | Path, data_root: str | Path, device: torch.device, warmup: int, iters: int) -> float:
    """Training images/s of msflow's ``train`` over ``iters`` steps after ``warmup`` (``cfg.train.max_steps`` must be
    ``warmup + iters + 1``: the last step's validation stays outside the timed steps)."""
    from msflow.train import train

    stamps: dict[int, float] = {}

    def on_step(step: int) -> None:
        if step in (warmup, warmup + iters):
            _sync(device)
            stamps[step] = time.perf_counter()

    train(cfg, run_dir, data_root, device, progress=False, force=True, on_step=on_step)
    return cfg.train.batch_size * iters / (stamps[warmup + iters] - stamps[warmup])


def time_classification(cfg, data_root: str | Path, device: torch.device, batch: int, passes: int) -> float:
    """One-step classification images/s of ``msflow.evaluate.predict`` over the synthetic test split, with the speed
    options of ``cfg.train`` applied to a fresh network, after one untimed pass (which compiles)."""
    from msflow import distributed
    from msflow.data import load_split
    from msflow.evaluate import predict
    from msflow.model import build

    ctx, device = distributed.join(device)
    comps = build(cfg, device)
    model = comps.model.to(device).eval()
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.train.compile:
        model = torch.compile(model)
    comps = dataclasses.replace(comps, model=model)
    split = load_split(DATASET, "test", cfg.data.size, data_root)
    predict(comps, split, batch_size=batch, ctx=ctx)
    _sync(device)
    t0 = time.perf_counter()
    for seed in range(passes):
        predict(comps, split, seed=seed, batch_size=batch, ctx=ctx)
    _sync(device)
    return len(split) * passes / (time.perf_counter() - t0)


def worker(args: argparse.Namespace) -> None:
    """One cell of the table, in this process (and the others torchrun started): prints a JSON line on rank 0."""
    from msflow import distributed
    from msflow.train import resolve_device

    device = resolve_device(args.device)
    cfg = _config(args.recipe, args.option, args.warmup + args.iters + 1)
    t0 = time.perf_counter()
    train_rate = time_training(cfg, args.run_dir, args.data_root, device, args.warmup, args.iters)
    classify_rate = time_classification(cfg, args.data_root, device, args.eval_batch, args.passes)
    ctx, _ = distributed.join(device)
    if ctx.main:
        from msflow.model import build

        print("ROW " + json.dumps({"train": train_rate, "classify": classify_rate, "threads": torch.get_num_threads(),
                                   "parameters": build(cfg).model.num_parameters(), "batch": cfg.train.batch_size,
                                   "seconds": time.perf_counter() - t0}), flush=True)


def run_cell(network: str, option: str, processes: int, device: str, data_root: Path, args: argparse.Namespace) -> dict:
    """Measure one cell in fresh processes; a failed cell is reported, not fatal."""
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MSFLOW_DIST_TIMEOUT": "600", "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory(prefix="msflow-bench-") as run_dir:
        cell = [__file__, "--worker", "--recipe", network, "--option", option, "--device", device, "--run-dir", run_dir,
                "--data-root", str(data_root), "--warmup", str(args.warmup), "--iters", str(args.iters),
                "--passes", str(args.passes), "--eval-batch", str(args.eval_batch)]
        if processes == 1:
            command = [sys.executable, *cell]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *cell]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    rows = [json.loads(line[4:]) for line in done.stdout.splitlines() if line.startswith("ROW ")]
    if done.returncode or not rows:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": " / ".join(tail)[:300] or f"exit status {done.returncode}"}
    return rows[0] | {"threads_per_process": threads}


def measure_table(args: argparse.Namespace, data_root: Path) -> list[dict]:
    from tqdm.auto import tqdm

    cells = [(n, o, p) for n in args.networks for o in args.options for p in args.processes]
    rows = []
    for network, option, processes in tqdm(cells, desc="cells", unit="cell"):
        row = {"network": network, "option": option, "processes": processes}
        row |= run_cell(network, option, processes, args.device, data_root, args)
        rows.append(row)
        tqdm.write(json.dumps(row))
    return rows


def print_table(rows: list[dict], device_label: str) -> None:
    print(f"\nmsflow throughput on {device_label} (synthetic {DATASET}; images/s, higher is better; * best of a network)")
    head = f"{'network':8s} {'params':>8s} {'batch':>5s} {'option':22s} {'processes':>14s} {'train':>9s} {'classify':>9s}"
    print(head)
    print("-" * len(head))
    best = {}
    for r in rows:
        if "error" not in r:
            for k in ("train", "classify"):
                best[(r["network"], k)] = max(best.get((r["network"], k), 0), r[k])
    for r in rows:
        procs = f"{r['processes']} x {r.get('threads_per_process', '?')} thr" if r.get("device") != "cuda" else f"{r['processes']} GPU"
        if "error" in r:
            print(f"{r['network']:8s} {'':>8s} {'':>5s} {r['option']:22s} {procs:>14s}  failed: {r['error']}")
            continue
        cells = [f"{r[k]:8.1f}{'*' if r[k] == best[(r['network'], k)] else ' '}" for k in ("train", "classify")]
        print(f"{r['network']:8s} {r['parameters'] / 1e6:7.2f}M {r['batch']:5d} {r['option']:22s} {procs:>14s} {cells[0]} {cells[1]}")


def plain_unet():
    """The reference's pixel network for three-channel images (method.md section 7), built with diffusers alone: 64 base
    channels, multipliers (1, 2, 2, 2), two residual blocks a level, attention at 16 x 16 and in the middle."""
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=32, in_channels=6, out_channels=6, block_out_channels=(64, 128, 128, 128),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), layers_per_block=2,
                       attention_head_dim=64, norm_num_groups=32, dropout=0.0)


def plain_colours() -> torch.Tensor:
    """The RGB code of eight classes in [-1, 1] (method.md section 2): palette colours ``floor(63 k / 7)`` of the levels
    0, 75, 150, 225, R outermost."""
    levels = (0, 75, 150, 225)
    return torch.tensor([[levels[i // 16], levels[i // 4 % 4], levels[i % 4]] for i in (63 * k // 7 for k in range(8))]).float() / 127.5 - 1


def plain_loop_rate(images: torch.Tensor, labels: torch.Tensor, device: torch.device, warmup: int, iters: int,
                    batch: int = 64, seed: int = 0) -> tuple[float, int]:
    """Training images/s of a plain PyTorch loop at the reference's settings (method.md section 7), written out here
    with diffusers and torch alone: the floor that msflow's training step is held against. Returns the rate and the
    network's parameter count."""
    import torch.nn.functional as F

    torch.manual_seed(seed)
    unet = plain_unet().to(device).train()
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=4e-4, weight_decay=0.0, fused=device.type == "cuda")
    images, labels = images.to(device), labels.to(device)
    colours = plain_colours().to(device)
    s, b, total = 1e-4, batch, warmup + iters

    def step(n: int) -> None:
        for group in opt.param_groups:  # the cosine warm-up of a long run: the step pays for setting it
            group["lr"] = 4e-4 * 0.5 * (1 - math.cos(math.pi * (n + 1) / 10_000))
        idx = torch.randint(len(images), (b,), device=device)
        x = F.interpolate(images[idx].float() / 127.5 - 1, size=(32, 32), mode="bilinear", align_corners=False)
        flip = torch.rand(b, 2, device=device) < 0.5
        x = torch.where(flip[:, 0, None, None, None], x.flip(-1), x)
        x = torch.where(flip[:, 1, None, None, None], x.flip(-2), x)
        y = colours[labels[idx]][:, :, None, None].expand(-1, -1, 32, 32)
        y = y + (2 * torch.rand_like(y) - 1) * 4 / 255
        t = torch.rand(b, device=device)
        tt = t[:, None, None, None]
        xi_x, xi_y = torch.randn_like(x), torch.randn_like(y)
        z = torch.cat([(1 - (1 - s) * tt) * xi_x + tt * x, (1 - (1 - s) * tt) * y + tt * xi_y], dim=1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            v = unet(z, t * 1000).sample.float()
        loss = 0.7 * (v[:, :3] - (x - (1 - s) * xi_x)).square().mean() + 0.3 * (v[:, 3:] - (xi_y - (1 - s) * y)).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        torch._foreach_lerp_(list(ema.parameters()), list(unet.parameters()), 1 - 0.7)

    for n in range(warmup):
        step(n)
    _sync(device)
    t0 = time.perf_counter()
    for n in range(warmup, total):
        step(n)
    _sync(device)
    return b * iters / (time.perf_counter() - t0), sum(p.numel() for p in unet.parameters())


def compare_plain(args: argparse.Namespace, data_root: Path) -> dict:
    """msflow's ``train`` against :func:`plain_loop_rate`, at the ``paper`` recipe, in ``args.rounds`` rounds each taken
    in turn (so that a slower spell of a shared machine falls on both); the medians and their ratio."""
    from msflow.data import load_split
    from msflow.model import build
    from msflow.train import resolve_device
    from tqdm.auto import tqdm

    device = resolve_device(args.device)
    cfg = _config("paper", "none", args.warmup + args.iters + 1)
    split = load_split(DATASET, "train", 28, data_root)
    ours, plain = [], []
    for _ in tqdm(range(args.rounds), desc="msflow and plain, in turn", unit="round"):
        with tempfile.TemporaryDirectory(prefix="msflow-bench-") as run_dir:
            ours.append(time_training(cfg, run_dir, data_root, device, args.warmup, args.iters))
        rate, params = plain_loop_rate(split.images, split.labels, device, args.warmup, args.iters)
        plain.append(rate)
    ours_params = build(cfg).model.num_parameters()
    if ours_params != params:
        raise AssertionError(f"the plain loop's UNet has {params} parameters, msflow's {ours_params}: they are not the same network")
    return {"msflow": statistics.median(ours), "plain": statistics.median(plain), "msflow_rounds": ours,
            "plain_rounds": plain, "parameters": params, "ratio": statistics.median(ours) / statistics.median(plain)}


def print_plain(result: dict, device_label: str) -> None:
    print(f"\nmsflow's training step against a plain PyTorch loop on {device_label} (paper network, "
          f"{result['parameters'] / 1e6:.2f} M parameters, batch 64, {'bf16' if 'cuda' in device_label.lower() else 'fp32'})")
    for k in ("msflow", "plain"):
        rounds = ", ".join(f"{r:.1f}" for r in result[f"{k}_rounds"])
        print(f"{k:8s} median {result[k]:8.1f} images/s   rounds: {rounds}")
    print(f"ratio msflow / plain: {result['ratio']:.3f} ({(1 - result['ratio']) * 100:+.1f} % slower)"
          if result["ratio"] < 1 else f"ratio msflow / plain: {result['ratio']:.3f} (msflow not slower)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--networks", type=lambda s: s.split(","), default=list(NETWORKS), help="recipes whose network to time")
    p.add_argument("--options", type=lambda s: s.split(","), default=list(OPTIONS), help=f"of {', '.join(OPTIONS)}")
    p.add_argument("--processes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2], help="e.g. 1,2")
    p.add_argument("--device", default="auto")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps (the first compiles)")
    p.add_argument("--iters", type=int, default=4, help="timed training steps")
    p.add_argument("--passes", type=int, default=1, help=f"timed classification passes over {SYNTHETIC['test']} images")
    p.add_argument("--eval-batch", type=int, default=128, help="classification batch")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the comparison with the plain loop")
    p.add_argument("--no-table", dest="table", action="store_false", help="skip the table")
    p.add_argument("--no-plain", dest="plain", action="store_false", help="skip the comparison with the plain loop")
    p.add_argument("--json", help="also write the measurements to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--recipe", help=argparse.SUPPRESS)
    p.add_argument("--option", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--data-root", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    from msflow.config import RECIPES
    from msflow.data import write_synthetic
    from msflow.files import device_name
    from msflow.train import resolve_device

    if bad := [n for n in args.networks if n not in RECIPES]:
        p.error(f"unknown network(s) {bad}: name recipes of msflow.config.RECIPES, e.g. {','.join(NETWORKS)}")
    if bad := [o for o in args.options if o not in OPTIONS]:
        p.error(f"unknown option(s) {bad}: choose from {','.join(OPTIONS)}")
    device = resolve_device(args.device)
    args.device = device.type
    if device.type == "cuda" and max(args.processes) > torch.cuda.device_count():
        p.error(f"{max(args.processes)} processes need as many GPUs; this machine has {torch.cuda.device_count()}: "
                f"pass --processes 1")
    label = f"{device_name(device)}, {os.cpu_count()} CPU threads, torch {torch.__version__}"
    from msflow.files import provenance

    out: dict = {"device": label, "provenance": provenance(device), "argv": sys.argv[1:]}
    with tempfile.TemporaryDirectory(prefix="msflow-bench-data-") as data_root:
        write_synthetic(data_root, DATASET, 28, SYNTHETIC)
        if args.table:
            out["table"] = measure_table(args, Path(data_root))
            for r in out["table"]:
                r["device"] = device.type
            print_table(out["table"], label)
        if args.plain:
            out["plain"] = compare_plain(args, Path(data_root))
            print_plain(out["plain"], label)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
