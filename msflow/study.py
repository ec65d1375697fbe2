"""What the study's notebooks share: smoke-mode data and runs, run folders, and the results tables."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from msflow.data import DataError, STUDY_DATASETS, get_info, locate, write_synthetic
from msflow.paper import PAPER_MODEL_28, TABLE1
from msflow.results import read_json



def smoke_dir() -> Path:
    """Where smoke mode keeps its synthetic data and runs: ``$MSFLOW_SMOKE_DIR``, else a temp folder."""
    return Path(os.environ.get("MSFLOW_SMOKE_DIR") or Path(tempfile.gettempdir()) / "msflow-smoke")


def data_root(smoke: bool, root: str = "", datasets: Iterable[str] = STUDY_DATASETS) -> str | None:
    """The data root a notebook uses: synthetic files in smoke mode, else ``root`` (``""``: the default)."""
    if not smoke:
        return root or None
    out = smoke_dir() / "data"
    for name in datasets:
        flag = get_info(name).flag
        if not (out / f"{flag}.npz").exists():
            write_synthetic(out, flag, 28, seed=0)
    return str(out)


def run_path(runs_dir: str | os.PathLike, dataset: str, profile: str) -> Path:
    """``<runs_dir>/<dataset>-<profile>``."""
    return Path(runs_dir) / f"{get_info(dataset).flag}-{profile}"


def recorded_config(run: str | os.PathLike, cfg):
    """The configuration a run folder records, when it is a run of ``cfg``'s dataset, profile and seed; else ``cfg``.

    A run whose length was fitted to a time box (the GPU session sets ``train.max_steps``) is thereby
    reused as it is, and the differences from the profile's defaults are printed.
    """
    from msflow.config import RunConfig, config_diff

    path = Path(run) / "config.json"
    if not path.exists():
        return cfg
    found = RunConfig.from_dict(read_json(path))
    if (found.data.dataset, found.profile, found.seed) != (cfg.data.dataset, cfg.profile, cfg.seed):
        return cfg
    diff = config_diff(cfg, found)
    if diff:
        print(f"{Path(run).name} records these settings besides its profile's: "
              + ", ".join(f"{k} = {b} (profile: {a})" for k, (a, b) in diff.items()))
    return found


def smoke_run(dataset: str, seed: int = 0) -> Path:
    """A trained smoke run of ``dataset`` (trained once, in seconds, on synthetic data); ``smoke-seed<K>`` for seed K > 0."""
    from msflow.config import make_config
    from msflow.results import ConfigMismatchError
    from msflow.train import train

    cfg = make_config(dataset, "smoke", seed=seed)
    path = run_path(smoke_dir() / "runs", dataset, "smoke" + (f"-seed{seed}" if seed else ""))
    root = data_root(True, datasets=[dataset])
    try:
        train(cfg, path, root, "cpu", progress=False)
    except ConfigMismatchError:  # left by another msflow version: smoke runs are disposable
        train(cfg, path, root, "cpu", progress=False, force=True)
    return path


def data_status(dataset: str, root: str | None, size: int = 28) -> str:
    """``"ok"`` if the dataset's file of this size is present and verified, else the reason it is not."""
    try:
        locate(dataset, size, root)
        return "ok"
    except (DataError, FileNotFoundError) as err:
        return str(err)


def pct(mean: float, std: float | None = None, digits: int = 1) -> str:
    """``0.8812, 0.004`` -> ``"88.1 ± 0.4"``."""
    return f"{100 * mean:.{digits}f}" + (f" ± {100 * std:.{digits}f}" if std is not None else "")


def execute_notebook(src: str | os.PathLike, out: str | os.PathLike, parameters: dict[str, Any], cwd: str | os.PathLike,
                     cell_timeout: int | None = None, progress_bar: bool = False, say=print):
    """Execute the notebook ``src`` into ``out`` with papermill (kernel ``python3``, run from ``cwd``).

    Every wait on the kernel's shell and IOPub channels is cut into slices of at most :data:`POLL_SLICE_S` seconds
    (:func:`sliced_get_msg`): the asyncio poll of pyzmq can miss the wake-up of a message that has arrived, and it
    finds the message only when its poll times out. Papermill waits for a cell's reply with one poll as long as the
    cell timeout, forever without one: here the explorer page's ``execute_reply``, sent by the kernel 1.5 s into the
    cell, was read 600 s later, when the cell timeout expired (the timestamps are in the executed page; twice, the
    kernel meanwhile idle and answering a second client at once), and without a timeout such a wait never ended (three
    renders and one CI run hung). With slices, such a message is read within a slice.

    ``cell_timeout`` (seconds) is for notebooks whose every cell is quick: a cell that runs past it is taken for a
    lost reply, and the notebook is executed once more; a second timeout is raised. Notebooks that train get no
    timeout, as a training cell may run for hours on a CPU."""
    import papermill as pm

    attempts = 2 if cell_timeout else 1
    for attempt in range(1, attempts + 1):
        try:
            with _sliced_kernel_polls(POLL_SLICE_S):
                return pm.execute_notebook(str(src), str(out), parameters=parameters, kernel_name="python3", cwd=str(cwd),
                                           progress_bar=progress_bar, execution_timeout=cell_timeout)
        except TimeoutError:  # nbclient's CellTimeoutError
            if attempt == attempts:
                raise
            say(f"{Path(src).name}: a cell ran past {cell_timeout} s (a lost kernel reply); executing the notebook once more")


POLL_SLICE_S = 2.0
"""The longest single poll of a kernel channel in :func:`execute_notebook`: a reply whose wake-up was missed waits at
most this long."""


def sliced_get_msg(get_msg, slice_s: float):
    """An async ``get_msg(timeout=None)`` of a kernel channel that polls ``get_msg`` in slices of at most ``slice_s``
    seconds until ``timeout`` (forever if None), then raises ``queue.Empty`` as ``get_msg`` does."""
    from queue import Empty

    async def get_msg_sliced(timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = slice_s if deadline is None else min(slice_s, max(0.0, deadline - time.monotonic()))
            try:
                return await get_msg(timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    return get_msg_sliced


@contextlib.contextmanager
def _sliced_kernel_polls(slice_s: float):
    """Within the block, papermill's notebook client polls its kernel channels with :func:`sliced_get_msg`."""
    import papermill.engines as engines
    from nbclient.util import run_sync

    base = engines.PapermillNotebookClient

    class SlicedClient(base):
        async def async_start_new_kernel_client(self):
            kc = await super().async_start_new_kernel_client()
            for channel in (kc.shell_channel, kc.iopub_channel):
                channel.get_msg = sliced_get_msg(channel.get_msg, slice_s)
            return kc

        # nbclient binds its synchronous wrapper to its own coroutine; papermill calls the wrapper
        start_new_kernel_client = run_sync(async_start_new_kernel_client)

    engines.PapermillNotebookClient = SlicedClient
    try:
        yield
    finally:
        engines.PapermillNotebookClient = base


EDITIONS = ("gpu-long", "gpu", "cpu-ens", "cpu-lam05-x8", "cpu-lam05-x6", "cpu-w24", "cpu-lam03-auc-x2", "cpu-lam03-auc", "cpu-long", "cpu")  # the profiles the book's results chapter shows, in this order


def editions(runs_dir: str | os.PathLike, first: str, datasets: Iterable[str] = STUDY_DATASETS) -> list[str]:
    """``first``, then the other profiles of ``EDITIONS`` of which a finished run exists: the rows of the results page."""
    datasets = list(datasets)
    return [first] + [p for p in EDITIONS if p != first and our_results(runs_dir, p, datasets)]


def our_results(runs_dir: str | os.PathLike, profile: str, datasets: Iterable[str] = STUDY_DATASETS,
                readout: bool = False) -> dict[str, dict[str, Any]]:
    """Evaluation records (``eval_test.json``) of the finished runs of a profile, by dataset.

    With ``readout``, the test records of the readout views chosen on validation instead (the runs whose
    ``readout.json`` exists, see :func:`msflow.runs.choose_readout`), each with its ``readout.json`` under ``"readout"``.
    """
    out = {}
    for ds in datasets:
        run = run_path(runs_dir, ds, profile)
        if readout:
            if (run / "readout.json").exists():
                choice = read_json(run / "readout.json")
                out[get_info(ds).flag] = read_json(run / choice["test"]["file"]) | {"readout": choice}
        elif (run / "eval_test.json").exists():
            out[get_info(ds).flag] = read_json(run / "eval_test.json")
    return out


def readout_table(choice: dict[str, Any], reference: dict[str, Any]):
    """The readout views compared on validation (``readout.json``), with the test metrics of the reference readout
    (``reference``: the run's ``eval_test.json``) and of the chosen views; the others are not evaluated on test."""
    import pandas as pd

    rows = []
    for views, o in choice["options"].items():
        test = reference["metrics"] if views == reference["eval"].get("views", "none") else (
            choice["test"] if views == choice["chosen"] else None)
        rows.append({
            "views": views, "network evaluations per image": o["views"] * reference["eval"]["steps"],
            "validation ACC": pct(o["mean"]["acc"], o["std"]["acc"], 2),
            "validation AUC (paper's)": pct(o["mean"]["auc_paper"], o["std"]["auc_paper"], 2),
            "chosen": "yes" if views == choice["chosen"] else "",
            "test ACC": pct(test["mean"]["acc"], test["std"]["acc"], 2) if test else "not evaluated",
            "test AUC (paper's)": pct(test["mean"]["auc_paper"], test["std"]["auc_paper"], 2) if test else "not evaluated",
            "test AUC (MedMNIST)": pct(test["mean"]["auc_medmnist"], test["std"]["auc_medmnist"], 2) if test else "not evaluated",
        })
    return pd.DataFrame(rows).set_index("views")


def readout_prose(chosen: dict[str, dict[str, dict[str, Any]]], ours: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One Markdown line per run whose readout views were chosen on validation (``{profile: our_results(...,
    readout=True)}``), against the same run's reference readout (``ours``)."""
    lines = []
    for profile, runs in chosen.items():
        for flag, rec in runs.items():
            choice, ref = rec["readout"], ours.get(profile, {}).get(flag)
            val = {v: o["mean"]["acc"] for v, o in choice["options"].items()}
            m = rec["metrics"]
            line = (f"- **{get_info(flag).title}**, `{profile}`: validation accuracy "
                    + ", ".join(f"{pct(a, digits=2)} % with views {v}" for v, a in val.items())
                    + f"; chosen: **{choice['chosen']}**, test accuracy {pct(m['mean']['acc'], m['std']['acc'], 2)} %, "
                    f"AUC {pct(m['mean']['auc_paper'], m['std']['auc_paper'], 2)} % (paper's)")
            if ref is not None and choice["chosen"] != "none":
                r = ref["metrics"]
                line += (f", against {pct(r['mean']['acc'], r['std']['acc'], 2)} % and "
                         f"{pct(r['mean']['auc_paper'], r['std']['auc_paper'], 2)} % read once")
            lines.append(line + ".")
    return "\n".join(lines) if lines else "No run has its readout views chosen yet (`msflow evaluate --run RUN --choose-views`)."


def results_table(ours: dict[str, dict[str, dict[str, Any]]], datasets: Iterable[str] = STUDY_DATASETS,
                  missing: dict[str, str] | None = None):
    """One row per model, one (AUC, ACC) column pair per dataset: our runs first (one row per profile, as
    ``{profile: our_results(...)}``), then Table 1.

    AUC is the paper's distance AUC for our rows, as in the paper's MedSymmFlow rows. Missing results
    are shown as "not run", or as ``missing[profile]`` says. Rows from the paper are labelled "paper, Table 1" (``msflow.paper.SOURCE_PAPER`` cites it).
    """
    import pandas as pd

    datasets = [get_info(d).flag for d in datasets]
    rows = []
    for profile, runs in ours.items():
        row: dict[str, Any] = {"model": f"MedSymmFlow (28), ours, {profile}", "source": "this study"}
        for ds in datasets:
            rec = runs.get(ds)
            m = rec["metrics"] if rec else None
            gap = (missing or {}).get(profile, "not run")
            row[(ds, "AUC")] = pct(m["mean"]["auc_paper"], m["std"]["auc_paper"]) if m else gap
            row[(ds, "ACC")] = pct(m["mean"]["acc"], m["std"]["acc"]) if m else gap
        rows.append(row)
    for model, vals in TABLE1.items():
        r: dict[str, Any] = {"model": model, "source": "paper, Table 1"}
        for ds in datasets:
            r[(ds, "AUC")], r[(ds, "ACC")] = (f"{v:.1f}" for v in vals[ds])
        rows.append(r)
    df = pd.DataFrame(rows).set_index(["model", "source"])
    df.columns = pd.MultiIndex.from_tuples([(get_info(d).title, k) for d, k in df.columns])
    return df


def smoke_results(datasets: Iterable[str] = STUDY_DATASETS, seeds: int = 1) -> Path:
    """Smoke runs of ``datasets``, trained and evaluated on the test split; returns their runs folder. With ``seeds``
    above 1, also ``smoke-seed1`` ... and their ensemble ``smoke-ens`` (every seed evaluated on validation too)."""
    from msflow.runs import ensemble_runs, evaluate_run

    for ds in datasets:
        root = data_root(True, datasets=[ds])
        members = [smoke_run(ds, seed) for seed in range(seeds)]
        for run in members:
            for split in ("test", "val") if seeds > 1 else ("test",):
                if not (run / f"eval_{split}.json").exists():
                    evaluate_run(run, split, data_root=root, device="cpu", progress=False)
        ens = run_path(smoke_dir() / "runs", ds, "smoke-ens")
        if seeds > 1 and not (ens / "eval_test.json").exists():
            ensemble_runs(members, ens)
    return smoke_dir() / "runs"


def short_commit(commit: str | None) -> str:
    """A recorded commit shortened to 12 hex digits, keeping what follows the hash (``-dirty``, `` (declared)``)."""
    if not commit:
        return "not recorded"
    sha = commit[:40]
    return sha[:12] + commit[40:] if all(c in "0123456789abcdef" for c in sha) and len(sha) == 40 else commit


def runs_table(ours: dict[str, dict[str, dict[str, Any]]]):
    """Provenance of each result (``{profile: our_results(...)}``): training length, wall time, device, commit, data."""
    import pandas as pd

    rows = []
    for profile, runs in ours.items():
        for ds, rec in runs.items():
            t, prov = rec["training"], rec["provenance"]
            rows.append({
                "dataset": get_info(ds).title,
                "profile": profile,
                "parameters": f"{t['parameters'] / 1e6:.2f} M" if t.get("parameters") else "",
                "steps": t["steps"],
                "images seen": t["images_seen"],
                "training, min": round(t["train_seconds"] / 60, 1),
                "trained on": t["device"],
                "trained at commit": short_commit(t.get("git_commit")),
                "evaluated on": prov["device"],
                "evaluated at commit": short_commit(prov["git_commit"]),
                "data": "synthetic" if rec["dataset"]["synthetic"] else f"MedMNIST, MD5 {rec['dataset']['md5'][:8]}",
            })
    if not rows:
        return pd.DataFrame({"dataset": [], "note": []})
    return pd.DataFrame(rows).set_index(["dataset", "profile"]).sort_index(level=0, sort_remaining=False)


def seed_runs(runs_dir: str | os.PathLike, dataset: str, profile: str) -> dict[int, Path]:
    """The finished runs of ``profile`` on ``dataset`` by training seed, as each run's ``config.json`` records it: the
    profile's own run and every ``<dataset>-<profile>-seed<K>`` (trained with ``--set seed=K``)."""
    base = run_path(runs_dir, dataset, profile)
    found = {}
    for run in [base, *sorted(base.parent.glob(f"{base.name}-seed*"))]:
        if run != base and not re.fullmatch(rf"{re.escape(base.name)}-seed\d+", run.name):
            continue  # e.g. <profile>-seed1-other: another profile's run
        if (run / "eval_test.json").exists() and (run / "config.json").exists():
            seed = int(read_json(run / "config.json")["seed"])
            if seed in found:
                raise ValueError(f"{found[seed]} and {run} were both trained with seed {seed}; one of them is misnamed")
            found[seed] = run
    return dict(sorted(found.items()))


def seeds_table(runs_dir: str | os.PathLike, profiles: Iterable[str], datasets: Iterable[str] = STUDY_DATASETS):
    """Test accuracy and AUC of each training seed of the profiles trained with more than one, and their mean with the
    range over seeds; None if no profile was. The ± of each seed's row is over stochastic passes of that one network."""
    import numpy as np
    import pandas as pd

    rows = []
    for ds in datasets:
        for profile in profiles:
            runs = seed_runs(runs_dir, ds, profile)
            if len(runs) < 2:
                continue
            means = []
            for seed, run in runs.items():
                m = read_json(run / "eval_test.json")["metrics"]
                best = read_json(run / "train.json")["best"]["step"] if (run / "train.json").exists() else ""
                means.append(m["mean"])
                rows.append({"dataset": get_info(ds).title, "profile": profile, "seed": str(seed), "selected step": str(best),
                             **{name: pct(m["mean"][key], m["std"][key], 2) for name, key in _SEED_METRICS}})
            summary = {}
            for name, key in _SEED_METRICS:
                v = np.array([mean[key] for mean in means])
                summary[name] = f"{pct(v.mean(), digits=2)} ({pct(v.min(), digits=2)} to {pct(v.max(), digits=2)})"
            rows.append({"dataset": get_info(ds).title, "profile": profile, "seed": f"mean of {len(runs)} (range)",
                         "selected step": "", **summary})
    if not rows:
        return None
    return pd.DataFrame(rows).set_index(["dataset", "profile", "seed"])


_SEED_METRICS = (("ACC", "acc"), ("AUC, paper's", "auc_paper"), ("AUC, MedMNIST", "auc_medmnist"))


def _recorded(runs_dir: str | os.PathLike, profiles: Iterable[str], name: str, datasets: Iterable[str]) -> Iterator[tuple[str, str, dict]]:
    """``(dataset title, profile, record)`` of each run that holds the results file ``name``."""
    profiles = list(profiles)
    for ds in datasets:
        for profile in profiles:
            path = run_path(runs_dir, ds, profile) / name
            if path.exists():
                yield get_info(ds).title, profile, read_json(path)


def uncertainty_overview(runs_dir: str | os.PathLike, profiles: Iterable[str], datasets: Iterable[str] = STUDY_DATASETS):
    """The uncertainty targets per dataset and profile, from each run's ``uncertainty.json`` (written by the
    uncertainty notebook); None if no run has one."""
    import pandas as pd

    rows = []
    for title, profile, rec in _recorded(runs_dir, profiles, "uncertainty.json", datasets):
        for c in rec["checks"]:
            ref = c["reference"]
            rows.append({"dataset": title, "profile": profile, "target": c["check"], "MedSymmFlow score": c["MedSymmFlow"],
                         "ours": round(c["ours"], 4), "reference": "not measured" if ref is None or ref != ref else round(ref, 4),
                         "met": c["met"],
                         "baselines": f"{rec['settings']['ensemble']} ResNet-18, {rec['settings']['baseline_epochs']} epochs"})
    return pd.DataFrame(rows).set_index(["dataset", "profile", "target"]) if rows else None


def generation_overview(runs_dir: str | os.PathLike, profiles: Iterable[str], datasets: Iterable[str] = STUDY_DATASETS):
    """Generation at each run's own setting (the paper's 25 Euler steps unless the profile says otherwise), from
    ``generation.json``, per dataset and profile; None if no run has one."""
    import pandas as pd

    rows = []
    for title, profile, rec in _recorded(runs_dir, profiles, "generation.json", datasets):
        solver, nfe = rec["settings"]["key"]
        key = next(r for r in rec["sweep"] if (r["solver"], r["nfe"]) == (solver, nfe))
        cas = rec["cas"]
        rows.append({
            "dataset": title, "profile": profile, "setting": f"{solver}, {nfe} NFE",
            "Fréchet distance": round(key["frechet"], 2),
            "floor: validation split": f"{rec['floor']['val']['frechet']:.2f} ({rec['floor']['val']['n']} images)",
            "training images, as many": round(rec["floor"]["frechet"], 2),
            "precision": round(key["precision"], 3), "recall": round(key["recall"], 3),
            "class fidelity": round(key["class_fidelity"], 3),
            "CAS (generated)": round(cas["generated"], 3),
            "same classifier, as many real": round(cas["real_same_n"], 3),
            "CAS classifier": f"{cas['classifier']}, {cas['epochs']} epochs, {cas['n_generated']} images",
            "images/s": f"{key['images_per_second']:.0f} ({rec['provenance']['device']})",
            "samples per class": rec["settings"]["per_class"],
        })
    return pd.DataFrame(rows).set_index(["dataset", "profile"]) if rows else None


def results_prose(ours: dict[str, dict[str, dict[str, Any]]], datasets: Iterable[str] = STUDY_DATASETS) -> str:
    """One Markdown line per dataset and profile (``{profile: our_results(...)}``), every number read from the
    results files."""
    lines = []
    for ds in datasets:
        info = get_info(ds)
        auc, acc = TABLE1[PAPER_MODEL_28][info.flag]
        found = {p: runs[info.flag] for p, runs in ours.items() if info.flag in runs}
        if not found:
            lines.append(f"- **{info.title}**: no run of {', '.join(f'`{p}`' for p in ours) or 'any profile'} here yet.")
            continue
        lines.append(f"- **{info.title}** (paper: accuracy {acc:.1f} %, AUC {auc:.1f} %):")
        for profile, rec in found.items():
            m, t = rec["metrics"], rec["training"]
            lines.append(
                f"  - `{profile}`: accuracy {pct(m['mean']['acc'], m['std']['acc'])} %, "
                f"AUC {pct(m['mean']['auc_paper'], m['std']['auc_paper'])} % by the paper's definition and "
                f"{pct(m['mean']['auc_medmnist'], m['std']['auc_medmnist'])} % by the MedMNIST evaluator's, "
                f"over {m['settings']['repeats']} stochastic passes, after {t['images_seen']:,} training images "
                f"({t['train_seconds'] / 60:.1f} min on {t['device']})" + _ensemble_note(rec) + "."
            )
    return "\n".join(lines)


def _ensemble_note(rec: dict[str, Any]) -> str:
    """", the mean of 3 networks: seeds 0, 1, 2 of `cpu-w24`, ..." for an ensemble's record, else ""."""
    if "ensemble" not in rec:
        return ""
    members = rec["ensemble"]["members"]
    return (f", the mean of {len(members)} networks: seeds {', '.join(str(m['seed']) for m in members)} of "
            f"`{rec['config']['profile']}` (images and minutes are their sum)")


def run_facts(train: dict[str, Any], evaluation: dict[str, Any], readout: dict[str, Any] | None = None,
              train_split: dict[str, Any] | None = None) -> dict[str, str]:
    """One run's numbers as the book's prose quotes them, each formatted and read from its results files.

    ``train``, ``evaluation``: the run's ``train.json`` and ``eval_test.json``; ``readout``: its ``readout.json`` if the
    readout views were chosen on validation; ``train_split``: its ``eval_train.json`` if the training split was
    evaluated. Test metrics have two decimals, validation metrics (one pass during training) one. Keys:
    ``steps``, ``images``, ``minutes``, ``seconds``, ``steps_per_s``, ``device``, ``params`` (the network's parameter
    count in millions, with its unit), ``select`` (the validation metric that
    chose the checkpoint), ``step`` (the one it chose), ``best_val`` and ``best_val_auc`` (its validation accuracy and
    AUC), ``val_<step>`` and ``val_auc_<step>`` for every validation point of training, ``acc``, ``acc_std``, ``auc``,
    ``aucm`` (test: accuracy, AUC by the paper's definition and by the MedMNIST evaluator's), ``recall_<k>`` (test
    recall of class ``k`` in the evaluation's first pass, whose confusion matrix is recorded), and where recorded
    ``readout``, ``readout_acc``, ``readout_auc``, ``readout_aucm`` (the chosen views and their test metrics; the
    views are ``none`` when a single read was kept) and ``train_acc``.
    """
    best, m = train["best"], evaluation["metrics"]["mean"]
    seconds = train["train_seconds"]
    facts = {
        "steps": f"{train['steps']}", "images": f"{train['images_seen']:,}", "minutes": f"{seconds / 60:.1f}",
        "seconds": f"{seconds:.0f}", "steps_per_s": f"{train['steps'] / seconds:.1f}",
        "device": train["provenance"]["device"], "params": f"{train['parameters'] / 1e6:.1f} M",
        "select": {"acc": "accuracy", "auc": "AUC"}.get(train["config"]["train"].get("select", "acc"), "accuracy"),
        "step": f"{best['step']}", "best_val": pct(best["val_acc"]), "best_val_auc": pct(best["val_auc"]),
    } | _test_facts(evaluation)
    for point in train["history"]:
        if point.get("val_acc") is not None:
            facts[f"val_{point['step']}"] = pct(point["val_acc"])
            facts[f"val_auc_{point['step']}"] = pct(point["val_auc"])
    facts |= _readout_facts(readout, evaluation)
    if train_split is not None:
        facts["train_acc"] = pct(train_split["metrics"]["mean"]["acc"])
    return facts


def _readout_facts(readout: dict[str, Any] | None, evaluation: dict[str, Any]) -> dict[str, str]:
    """The readout facts of :func:`run_facts` (none without a ``readout.json``): ``readout``, ``readout_acc``,
    ``readout_auc``, ``readout_aucm``, those of the single read (``evaluation``) where it was kept."""
    if readout is None:
        return {}
    chosen = readout["test"]["mean"] if readout["chosen"] != "none" else evaluation["metrics"]["mean"]
    return {"readout": readout["chosen"], "readout_acc": pct(chosen["acc"], digits=2),
            "readout_auc": pct(chosen["auc_paper"], digits=2), "readout_aucm": pct(chosen["auc_medmnist"], digits=2)}


def _test_facts(evaluation: dict[str, Any]) -> dict[str, str]:
    """The test facts of :func:`run_facts`: ``acc``, ``acc_std``, ``auc``, ``aucm`` and ``recall_<k>``."""
    m = evaluation["metrics"]["mean"]
    facts = {"acc": pct(m["acc"], digits=2), "acc_std": pct(evaluation["metrics"]["std"]["acc"], digits=2),
             "auc": pct(m["auc_paper"], digits=2), "aucm": pct(m["auc_medmnist"], digits=2)}
    if evaluation["metrics"].get("confusion") is not None:
        from msflow.metrics import recall_from_confusion

        for k, recall in enumerate(recall_from_confusion(evaluation["metrics"]["confusion"])):
            if recall is not None:
                facts[f"recall_{k}"] = pct(recall)
    return facts


def ensemble_facts(evaluation: dict[str, Any], readout: dict[str, Any] | None = None) -> dict[str, str]:
    """An ensemble's numbers (its ``eval_test.json`` and ``readout.json``, written by
    :func:`msflow.runs.ensemble_runs`) as the prose quotes them: the test and readout facts of :func:`run_facts`,
    ``members`` (how many networks), ``seeds``, ``profile`` (their recipe), and ``images``, ``minutes`` and ``params``
    summed over the members."""
    t, members = evaluation["training"], evaluation["ensemble"]["members"]
    return ({"members": f"{len(members)}", "seeds": ", ".join(str(m["seed"]) for m in members),
             "profile": evaluation["config"]["profile"], "images": f"{t['images_seen']:,}",
             "minutes": f"{t['train_seconds'] / 60:.1f}", "params": f"{t['parameters'] / 1e6:.1f} M"}
            | _test_facts(evaluation) | _readout_facts(readout, evaluation))


def recipes_prose(facts: dict[str, dict[str, str]]) -> str:
    """One Markdown line per run (``{profile: run_facts(...)}``): its length and cost, the checkpoint its validation
    metric chose, its test metrics and, where recorded, its readout and training-split accuracy."""
    lines = []
    for profile, f in facts.items():
        line = (f"- `{profile}`: {f['steps']} steps ({f['images']} images) in {f['minutes']} min on {f['device']} "
                f"({f['steps_per_s']} steps/s); validation {f['select']} chose step {f['step']} "
                f"({f['best_val']} % accuracy, {f['best_val_auc']} % AUC on validation); test: {f['acc']} ± {f['acc_std']} % "
                f"accuracy, AUC {f['auc']} % by the paper's definition and {f['aucm']} % by the MedMNIST evaluator's")
        if f.get("readout", "none") != "none":
            line += (f"; with the {f['readout']} readout chosen on validation, {f['readout_acc']} % and "
                     f"{f['readout_auc']} % ({f['readout_aucm']} %)")
        elif "readout" in f:
            line += "; a single read was kept on validation"
        if "train_acc" in f:
            line += f"; {f['train_acc']} % of the training split classified correctly"
        lines.append(line + ".")
    return "\n".join(lines) if lines else "No finished run to describe."


def val_at_steps(facts: dict[str, dict[str, str]], every: int | None = None):
    """Validation accuracy (%) of each run (rows) at the training steps that are multiples of ``every`` and at each
    run's last step (columns); empty where a run has no validation point there. ``every`` defaults to 500 steps, or
    a multiple of 500 that keeps the longest run to twelve columns or so."""
    import math

    import pandas as pd

    points = {p: [int(k[4:]) for k in f if k.startswith("val_") and k[4:].isdigit()] for p, f in facts.items()}
    steps = sorted({s for run in points.values() for s in run})
    last = {max(run) for run in points.values() if run}
    every = every or 500 * max(1, math.ceil(max(steps, default=0) / 6000))
    cols = [s for s in steps if s % every == 0 or s in last]
    return pd.DataFrame({s: {p: f.get(f"val_{s}", "") for p, f in facts.items()} for s in cols}).rename_axis(
        columns="step")


def confusion_prose(confusion, names: list[str], below: float = 0.5) -> str:
    """A Markdown sentence on the classes whose recall is under ``below``, each with the class it is most often
    taken for (rows of ``confusion`` = true class), or that every class reaches it."""
    import numpy as np

    from msflow.metrics import recall_from_confusion

    m = np.asarray(confusion)
    support = m.sum(axis=1)
    weak = []
    for k, (name, recall) in enumerate(zip(names, recall_from_confusion(m))):
        if recall is None or recall >= below:
            continue
        others = m[k].copy()
        others[k] = -1
        j = int(others.argmax())
        weak.append(f"{name} (recall {100 * recall:.1f} %; {100 * m[k, j] / support[k]:.1f} % of its "
                    f"{support[k]:,} images are taken for {names[j]})")
    if not weak:
        return f"Every class has a recall of at least {100 * below:.0f} % in this pass."
    return (f"Classes with a recall under {100 * below:.0f} % in this pass: " + "; ".join(weak) + ".")


def explorer_runs(runs_dir: str | os.PathLike, profile: str, root: str | None, smoke: bool = False,
                  quick_steps: int = 300, device: str = "auto") -> dict[str, Path]:
    """Runs for the exploration page: the finished runs of ``profile`` whose data is here; if there are
    none, a quick PneumoniaMNIST run (the ``cpu`` profile cut to ``quick_steps`` steps) is trained first."""
    if smoke:
        return {get_info(d).flag: smoke_run(d) for d in ("pneumoniamnist", "bloodmnist")}
    found = {get_info(d).flag: run_path(runs_dir, d, profile) for d in STUDY_DATASETS}
    found = {f: p for f, p in found.items() if (p / "best.pt").exists() and data_status(f, root) == "ok"}
    if found:
        return found
    from msflow.config import make_config
    from msflow.train import train

    cfg = make_config("pneumoniamnist", "cpu", {"train.max_steps": quick_steps, "train.eval_every": quick_steps})
    path = run_path(runs_dir, "pneumoniamnist", "quick")
    train(cfg, path, root, device)
    return {"pneumoniamnist": path}
