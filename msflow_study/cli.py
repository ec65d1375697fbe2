"""The study's command line: ``python -m msflow_study <command>``.

Examples::

    python -m msflow_study list                                     # the experiments: runs, bases, datasets, why
    python -m msflow_study train cpu-lam05-x6 --dataset bloodmnist   # train one entry of experiments/*.toml
    python -m msflow_study choose-views --run results/bloodmnist-cpu-lam05-x6
    python -m msflow_study ensemble cpu-ens --dataset bloodmnist     # read an ensemble entry's seeds together
    python -m msflow_study migrate                                  # write run.json of every recorded run (idempotent)
    python -m msflow_study readme                                   # the README's headline table, from the records
    python -m msflow_study run --name cpu pneumoniamnist            # execute the notebooks, build the book
    python -m msflow_study gpu-session --budget 510                 # the prepared GPU session
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msflow.data import DataError

from msflow_study.experiments import EXPERIMENTS_DIR, ROOT, ExperimentError

RUNS = ROOT / "results"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m msflow_study", description="The MedSymmFlow study built on msflow.")
    sub = parser.add_subparsers(dest="command", required=True)

    lst = sub.add_parser("list", help="list the experiments' runs and ensembles")

    t = sub.add_parser("train", help="train a run of the experiment files and evaluate it on the test split")
    t.add_argument("name", help="an entry of experiments/*.toml (or a recipe)")
    t.add_argument("--dataset", required=True)
    t.add_argument("--runs-dir", default=str(RUNS), help="folder of the run folders (default: results/)")
    t.add_argument("--data-root", default=None)
    t.add_argument("--download", action="store_true")
    t.add_argument("--device", default="auto")
    t.add_argument("--force", action="store_true", help="discard the run folder's contents and start afresh")
    t.add_argument("--no-eval", action="store_true")

    c = sub.add_parser("choose-views", help="choose a run's readout views on validation, then read the test split with them")
    c.add_argument("--run", required=True, help="run folder")
    c.add_argument("--options", default="none,flips", help="views compared, none first (default: none,flips)")
    c.add_argument("--data-root", default=None)
    c.add_argument("--download", action="store_true")
    c.add_argument("--device", default="auto")

    n = sub.add_parser("ensemble", help="read the test split with an ensemble of seeds of one run",
                       description="Average, pass by pass, the recorded label-map distances of runs trained alike with "
                       "different seeds (each read with choose-views first), choose the ensemble's readout views on "
                       "validation as for a run; writes eval_test.json, readout.json and run.json into its folder.")
    n.add_argument("name", help="an ensemble of experiments/*.toml (e.g. cpu-ens)")
    n.add_argument("--dataset", required=True)
    n.add_argument("--runs-dir", default=str(RUNS))

    m = sub.add_parser("migrate", help="write the run.json of every recorded run from its files (idempotent)")
    m.add_argument("--runs-dir", default=str(RUNS))

    r = sub.add_parser("readme", help="write the headline results table of the README and the book's first page from the records")
    r.add_argument("--runs-dir", default=str(RUNS))
    r.add_argument("--check", action="store_true", help="only check that those tables are the records' (exit 1 if not)")

    b = sub.add_parser("restore-baseline", help="train a recorded ResNet-18 baseline again and keep its weights if they "
                       "give its recorded logits (the weights are not committed)")
    b.add_argument("folder", help="the baseline's folder, e.g. results/baselines/bloodmnist-resnet18-2e-seed0")
    b.add_argument("--data-root", default=None)
    b.add_argument("--device", default="cpu")

    for q in (lst, t, n, m):
        q.add_argument("--experiments", default=str(EXPERIMENTS_DIR), help="folder of the experiment files (default: experiments/)")
    sub.add_parser("run", help="execute the study's notebooks and build the book (see msflow_study.pipeline)", add_help=False)
    sub.add_parser("gpu-session", help="the prepared GPU session (see msflow_study.gpu_session)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("run", "gpu-session"):  # their own parsers
        from msflow_study import gpu_session, pipeline

        return (pipeline.main if argv[0] == "run" else gpu_session.main)(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return {"list": _list, "train": _train, "choose-views": _choose_views, "ensemble": _ensemble,
                "migrate": _migrate, "readme": _readme, "restore-baseline": _restore_baseline}[args.command](args)
    except (ExperimentError, DataError, ValueError, OSError, RuntimeError) as err:
        print(f"msflow_study {args.command}: error: {err}", file=sys.stderr)
        return 2


def _list(args) -> int:
    from msflow_study.experiments import load

    exp = load(args.experiments)
    for name, e in sorted(exp.runs.items(), key=lambda kv: (str(kv[1].file), kv[0])):
        over = ", ".join(f"{k}={v}" for k, v in e.set.items())
        print(f"{e.file.stem:13} {name:24} base {e.base:16} {' '.join(e.datasets):40} {over}")
    for name, e in exp.ensembles.items():
        print(f"{e.file.stem:13} {name:24} ensemble of " + "; ".join(f"{d}: {', '.join(m)}" for d, m in e.members.items()))
    return 0


def _train(args) -> int:
    from msflow.cli import report_training
    from msflow_study.experiments import load
    from msflow_study.registry import run_path, train_run

    result = train_run(args.name, args.dataset, args.runs_dir, args.data_root, args.device, args.download, args.force,
                       experiments=load(args.experiments))
    return report_training(result, run_path(args.runs_dir, args.dataset, args.name), args)


def _restore_baseline(args) -> int:
    from msflow_study.baselines import restore_baseline

    out = restore_baseline(args.folder, args.data_root, args.device)
    print(f"{out / 'baseline.pt'}: the recorded network (validation accuracy and recorded logits match)")
    return 0


def _choose_views(args) -> int:
    from msflow_study.protocol import choose_readout, parse_readout_options

    # recorded evaluations of the same settings are read, never recomputed: the published single readout stays as it is
    rec = choose_readout(args.run, parse_readout_options(args.options), data_root=args.data_root, device=args.device,
                         download=args.download, reuse=True)
    print_readout(rec, "validation")
    print(f"-> {Path(args.run) / 'readout.json'}")
    return 0


def _ensemble(args) -> int:
    from msflow.cli import print_metrics
    from msflow.files import read_json
    from msflow_study.experiments import load
    from msflow_study.protocol import ensemble_runs
    from msflow_study.registry import ensemble_record, run_path, write_record

    exp = load(args.experiments)
    if args.name not in exp.ensembles:
        raise ExperimentError(f"no ensemble {args.name!r} in experiments/*.toml; ensembles: {', '.join(exp.ensembles) or 'none'}")
    record_of = ensemble_record(args.name, args.dataset, exp)
    out = run_path(args.runs_dir, args.dataset, args.name)
    _, record = ensemble_runs([run_path(args.runs_dir, args.dataset, m) for m in record_of["members"]], out)
    write_record(out, record_of)
    for m in record["ensemble"]["members"]:
        print(f"member {m['run']} (seed {m['seed']}): accuracy {m['acc']:.4f}, AUC (paper's) {m['auc_paper']:.4f}")
    print_metrics(record)
    readout = read_json(out / "readout.json")
    print_readout(readout, "ensemble on validation")
    files = dict.fromkeys(("eval_test.json", readout["test"]["file"], "readout.json", "run.json"))
    print("-> " + ", ".join(str(out / f) for f in files))
    return 0


def _migrate(args) -> int:
    from msflow_study.registry import migrate

    from msflow_study.experiments import load

    migrate(args.runs_dir, load(args.experiments))
    return 0


HEADLINE_PAGES = ("README.md", "book/intro.md")
"""The pages that open with the study at a glance (:func:`msflow_study.report.headline_table`)."""


def _readme(args) -> int:
    from msflow_study.report import headline_table, readme_with_headline

    table, stale = headline_table(args.runs_dir), []
    for name in HEADLINE_PAGES:
        path = ROOT / name
        text = path.read_text()
        new = readme_with_headline(text, table)
        if new != text:
            stale.append(name)
            if not args.check:
                path.write_text(new)
        if not args.check:
            print(f"{name}: headline table {'written' if new != text else 'unchanged'}")
    if args.check and stale:
        print(f"{', '.join(stale)}: the headline table differs from the records; run python -m msflow_study readme",
              file=sys.stderr)
        return 1
    return 0


def print_readout(readout: dict, where: str) -> None:
    """The readout views compared on validation (a ``readout.json``) and the test metrics of the chosen ones."""
    for views, o in readout["options"].items():
        print(f"{where}, views {views} ({o['views']}): accuracy {o['mean']['acc']:.4f} +- {o['std']['acc']:.4f}")
    t = readout["test"]
    print(f"chosen on validation: {readout['chosen']}; test accuracy {t['mean']['acc']:.4f} +- {t['std']['acc']:.4f}, "
          f"AUC (paper's) {t['mean']['auc_paper']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
