"""Throughput and memory of a profile on a device: training, classification (1 and 25 steps), generation.

Prints one table. Random inputs of the dataset's shape are used, so no data file is needed.

    python benchmarks/throughput.py --profile cpu --dataset pneumoniamnist --device cpu
    python benchmarks/throughput.py --profile gpu --dataset bloodmnist --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from msflow.config import make_config
from msflow.flow import flow_loss, sample_t
from msflow.model import build
from msflow.results import device_name
from msflow.sampler import classify, generate
from msflow.train import resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn, n_images: int, device: torch.device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return n_images * iters / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--dataset", default="pneumoniamnist")
    p.add_argument("--device", default="auto")
    p.add_argument("--iters", type=int, default=5, help="timed iterations per measurement")
    p.add_argument("--eval-batch", type=int, default=0, help="batch for classification/generation (default: the profile's)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args()

    device = resolve_device(args.device)
    cfg = make_config(args.dataset, args.profile)
    comps = build(cfg)
    model, code, info = comps.model.to(device), comps.code, comps.info
    res, b = cfg.data.resolution, cfg.train.batch_size
    eb = args.eval_batch or min(cfg.eval.batch_size, 512)
    g = torch.Generator(device).manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = dict(device_type="cuda", dtype=torch.bfloat16, enabled=cfg.train.bf16 and device.type == "cuda")
    x = torch.rand(b, info.channels, res, res, device=device) * 2 - 1
    labels = torch.randint(0, info.num_classes, (b,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train_step():
        y = code.encode(labels, res, generator=g)
        t = sample_t(b, cfg.flow.t_one_frac, g, device)
        with torch.autocast(**amp):
            out = flow_loss(model, x, y, t, torch.randn_like(x), torch.randn_like(y), cfg.flow.sigma_min, cfg.flow.lam)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    xe = torch.rand(eb, info.channels, res, res, device=device) * 2 - 1
    le = torch.randint(0, info.num_classes, (eb,), device=device)

    def cls(steps):
        def f():
            with torch.autocast(**amp):
                classify(model, code, xe, steps, "euler", generator=g)
        return f

    def gen():
        with torch.autocast(**amp):
            generate(model, code, le, info.channels, res, cfg.eval.gen_steps, "euler", generator=g)

    it = args.iters
    row = {
        "profile": args.profile,
        "dataset": info.flag,
        "device": device_name(device),
        "parameters_M": round(model.num_parameters() / 1e6, 3),
        "resolution": res,
        "train_batch": b,
        "train_images_per_s": _rate(train_step, b, device, 2, it),
        "classify_1step_images_per_s": _rate(cls(1), eb, device, 1, it),
        "classify_25step_images_per_s": _rate(cls(25), eb, device, 1, max(1, it // 5)),
        f"generate_{cfg.eval.gen_steps}step_images_per_s": _rate(gen, eb, device, 1, max(1, it // 5)),
        "eval_batch": eb,
    }
    if device.type == "cuda":
        row["peak_memory_MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        row["peak_rss_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        print(json.dumps(row))
    else:
        for k, v in row.items():
            print(f"{k:32s} {v:.1f}" if isinstance(v, float) else f"{k:32s} {v}")


if __name__ == "__main__":
    main()
