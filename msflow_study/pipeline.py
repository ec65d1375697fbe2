"""Run the study: execute the notebooks with papermill for the chosen datasets and run, then build the book.

    python -m msflow_study run [--name cpu] [--force] [--no-book] [dataset ...]     (scripts/study.sh runs it)

Executed notebooks go to ``book/executed/`` and runs (results files, small checkpoints) to ``results/``,
where the book renders them. A notebook whose executed copy exists is not run again unless ``--force``
is given; a finished training run is always reused (``--force`` retrains). A dataset whose data is
missing is reported and skipped; the summary page then says which results are missing and why.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import papermill as pm

from msflow.data import STUDY_DATASETS, get_info
from msflow_study.executor import execute_notebook
from msflow_study.experiments import ExperimentError, load
from msflow_study.registry import data_status, editions, run_config, run_path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = ROOT / "book" / "executed"
RUNS = "../results"  # as seen from notebooks/, where papermill runs them
STAGES = ("train", "evaluate", "generate")
EXTRAS = ("uncertainty", "fidelity")  # heavier: ResNet-18 baselines and sample sweeps; run with --extra
TITLES = {"uncertainty": "uncertainty vs baselines", "fidelity": "generation metrics"}

TOC_HEAD = """\
# Written by msflow_study/pipeline.py from the runs that exist; edit the template there.
format: jb-book
root: book/intro
parts:
  - caption: The study
    chapters:
      - file: book/method
      - file: book/executed/data
        title: The data
      - file: book/executed/summary
        title: Results
        sections:
{runs}
      - file: book/uncertainty
      - file: book/generation
      - file: book/executed/explore
        title: Explore the model
  - caption: Using it
    chapters:
      - file: book/reproducing
      - file: book/api
"""


QUICK_CELL_TIMEOUT = 600  # seconds, for the pages that read runs (recipes, summary, explore): their cells take seconds to a minute
# once the runs exist (the explorer's first cell trains a quick run of a few minutes when there is none)


def execute(name: str, out: Path, params: dict, force: bool, log: list[str], cell_timeout: int | None = None) -> bool:
    """Execute ``notebooks/<name>.ipynb`` into ``out`` unless it exists; True if it succeeded or existed.

    ``cell_timeout``: see :func:`msflow_study.executor.execute_notebook` (quick notebooks only)."""
    if out.exists() and not force:
        log.append(f"reused {out.relative_to(ROOT)}")
        return True
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"study: executing {name} -> {out.relative_to(ROOT)} with {params}", flush=True)
    try:
        execute_notebook(NOTEBOOKS / f"{name}.ipynb", out, params, NOTEBOOKS, cell_timeout, progress_bar=True,
                         say=lambda line: print(f"study: {line}", flush=True))
    except Exception as err:  # noqa: BLE001 - a failed page (or a dead kernel) must not stop the other datasets
        # the partial notebook is kept for inspection, outside the book, so that a later run executes it again
        kept = ROOT / "_build" / "failed" / out.relative_to(EXECUTED)
        kept.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.replace(kept)
        reason = f"{err.ename}: {err.evalue}" if isinstance(err, pm.PapermillExecutionError) else f"{type(err).__name__}: {err}"
        log.append(f"FAILED {name} {params}: {reason} (partial notebook kept in {kept.relative_to(ROOT)})")
        return False
    log.append(f"executed {out.relative_to(ROOT)} in {time.time() - t0:.0f} s")
    return True


def write_toc(name: str) -> None:
    """List the executed pages under the results chapter: per dataset, the pages of run ``name`` and then of
    every other run executed here (``book/executed/<flag>-<run>/``), then its recipe comparison."""
    entries = []
    for ds in STUDY_DATASETS:
        info = get_info(ds)
        done = sorted(f.name[len(info.flag) + 1:] for f in EXECUTED.glob(f"{info.flag}-*") if f.is_dir())
        names = [name] + [p for p in done if p != name]
        pages = [(f"{info.flag}-{p}/{stage}", f"{info.title}, {p}: {TITLES.get(stage, stage)}")
                 for p in names for stage in STAGES + EXTRAS]
        pages.append((f"{info.flag}-recipes", f"{info.title}: recipes compared"))
        entries += [f"          - file: book/executed/{page}\n            title: \"{title}\""
                    for page, title in pages if (EXECUTED / f"{page}.ipynb").exists()]
    (ROOT / "_toc.yml").write_text(TOC_HEAD.format(runs="\n".join(entries)).replace("        sections:\n\n", "\n"))


def notebook_params(items: list[str]) -> dict[str, dict]:
    """``["uncertainty.ensemble=1", ...]`` to ``{"uncertainty": {"ensemble": 1}}`` (ints, floats, booleans, else strings)."""
    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, param = key.partition(".")
        if not (sep and dot) or name not in STAGES + EXTRAS:
            raise SystemExit(f"study: --param {item!r} is not NOTEBOOK.NAME=VALUE with NOTEBOOK one of {STAGES + EXTRAS}")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        else:
            value = {"true": True, "false": False}.get(value.lower(), value)
        out.setdefault(name, {})[param] = value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m msflow_study run", description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="*", default=["pneumoniamnist"], help="datasets to run (default: pneumoniamnist)")
    p.add_argument("--name", default="cpu", help="the run executed per dataset: an entry of experiments/*.toml or a recipe "
                   "(default: cpu)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default="", help="MedMNIST folder (default: $MSFLOW_DATA, else ~/.medmnist)")
    p.add_argument("--force", action="store_true", help="re-execute notebooks and retrain runs")
    p.add_argument("--no-book", action="store_true", help="skip building the book")
    p.add_argument("--compare", nargs="*", default=[], metavar="RUN",
                   help="also compare these runs per dataset (time to accuracy), e.g. cpu-reference cpu: entries of "
                        "experiments/*.toml (seeds and ensembles included) or recipes")
    p.add_argument("--extra", nargs="*", default=[], choices=EXTRAS,
                   help="also run these per dataset: uncertainty (ResNet-18 baselines), fidelity (generation metrics)")
    p.add_argument("--param", nargs="*", default=[], metavar="NOTEBOOK.NAME=VALUE",
                   help="a parameter of one notebook, e.g. uncertainty.ensemble=1 fidelity.per_class=100")
    args = p.parse_args(argv)
    extra = notebook_params(args.param)
    from msflow.config import RECIPES

    experiments = load()
    known = set(experiments.runs) | set(experiments.ensembles) | set(RECIPES)
    unknown = [name for name in args.compare if name not in known]
    if unknown:  # datasets after --compare are taken for runs: say so rather than compare nothing
        raise SystemExit(f"study: --compare {' '.join(unknown)}: no such runs in experiments/*.toml, nor recipes; "
                         "datasets go before --compare, or after -- that ends its list")

    log: list[str] = []
    ok = execute("data", EXECUTED / "data.ipynb", {"data_root": args.data_root}, args.force, log)
    for ds in args.datasets:
        flag = get_info(ds).flag
        try:
            size = run_config(args.name, flag, experiments=experiments).data.size
        except ExperimentError as err:
            raise SystemExit(f"study: {err}") from err
        status = data_status(flag, args.data_root or None, size)
        if status != "ok":
            log.append(f"skipped {flag}: {status}")
            continue
        folder = EXECUTED / f"{flag}-{args.name}"
        common = {"dataset": flag, "run_name": args.name, "runs_dir": RUNS, "device": args.device, "data_root": args.data_root}
        if args.force:
            shutil.rmtree(ROOT / "results" / run_path("", flag, args.name), ignore_errors=True)
        for stage in STAGES + tuple(args.extra):
            if not execute(stage, folder / f"{stage}.ipynb", common | extra.get(stage, {}), args.force, log):
                ok = False
                break
    for ds in args.compare and args.datasets:
        flag = get_info(ds).flag
        ok &= execute("recipes", EXECUTED / f"{flag}-recipes.ipynb",
                      {"dataset": flag, "run_names": ",".join(args.compare), "runs_dir": RUNS}, True, log, cell_timeout=QUICK_CELL_TIMEOUT)
    names = editions(ROOT / "results", args.name)  # this run's rows first, then the other editions that have runs
    ok &= execute("summary", EXECUTED / "summary.ipynb", {"run_names": ",".join(names), "runs_dir": RUNS}, True, log, cell_timeout=QUICK_CELL_TIMEOUT)
    ok &= execute("explore", EXECUTED / "explore.ipynb", {"run_name": args.name, "runs_dir": RUNS, "data_root": args.data_root},
                  True, log, cell_timeout=QUICK_CELL_TIMEOUT)
    write_toc(args.name)
    print("\n".join(["study: done"] + [f"  {line}" for line in log]))
    if not args.no_book:
        ok &= subprocess.call(["bash", str(ROOT / "scripts" / "build_book.sh")]) == 0
        print(f"study: book in {ROOT / '_build' / 'html' / 'index.html'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
