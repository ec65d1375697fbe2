"""Command line: ``msflow train | evaluate | generate | data``.

Examples::

    msflow train --dataset pneumoniamnist --recipe cpu --set flow.lam=0.5
    torchrun --nproc-per-node 4 -m msflow train --dataset bloodmnist --recipe gpu   # data-parallel on 4 GPUs
    msflow evaluate --run runs/pneumoniamnist-cpu
    msflow generate --run runs/pneumoniamnist-cpu --per-class 8 --out samples.png
    msflow data --dataset bloodmnist            # check (and with --download, fetch) a file
    msflow data --synthetic /tmp/fake --dataset dermamnist --size 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from msflow import __version__
from msflow.config import RECIPES, make_config, parse_overrides
from msflow.data import ENV_ROOT, DataError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help=f"MedMNIST data folder (default: ${ENV_ROOT}, else ~/.medmnist)")
    p.add_argument("--download", action="store_true", help="download missing MedMNIST files (needs internet)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msflow", description="MedSymmFlow: classify, generate and abstain with one flow.")
    parser.add_argument("--version", action="version", version=f"msflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a run (resumes an unfinished one)", description="Train MedSymmFlow on a MedMNIST dataset.")
    t.add_argument("--dataset", required=True, help="pneumoniamnist, bloodmnist, dermamnist, retinamnist, ...")
    t.add_argument("--recipe", default="cpu", choices=list(RECIPES), help="named settings (default: cpu)")
    t.add_argument("--out", default=None, help="run folder (default: runs/<dataset>-<recipe>)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE", help="override config fields, e.g. train.lr=1e-3")
    t.add_argument("--force", action="store_true", help="discard the run folder's contents and start afresh")
    t.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation after training")
    _common(t)

    e = sub.add_parser("evaluate", help="evaluate a run on a split", description="Evaluate a trained run; writes eval_<split>.json.")
    e.add_argument("--run", required=True, help="run folder")
    e.add_argument("--split", default="test", choices=("train", "val", "test"))
    e.add_argument("--checkpoint", default="best", choices=("best", "final"), help="best (chosen on validation) or final")
    e.add_argument("--reuse", action="store_true", help="print the recorded evaluation of the same checkpoint and settings, if any, instead of recomputing")
    e.add_argument("--repeats", type=int, default=None, help="stochastic evaluations (default: the run's, 5 in the paper)")
    e.add_argument("--steps", type=int, default=None, help="ODE steps for classification (default: the run's)")
    e.add_argument("--solver", default=None, help="euler, heun, midpoint, rk4 (default: the run's)")
    e.add_argument("--views", default=None, help="none, flips or dihedral: average the maps read off transformed copies "
                   "of each image (default: the run's, none as in the paper); recorded as eval_<split>_<views>.json")
    _common(e)

    g = sub.add_parser("generate", help="generate images from class codes", description="Generate a grid of images per class.")
    g.add_argument("--run", required=True, help="run folder")
    g.add_argument("--classes", default=None, help="comma-separated class indices (default: all)")
    g.add_argument("--per-class", type=int, default=8, help="images per class (one row each)")
    g.add_argument("--steps", type=int, default=None, help="ODE steps (default: the run's, 25 in the paper)")
    g.add_argument("--solver", default=None, help="euler, heun, midpoint, rk4")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--checkpoint", default="best", choices=("best", "final"))
    g.add_argument("--out", default=None, help="PNG path (default: <run>/samples.png)")
    g.add_argument("--device", default="auto")

    d = sub.add_parser("data", help="check, download or synthesise MedMNIST files", description="Check a MedMNIST file against its MD5.")
    d.add_argument("--dataset", required=True)
    d.add_argument("--size", type=int, default=28, choices=(28, 64, 128, 224))
    d.add_argument("--synthetic", default=None, metavar="ROOT", help="write a synthetic file of the exact format into ROOT instead")
    d.add_argument("--data-root", default=None)
    d.add_argument("--download", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"train": _train, "evaluate": _evaluate, "generate": _generate, "data": _data}[args.command](args)
    except (DataError, ValueError, OSError, RuntimeError) as err:
        print(f"msflow {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"msflow {args.command}: interrupted; a run resumes where it stopped when started again", file=sys.stderr)
        return 130


def _train(args) -> int:
    from msflow.train import train

    cfg = make_config(args.dataset, args.recipe, parse_overrides(args.set), seed=args.seed)
    out = Path(args.out or f"runs/{cfg.data.dataset}-{args.recipe}")
    result = train(cfg, out, args.data_root, args.device, args.download, args.force)
    return report_training(result, out, args)


def report_training(result, out: Path, args) -> int:
    """Print what a training run did and, unless ``args.no_eval``, evaluate it on the test split; under torchrun only
    the main process does."""
    from msflow.runs import evaluate_run

    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"trained {result.steps} steps ({result.images_seen} images) in {result.train_seconds:.0f} s; "
          f"best validation accuracy {result.best['val_acc']:.4f} at step {result.best['step']} -> {out}")
    if not args.no_eval:
        _, record = evaluate_run(out, "test", data_root=args.data_root, device=args.device, download=args.download)
        print_metrics(record)
    return 0


def _evaluate(args) -> int:
    from msflow.runs import evaluate_run

    over = {k: v for k, v in {"repeats": args.repeats, "steps": args.steps, "solver": args.solver, "views": args.views}.items()
            if v is not None}
    _, record = evaluate_run(args.run, args.split, args.checkpoint, args.data_root, args.device, args.download, over,
                             reuse=args.reuse)
    if int(os.environ.get("RANK", "0")) == 0:
        print_metrics(record)
    return 0


def _generate(args) -> int:
    import torch

    from msflow.plotting import grid, save_png, to_uint8
    from msflow.runs import generate_from_run, load_run

    loaded = load_run(args.run, args.checkpoint, args.device)
    k = loaded.components.info.num_classes
    classes = [int(c) for c in args.classes.split(",")] if args.classes else list(range(k))
    bad = [c for c in classes if not 0 <= c < k]
    if bad:
        raise ValueError(f"classes {bad} do not exist; {loaded.components.info.title} has classes 0..{k - 1}")
    labels = torch.tensor(classes).repeat_interleave(args.per_class)
    gen = generate_from_run(loaded, labels, args.steps, args.solver, args.seed)
    out = Path(args.out or Path(args.run) / "samples.png")
    save_png(grid(to_uint8(gen.images), nrow=args.per_class), str(out), scale=2)
    names = ", ".join(f"{c}: {loaded.components.info.label_names[c]}" for c in classes)
    print(f"wrote {len(labels)} images ({gen.nfe} network evaluations each; rows = {names}) to {out}")
    return 0


def _data(args) -> int:
    from msflow.data import locate, write_synthetic

    if args.synthetic:
        path = write_synthetic(args.synthetic, args.dataset, args.size)
        print(f"wrote synthetic {path} (marked synthetic in {Path(args.synthetic) / 'synthetic.json'})")
        return 0
    path, md5, synthetic = locate(args.dataset, args.size, args.data_root, args.download)
    print(f"{path}: MD5 {md5} {'(synthetic, matches its manifest)' if synthetic else 'matches MedMNIST'}")
    return 0


def print_metrics(record: dict) -> None:
    """An evaluation record's main metrics, mean +- std over its stochastic passes."""
    m = record["metrics"]
    keys = ("acc", "auc_paper", "auc_medmnist", "aurc", "ece")
    summary = {k: f"{m['mean'][k]:.4f} +- {m['std'][k]:.4f}" for k in keys}
    print(f"{record['dataset']['title']} {record['dataset']['split']} ({m['settings']['repeats']} passes):")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    sys.exit(main())
