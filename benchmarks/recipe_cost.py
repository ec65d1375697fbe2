"""A recipe's costs on a device: training, classification (1 and 25 steps) and generation throughput, and memory.

Prints one table. Random inputs of the dataset's shape are used, so no data file is needed. For a
latent recipe, training is timed with the VAE posteriors cached (the default path) and without (the VAE
encodes every batch), and classification includes encoding the images and decoding the label latents.

    python benchmarks/recipe_cost.py --recipe cpu --dataset pneumoniamnist --device cpu
    python benchmarks/recipe_cost.py --recipe gpu --dataset bloodmnist --device cuda
    python benchmarks/recipe_cost.py --recipe latent-gpu --dataset bloodmnist --device cuda --set latent.vae=sd-random
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from msflow.config import make_config, parse_overrides
from msflow.evaluate import bf16_autocast
from msflow.flow import flow_loss, sample_t
from msflow.model import build
from msflow.files import device_name
from msflow.sampler import classify, generate
from msflow.train import resolve_device, train_autocast


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
    p.add_argument("--recipe", default="cpu", help="a recipe of msflow.config.RECIPES")
    p.add_argument("--dataset", default="pneumoniamnist")
    p.add_argument("--device", default="auto")
    p.add_argument("--iters", type=int, default=5, help="timed iterations per measurement")
    p.add_argument("--eval-batch", type=int, default=0, help="batch for classification/generation (default: the recipe's)")
    p.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE", help="config overrides")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args()

    device = resolve_device(args.device)
    cfg = make_config(args.dataset, args.recipe, parse_overrides(args.set))
    comps = build(cfg, device)
    model, code, info = comps.model.to(device), comps.code, comps.info
    res, b = cfg.data.resolution, cfg.train.batch_size
    eb = args.eval_batch or min(cfg.eval.batch_size, 512)
    g = torch.Generator(device).manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    size = cfg.data.size
    raw = torch.randint(0, 256, (b, info.channels, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, info.num_classes, (b,), device=device)
    codec = comps.codec
    if codec is not None:  # posteriors as the cache holds them
        mean, logvar = (t.half() for t in codec.posterior(codec.to_vae_input(raw)))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step(x):
        y = code.encode(labels, res, generator=g)
        t = sample_t(b, cfg.flow.t_one_frac, g, device)
        with train_autocast(cfg.train, device):
            out = flow_loss(model, x, y, t, torch.randn_like(x), torch.randn_like(y), cfg.flow.sigma_min, cfg.flow.lam)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    def train_step():  # the path training takes: cached posteriors for a latent run
        step(codec.sample(mean, logvar, g) if codec is not None else comps.prepare(raw))

    def train_step_uncached():
        with bf16_autocast(device):  # the frozen VAE encodes as inference does
            m, lv = codec.posterior(codec.to_vae_input(raw))
        step(codec.sample(m, lv, g))

    re = torch.randint(0, 256, (eb, info.channels, size, size), dtype=torch.uint8, device=device)
    le = torch.randint(0, info.num_classes, (eb,), device=device)

    def cls(steps):
        def f():
            with bf16_autocast(device):  # as msflow.evaluate runs inference
                classify(model, code, comps.prepare(re), steps, "euler", generator=g)
        return f

    def gen():
        with bf16_autocast(device):  # as msflow.evaluate runs inference
            comps.to_image(generate(model, code, le, model.image_channels, res, cfg.eval.gen_steps, "euler", generator=g).images)

    it = args.iters
    with train_autocast(cfg.train, device):
        train_precision = "bf16 autocast" if torch.is_autocast_enabled(device.type) else "fp32"
    row = {
        "recipe": args.recipe,
        "dataset": info.flag,
        "device": device_name(device),
        "parameters_M": f"{model.num_parameters() / 1e6:.3f}",
        "resolution": res,
        "latent": cfg.latent.vae if codec is not None else "no",
        "train_batch": b,
        "train_precision": train_precision,
        "train_images_per_s": _rate(train_step, b, device, 2, it),
        **({"train_uncached_images_per_s": _rate(train_step_uncached, b, device, 1, it)} if codec is not None else {}),
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
