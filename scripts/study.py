"""Run the study: execute the notebooks with papermill for the chosen datasets and profile, then build the book.

    python scripts/study.py [--profile cpu] [--force] [--no-book] [dataset ...]

Executed notebooks go to ``book/executed/`` and runs (results files, small checkpoints) to ``results/``,
where the book renders them. A notebook whose executed copy exists is not run again unless ``--force``
is given; a finished training run is always reused (``--force`` retrains). A dataset whose data is
missing is reported and skipped; the summary page then says which results are missing and why.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import papermill as pm

from msflow.config import PROFILES, make_config
from msflow.data import STUDY_DATASETS, get_info
from msflow.study import data_status, editions, execute_notebook, run_path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = ROOT / "book" / "executed"
RUNS = "../results"  # as seen from notebooks/, where papermill runs them
STAGES = ("train", "evaluate", "generate")
EXTRAS = ("uncertainty", "fidelity")  # heavier: ResNet-18 baselines and sample sweeps; run with --extra
TITLES = {"uncertainty": "uncertainty vs baselines", "fidelity": "generation metrics"}

TOC_HEAD = """\
# Written by scripts/study.py from the runs that exist; edit the template there.
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

    ``cell_timeout``: see :func:`msflow.study.execute_notebook` (quick notebooks only)."""
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


def write_toc(profile: str) -> None:
    """List the executed pages under the results chapter: per dataset, the run pages of ``profile`` and then of
    every other profile executed here (``book/executed/<flag>-<profile>/``), then its recipe comparison."""
    entries = []
    for ds in STUDY_DATASETS:
        info = get_info(ds)
        done = sorted(f.name[len(info.flag) + 1:] for f in EXECUTED.glob(f"{info.flag}-*") if f.is_dir())
        profiles = [profile] + [p for p in done if p != profile]
        pages = [(f"{info.flag}-{p}/{stage}", f"{info.title}, {p}: {TITLES.get(stage, stage)}")
                 for p in profiles for stage in STAGES + EXTRAS]
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="*", default=["pneumoniamnist"], help="datasets to run (default: pneumoniamnist)")
    p.add_argument("--profile", default="cpu", help="smoke, cpu, gpu or paper")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default="", help="MedMNIST folder (default: $MSFLOW_DATA, else ~/.medmnist)")
    p.add_argument("--force", action="store_true", help="re-execute notebooks and retrain runs")
    p.add_argument("--no-book", action="store_true", help="skip building the book")
    p.add_argument("--compare", nargs="*", default=[], metavar="PROFILE",
                   help="also compare the runs of these profiles per dataset (time to accuracy), e.g. cpu-reference cpu; "
                        "PROFILE-seedK names the run of PROFILE trained with seed K (results/DATASET-PROFILE-seedK), "
                        "NAME-ens an ensemble written by msflow ensemble (results/DATASET-NAME-ens)")
    p.add_argument("--extra", nargs="*", default=[], choices=EXTRAS,
                   help="also run these per dataset: uncertainty (ResNet-18 baselines), fidelity (generation metrics)")
    p.add_argument("--param", nargs="*", default=[], metavar="NOTEBOOK.NAME=VALUE",
                   help="a parameter of one notebook, e.g. uncertainty.ensemble=1 fidelity.per_class=100")
    args = p.parse_args()
    extra = notebook_params(args.param)
    # a compared name is a profile, a profile's run trained with another seed (--set seed=K --out .../DATASET-PROFILE-seedK)
    # or an ensemble of seeds (msflow ensemble --out .../DATASET-NAME-ens)
    unknown = [name for name in args.compare if re.sub(r"-seed\d+$", "", name) not in PROFILES and not name.endswith("-ens")]
    if unknown:  # datasets after --compare are taken for profiles: say so rather than compare nothing
        raise SystemExit(f"study: --compare {' '.join(unknown)}: not profiles (choose from {', '.join(sorted(PROFILES))}); "
                         "datasets go before --compare, or after -- that ends its list")

    log: list[str] = []
    ok = execute("data", EXECUTED / "data.ipynb", {"data_root": args.data_root}, args.force, log)
    for ds in args.datasets:
        flag = get_info(ds).flag
        status = data_status(flag, args.data_root or None, make_config(flag, args.profile).data.size)
        if status != "ok":
            log.append(f"skipped {flag}: {status}")
            continue
        folder = EXECUTED / f"{flag}-{args.profile}"
        common = {"dataset": flag, "profile": args.profile, "runs_dir": RUNS, "device": args.device, "data_root": args.data_root}
        if args.force:
            shutil.rmtree(ROOT / "results" / run_path("", flag, args.profile), ignore_errors=True)
        for stage in STAGES + tuple(args.extra):
            if not execute(stage, folder / f"{stage}.ipynb", common | extra.get(stage, {}), args.force, log):
                ok = False
                break
    for ds in args.compare and args.datasets:
        flag = get_info(ds).flag
        ok &= execute("recipes", EXECUTED / f"{flag}-recipes.ipynb",
                      {"dataset": flag, "profiles": ",".join(args.compare), "runs_dir": RUNS}, True, log, cell_timeout=QUICK_CELL_TIMEOUT)
    profiles = editions(ROOT / "results", args.profile)  # this profile's rows first, then the others that have runs
    ok &= execute("summary", EXECUTED / "summary.ipynb", {"profiles": ",".join(profiles), "runs_dir": RUNS}, True, log, cell_timeout=QUICK_CELL_TIMEOUT)
    ok &= execute("explore", EXECUTED / "explore.ipynb", {"profile": args.profile, "runs_dir": RUNS, "data_root": args.data_root},
                  True, log, cell_timeout=QUICK_CELL_TIMEOUT)
    write_toc(args.profile)
    print("\n".join(["study: done"] + [f"  {line}" for line in log]))
    if not args.no_book:
        ok &= subprocess.call(["bash", str(ROOT / "scripts" / "build_book.sh")]) == 0
        print(f"study: book in {ROOT / '_build' / 'html' / 'index.html'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
