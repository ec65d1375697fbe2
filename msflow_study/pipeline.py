"""Run the study: execute the notebooks with papermill for the chosen datasets and run, then build the book.

    python -m msflow_study run [--name cpu] [--force] [--no-book] [dataset ...]     (scripts/study.sh runs it)

Executed notebooks go to ``book/executed/`` and runs (results files, small checkpoints) to ``results/``,
where the book renders them. A notebook whose executed copy exists is not run again unless ``--force``
is given; a finished training run is always reused (``--force`` retrains). A dataset whose data is
missing is reported and skipped; the summary page then says which results are missing and why.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import papermill as pm

from msflow.data import STUDY_DATASETS, get_info
from msflow.files import write_text_if_changed
from msflow_study.executor import execute_notebook
from msflow_study.pages import dataset_page, glued_runs, page_title, tidy_file
from msflow_study.experiments import load
from msflow_study.registry import EDITIONS, data_status, editions, run_config, run_path
from msflow_study.selection import HEADLINE, headline_recipe

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = ROOT / "book" / "executed"
RUNS = "../results"  # as seen from notebooks/, where papermill runs them
STAGES = ("train", "evaluate", "generate")
EXTRAS = ("uncertainty", "fidelity")  # heavier: ResNet-18 baselines and sample sweeps; run with --extra

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
      - file: book/compute
        sections:
{recipes}
      - file: book/executed/explore
        title: Explore the model
  - caption: Using it
    chapters:
      - file: book/reproducing
      - file: book/api
  - caption: Appendix
    chapters:
      - file: book/levers
      - file: book/references
"""


QUICK_CELL_TIMEOUT = 600  # seconds, for the pages that read runs (recipes, summary, explore): their cells take seconds to a minute
# once the runs exist (the explorer's first cell trains a quick run of a few minutes when there is none)

WORK = ROOT / ".msflow-study"
"""Where pages are executed before they replace their committed copy, and where a failed page's partial notebook is
kept (``failed/``); ignored by git."""


def execute(name: str, out: Path, params: dict, force: bool, log: list[str], cell_timeout: int | None = None) -> bool | None:
    """Execute ``notebooks/<name>.ipynb`` into ``out`` unless it exists and ``force`` is off.

    The page is executed into :data:`WORK` and replaces ``out`` only when it succeeded and differs from it in more than
    its execution times and widget ids: a committed page is never lost to a failure, nor rewritten to the same content.
    A failed page's partial notebook is kept in ``.msflow-study/failed/``, and the log says where.

    Returns:
        None if ``out`` was reused, True if it was executed, False if it failed. ``cell_timeout``: see
        :func:`msflow_study.executor.execute_notebook` (quick notebooks only).
    """
    if out.exists() and not force:
        log.append(f"reused {out.relative_to(ROOT)}")
        return None
    rel = out.relative_to(EXECUTED)
    scratch = WORK / "executing" / rel
    scratch.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"study: executing {name} -> {out.relative_to(ROOT)} with {params}", flush=True)
    try:
        execute_notebook(NOTEBOOKS / f"{name}.ipynb", scratch, params, NOTEBOOKS, cell_timeout, progress_bar=True,
                         say=lambda line: print(f"study: {line}", flush=True))
    except Exception as err:  # noqa: BLE001 - a failed page (or a dead kernel) must not stop the other datasets
        kept = WORK / "failed" / rel
        kept.parent.mkdir(parents=True, exist_ok=True)
        if scratch.exists():
            scratch.replace(kept)
        reason = f"{err.ename}: {err.evalue}" if isinstance(err, pm.PapermillExecutionError) else f"{type(err).__name__}: {err}"
        left = "its committed copy is kept" if out.exists() else "the book has no such page"
        log.append(f"FAILED {name} {params}: {reason} (partial notebook in {kept.relative_to(ROOT)}; {left})")
        return False
    tidy_file(scratch, WORK / "executing")
    if out.exists() and same_page(scratch.read_text(), out.read_text()):
        scratch.unlink()
        log.append(f"executed {out.relative_to(ROOT)} in {time.time() - t0:.0f} s: the same page as before, kept as it was")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        scratch.replace(out)
        log.append(f"executed {out.relative_to(ROOT)} in {time.time() - t0:.0f} s")
    return True


def same_page(a: str, b: str) -> bool:
    """Whether two executed notebooks differ only in what changes at every execution: papermill's and the kernel's
    times, the ids of widget models (a new random id for each widget) and of the cell papermill injects, and the memory
    addresses in objects' plain-text reprs (``<... at 0x7f...>``)."""
    return _normalised(a) == _normalised(b)


def _normalised(text: str):
    import json
    import re

    ids: dict[str, str] = {}
    text = re.sub(r"\b[0-9a-f]{32}\b", lambda m: ids.setdefault(m.group(0), f"id{len(ids)}"), text)
    text = re.sub(r" at 0x[0-9a-f]+>", " at 0x...>", text)
    nb = json.loads(text)
    volatile = ("start_time", "end_time", "duration", "execution", "iopub.execute_input", "iopub.status.busy",
                "iopub.status.idle", "shell.execute_reply")

    def clean(meta: dict) -> dict:
        meta = {k: v for k, v in meta.items() if k not in volatile}
        if isinstance(meta.get("papermill"), dict):
            meta["papermill"] = {k: v for k, v in meta["papermill"].items() if k not in volatile}
        return meta

    nb["metadata"] = clean(nb.get("metadata", {}))
    for cell in nb.get("cells", []):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            cell.pop("id", None)  # papermill gives the cell it injects a new random id at every execution
        cell["metadata"] = clean(cell.get("metadata", {}))
        cell.pop("execution_count", None)
    return nb


def write_toc() -> bool:
    """Write the results chapter's contents: per dataset, its page (``book/datasets/<flag>.md``: a tab per run with its
    test numbers and links to the pages of every run executed here, ``book/executed/<flag>-<run>/``, the
    headline first, then the book's editions in their order, :data:`~msflow_study.registry.EDITIONS`, then the other
    runs, and a link to its recipe comparison; see
    :func:`msflow_study.pages.dataset_page`), and the compute chapter's: each dataset's recipes page. The run pages
    themselves stay out of the table of contents (they are orphans, :func:`msflow_study.pages.tidy`), which lists the
    chapters, the dataset pages and the recipes pages. A file is rewritten only when its content changes; True if one
    was."""
    entries, compared, changed = [], [], False
    for ds in STUDY_DATASETS:
        info = get_info(ds)
        done = sorted(f.name[len(info.flag) + 1:] for f in EXECUTED.glob(f"{info.flag}-*") if f.is_dir())
        names = [e for e in EDITIONS if e in done] + [p for p in done if p not in EDITIONS]
        stages = {p: [s for s in STAGES + EXTRAS if (EXECUTED / f"{info.flag}-{p}" / f"{s}.ipynb").exists()] for p in names}
        recipes = EXECUTED / f"{info.flag}-recipes.ipynb"
        if not any(stages.values()) and not recipes.exists():
            continue
        quoted = glued_runs(recipes)
        recorded = [e for e in EDITIONS if e in quoted and (ROOT / "results" / f"{info.flag}-{e}" / "eval_test.json").exists()]
        runs = [e for e in EDITIONS if e in names or e in recorded] + [p for p in names if p not in EDITIONS]
        lead = (HEADLINE, headline_recipe(ROOT / "results", info.flag) or "")  # the answer first
        text = dataset_page(info.flag, runs, stages, quoted, recipes.exists(), lead)
        changed |= write_text_if_changed(ROOT / "book" / "datasets" / f"{info.flag}.md", text)
        entries.append(f"          - file: book/datasets/{info.flag}\n            title: \"{info.title}: the runs\"")
        if recipes.exists():
            compared.append(f"          - file: book/executed/{info.flag}-recipes\n            title: \"{info.title}: recipes compared\"")
    toc = TOC_HEAD.format(runs="\n".join(entries), recipes="\n".join(compared)).replace("        sections:\n\n", "\n")
    return write_text_if_changed(ROOT / "_toc.yml", toc) or changed


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
    p.add_argument("--download", action="store_true", help="download the datasets' missing MedMNIST files (needs internet)")
    p.add_argument("--force", action="store_true", help="retrain the run and re-execute its pages: replaces its recorded "
                   "results (git restores the committed ones)")
    p.add_argument("--strict", action="store_true", help="a dataset whose data is missing is an error (exit 1), not a skip")
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
    from msflow.data import DataError, locate

    experiments = load()
    known = set(experiments.runs) | set(experiments.ensembles) | set(RECIPES)
    unknown = [name for name in args.compare if name not in known]
    if unknown:  # datasets after --compare are taken for runs: say so rather than compare nothing
        raise SystemExit(f"study: --compare {' '.join(unknown)}: no such runs in experiments/*.toml, nor recipes; "
                         "datasets go before --compare, or after -- that ends its list")
    sizes = {}
    for ds in args.datasets:  # every argument is checked before anything runs
        try:
            flag = get_info(ds).flag
            sizes[flag] = run_config(args.name, flag, experiments=experiments).data.size
        except ValueError as err:  # an unknown dataset, or a run not defined for it
            raise SystemExit(f"study: {err}") from None

    log: list[str] = []
    ok, missing, changed = True, [], False
    for flag, size in sizes.items():
        try:
            locate(flag, size, args.data_root or None, args.download)
        except (DataError, OSError) as err:
            missing.append(flag)
            log.append(f"skipped {flag}: {err}")
            continue
        folder = EXECUTED / f"{flag}-{args.name}"
        run = ROOT / "results" / run_path("", flag, args.name)
        if args.force:
            shutil.rmtree(run, ignore_errors=True)
        elif (run / "train.json").exists():
            trained = json.loads((run / "train.json").read_text())
            log.append(f"reused the recorded run {run.relative_to(ROOT)} ({trained['steps']} steps, "
                       f"{trained['train_seconds'] / 60:.0f} min on {trained['provenance']['device']}): "
                       f"--force retrains it")
        common = {"dataset": flag, "run_name": args.name, "runs_dir": RUNS, "device": args.device, "data_root": args.data_root}
        for stage in STAGES + tuple(args.extra):
            done = execute(stage, folder / f"{stage}.ipynb", common | extra.get(stage, {}), args.force, log)
            if done is False:
                ok = False
                break
            changed |= bool(done)
    with_data = any(f not in missing and data_status(f, args.data_root or None) == "ok" for f in STUDY_DATASETS)
    # the pages that only read runs are executed again when a page of a run was, or when asked to (--force, --compare)
    quick = changed or args.force
    done = execute("data", EXECUTED / "data.ipynb", {"data_root": args.data_root}, args.force, log)
    ok &= done is not False
    for flag in sizes if args.compare else ():
        ok &= execute("recipes", EXECUTED / f"{flag}-recipes.ipynb", {"dataset": flag, "run_names": ",".join(args.compare),
                      "runs_dir": RUNS}, True, log, cell_timeout=QUICK_CELL_TIMEOUT) is not False
    names = editions(ROOT / "results", args.name)  # the book's editions that have runs, and this run
    ok &= execute("summary", EXECUTED / "summary.ipynb", {"run_names": ",".join(names), "runs_dir": RUNS}, quick, log,
                  cell_timeout=QUICK_CELL_TIMEOUT) is not False
    if with_data:
        ok &= execute("explore", EXECUTED / "explore.ipynb", {"run_name": EXPLORER_RUN, "runs_dir": RUNS,
                      "data_root": args.data_root}, quick, log, cell_timeout=QUICK_CELL_TIMEOUT) is not False
    else:
        log.append("skipped the explore page: it needs the data of one dataset at least (its committed copy is kept)")
    tidied = [p for p in sorted(EXECUTED.rglob("*.ipynb")) if tidy_file(p, EXECUTED)]
    if tidied:
        log.append(f"tidied {len(tidied)} committed pages (parameters cells out of the book, titles, settings tables)")
    if write_toc():
        log.append("wrote _toc.yml or the dataset pages (book/datasets/): the executed pages changed")
    if missing:
        log.append(f"missing data: {', '.join(missing)}. Put the files above into $MSFLOW_DATA, ~/.medmnist or "
                   f"../shared/data/medmnist beside this checkout, or fetch them with: bash scripts/study.sh --download "
                   f"{' '.join(missing)}")
    print("\n".join(["study: done"] + [f"  {line}" for line in log]), flush=True)
    if not args.no_book:
        ok &= subprocess.call(["bash", str(ROOT / "scripts" / "build_book.sh")]) == 0
        print(f"study: book in {ROOT / '_build' / 'html' / 'index.html'}")
    if missing and args.strict:
        ok = False
    return 0 if ok else 1


EXPLORER_RUN = "cpu-ens"
"""What the explore page loads (its committed page shows it): the first member of each dataset's seed ensemble, one
network of the headline."""


if __name__ == "__main__":
    sys.exit(main())
