"""The study's protocol on top of the run folders: readout views chosen on validation, ensembles of seeds, and
the generation measurements (Fréchet distance, precision/recall, class fidelity, CAS) against a ResNet-18."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from msflow import metrics
from msflow.config import EvalConfig, RunConfig
from msflow.data import get_info, load_split
from msflow.evaluate import EvalResult, Predictions, summarise
from msflow.files import provenance, read_json, save_predictions, write_json
from msflow.model import LoadedModel
from msflow.runs import eval_suffix, evaluate_run, generate_from_run, load_evaluation, load_run
from msflow.sampler import SOLVERS, VIEWS
from msflow.train import resolve_device


READOUT_OPTIONS = ("none", "flips")


"""The readout views :func:`choose_readout` compares by default, the reference's first: the flips are the training
augmentation's transforms. ``"dihedral"`` (8 views) can be added; on BloodMNIST (cpu-lam05-x8, one validation pass) it
read 96.1 % against the flips' 96.2 % at twice their cost."""


def choose_readout(
    run_dir: str | Path,
    options: tuple[str, ...] = READOUT_OPTIONS,
    data_root: str | Path | None = None,
    device: str | torch.device = "auto",
    download: bool = False,
    progress: bool = True,
    reuse: bool = True,
) -> dict[str, Any]:
    """Choose the readout views (see :data:`msflow.sampler.VIEWS`) on the validation split, then evaluate the test
    split with them; writes ``readout.json``.

    Every option is evaluated on validation with the run's passes (``eval_val[_<views>].json``). The chosen one has
    the highest mean validation accuracy; a tie goes to the option with fewer views (the cheaper readout). The test
    split is then evaluated with the chosen views (``eval_test[_<views>].json``); the test split plays no part in
    the choice.

    Returns:
        the record written to ``readout.json``, with each option's validation metrics (mean and std), the choice and
        its test metrics.
    """
    _check_readout_options(options)
    run_dir = Path(run_dir)
    val = {}
    for views in tqdm(options, desc="readout on validation", disable=not progress):
        _, rec = evaluate_run(run_dir, "val", "best", data_root, device, download, {"views": views}, progress=False, reuse=reuse)
        val[views] = {"mean": rec["metrics"]["mean"], "std": rec["metrics"]["std"], "views": len(VIEWS[views]),
                      "file": f"eval_{eval_suffix('val', 'best', views)}.json"}
    chosen = pick_readout({v: (o["mean"]["acc"], o["views"]) for v, o in val.items()})
    _, test = evaluate_run(run_dir, "test", "best", data_root, device, download, {"views": chosen}, progress=progress, reuse=reuse)
    record = _readout_record(run_dir.name, "highest mean validation accuracy; ties to fewer views", val, chosen, test)
    path = run_dir / "readout.json"
    if path.exists():  # the same choice from the same records: keep the file, and the provenance of when it was made
        found = read_json(path)
        if _canonical({k: v for k, v in found.items() if k != "provenance"}) == _canonical(record):
            return found
    record["provenance"] = provenance(resolve_device(device))  # of this choice; each evaluation file keeps its own
    write_json(path, record)
    return record


def _check_readout_options(options: tuple[str, ...]) -> None:
    """Readout options must be known views, the reference readout ``"none"`` first."""
    if not options or options[0] != "none":
        raise ValueError(f"the options must start with the reference readout 'none', got {options}")
    unknown = [o for o in options if o not in VIEWS]
    if unknown:
        raise ValueError(f"unknown readout views {unknown}; choose from {sorted(VIEWS)}")


def _readout_record(run: str, criterion: str, options: dict[str, Any], chosen: str, test: dict[str, Any]) -> dict[str, Any]:
    """The content of ``readout.json`` (without its provenance): the options compared on validation, the choice, and
    the test metrics of ``test``, the chosen views' test record."""
    return {"run": run, "criterion": criterion, "options": options, "chosen": chosen,
            "checkpoint_step": test["checkpoint"]["step"],
            "test": {"mean": test["metrics"]["mean"], "std": test["metrics"]["std"],
                     "file": f"eval_{eval_suffix('test', 'best', chosen)}.json"}}


def _canonical(obj: Any) -> str:
    """``obj`` as JSON with sorted keys, so that records read back from disk compare equal (NaN included)."""
    return json.dumps(obj, sort_keys=True, default=str)


def parse_readout_options(text: str) -> tuple[str, ...]:
    """``"none, flips"`` to ``("none", "flips")``: the comma-separated options of :func:`choose_readout`."""
    return tuple(o.strip() for o in text.split(",") if o.strip())


def pick_readout(scores: dict[str, tuple[float, int]]) -> str:
    """The readout with the highest validation accuracy, of ``{views: (accuracy, number of views)}``; a tie goes to
    fewer views."""
    return max(scores, key=lambda v: (scores[v][0], -scores[v][1]))


def ensemble_runs(members: list[str | Path], out: str | Path,
                  options: tuple[str, ...] = READOUT_OPTIONS) -> tuple[EvalResult, dict[str, Any]]:
    """Read the test split with an ensemble of runs trained alike with different seeds, from their recorded predictions.

    Pass ``r`` of the ensemble averages the members' distances to each class code in their pass ``r`` (a test image is
    then classified by the nearest code, and its uncertainty is that mean distance); the softmax temperature is fitted
    on the members' first validation pass, averaged the same way. Nothing is recomputed: each member needs its readouts
    of the validation and test splits (``python -m msflow_study choose-views --run RUN`` writes them).

    The readout views are chosen for the ensemble as :func:`choose_readout` chooses them for a run: of ``options``
    (``"none"`` first) that every member has recorded on validation, the one under which the ensemble has the highest
    mean validation accuracy, a tie going to fewer views. Writes into ``out``, as for a run: ``eval_test.json`` and
    ``predictions_test.npz`` (the reference readout, with an ``ensemble`` entry naming the members; ``training`` sums
    their cost), and ``readout.json`` with the chosen views' ``eval_test_<views>.json`` where they are not the
    reference's.

    Returns:
        The reference readout's evaluation and record (those of ``eval_test.json``).
    """
    members, out = [Path(m) for m in members], Path(out)
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two runs")
    _check_readout_options(options)
    if out.resolve() in {m.resolve() for m in members}:
        raise ValueError(f"--out {out} is one of the members; the ensemble's results go to a folder of their own")

    def recorded(split: str, views: str) -> list[tuple[EvalResult, dict[str, Any]] | None]:
        return [load_evaluation(m, split, "best", views) for m in members]

    test, val = recorded("test", "none"), recorded("val", "none")
    for m, t, v in zip(members, test, val):
        for split, found in (("val", v), ("test", t)):
            if found is None:
                raise FileNotFoundError(f"{m} has no recorded single readout of the {split} split: "
                                        f"run `python -m msflow_study choose-views --run {m}` first")
    first = test[0][1]
    base = dataclasses.replace(RunConfig.from_dict(first["config"]), seed=0)
    seeds = []
    for m, (result, rec) in zip(members, test):
        cfg = RunConfig.from_dict(rec["config"])
        if dataclasses.replace(cfg, seed=0) != base:
            differ = [f.name for f in dataclasses.fields(RunConfig) if getattr(cfg, f.name) != getattr(base, f.name) and f.name != "seed"]
            raise ValueError(f"{m} was not trained like {members[0]} (they differ in {', '.join(differ)}): "
                             "an ensemble here is of one recipe trained with different seeds")
        if cfg.seed in seeds:
            raise ValueError(f"{m} has seed {cfg.seed}, as another member: an ensemble here needs distinct seeds")
        seeds.append(cfg.seed)
        if rec["dataset"]["md5"] != first["dataset"]["md5"] or not np.array_equal(result.passes[0].labels, test[0][0].passes[0].labels):
            raise ValueError(f"{m} was evaluated on other data than {members[0]}")
        if _readout_settings(rec) != _readout_settings(first):
            raise ValueError(f"{m} was read with other evaluation settings than {members[0]} ({rec['eval']} against "
                             f"{first['eval']}): evaluate them alike")
        if len(result.passes) != len(test[0][0].passes):
            raise ValueError(f"{m} has {len(result.passes)} test passes and {members[0]} {len(test[0][0].passes)}: "
                             "evaluate them with the same --repeats")
    info = get_info(first["dataset"]["flag"])

    def combine(found: list[tuple[EvalResult, dict[str, Any]]], temperature: float) -> EvalResult:
        passes = []
        for i in range(min(len(r.passes) for r, _ in found)):
            d = np.mean([r.passes[i].distances for r, _ in found], axis=0)
            passes.append(Predictions(d, d.argmin(1), d.min(1), found[0][0].passes[0].labels))
        settings = found[0][1]["metrics"]["settings"] | {"seed": seeds, "ensemble": len(members)}
        return summarise(passes, info.task, info.num_classes, temperature, settings)

    def temperature_of(found: list[tuple[EvalResult, dict[str, Any]]]) -> float:
        return metrics.fit_temperature(np.mean([r.passes[0].distances for r, _ in found], axis=0), found[0][0].passes[0].labels)

    on_val, temperatures = {}, {}
    for views in dict.fromkeys(options):
        found = val if views == "none" else recorded("val", views)
        if any(f is None for f in found):
            continue  # not every member was read this way on validation
        temperatures[views] = temperature_of(found)
        r = combine(found, temperatures[views])
        # computed from the members' files, not written: the ensemble has no validation file of its own
        on_val[views] = {"mean": r.mean, "std": r.std, "views": len(VIEWS[views]), "file": None}
    chosen = pick_readout({v: (o["mean"]["acc"], o["views"]) for v, o in on_val.items()})
    trainings = [rec["training"] for _, rec in test]
    total = {k: sum(t[k] for t in trainings) for k in ("steps", "images_seen", "train_seconds", "parameters")}

    def same(key: str) -> Any:  # the members' common value, None where they differ
        return trainings[0][key] if all(t.get(key) == trainings[0].get(key) for t in trainings) else None

    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for views in dict.fromkeys(("none", chosen)):
        found = test if views == "none" else recorded("test", views)
        missing = [m for m, f in zip(members, found) if f is None]
        if missing:
            raise FileNotFoundError(f"the ensemble's readout chosen on validation is '{views}', and {missing[0]} has no "
                                    f"recorded readout of the test split with it: run `msflow evaluate --run {missing[0]} "
                                    f"--views {views}` first")
        result = combine(found, temperatures[views])
        record = {
            "run": out.name,
            "dataset": first["dataset"],
            "checkpoint": {"name": "best", "step": None, "val": None},
            "config": first["config"],
            "eval": found[0][1]["eval"],
            "metrics": result.to_dict(),
            "training": total | {"images_per_second": total["images_seen"] / total["train_seconds"],
                                 "device": same("device") or " and ".join(dict.fromkeys(str(t.get("device")) for t in trainings)),
                                 "git_commit": same("git_commit") or "several (see ensemble.members)"},
            "provenance": provenance("cpu"),
            "ensemble": {
                "members": [{"run": m.name, "seed": s, "checkpoint_step": rec["checkpoint"]["step"],
                             "git_commit": rec["training"]["git_commit"],
                             **{k: rec["metrics"]["mean"][k] for k in ("acc", "auc_paper", "auc_medmnist")}}
                            for m, s, (_, rec) in zip(members, seeds, found)],
                "rule": "pass by pass, the mean of the members' distances to each class code",
            },
        }
        suffix = eval_suffix("test", "best", views)
        write_json(out / f"eval_{suffix}.json", record)
        save_predictions(out / f"predictions_{suffix}.npz", distances=np.stack([p.distances for p in result.passes]).astype(np.float16),
                         labels=result.passes[0].labels)
        written[views] = (result, record)
    write_json(out / "readout.json", _readout_record(out.name, "highest mean validation accuracy of the ensemble; ties to fewer views",
                                                     on_val, chosen, written[chosen][1]) | {"provenance": provenance("cpu")})
    return written["none"]


def _readout_settings(record: dict[str, Any]) -> EvalConfig:
    """A record's evaluation settings apart from the batch size and the views (older records lack newer fields)."""
    return dataclasses.replace(EvalConfig(**record["eval"]), batch_size=1, views="none")


GENERATION_FILE = "generation.json"


GENERATION_SAMPLES = "generation_samples.npz"


def generation_metrics(
    run_dir: str | Path,
    classifier_dir: str | Path,
    data_root: str | Path | None = None,
    device: str | torch.device = "auto",
    per_class: int = 300,
    nfe: tuple[int, ...] = (1, 2, 4, 8, 25, 50),
    solvers: tuple[str, ...] = ("euler", "heun"),
    classifier_epochs: int = 20,
    cas_images: int = 0,
    cas_classifier: str = "resnet18",
    cas_epochs: int = 0,
    cas_dir: str | Path | None = None,
    seed: int = 0,
    reuse: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure a run's generation (see :mod:`msflow.fidelity`) and record it in ``generation.json``.

    * Feature space: the 512-d penultimate layer of a ResNet-18 (:mod:`msflow_study.baselines`) trained on the real
      training split, in ``classifier_dir`` (trained there if missing, reused otherwise).
    * Floor: the same measures against the test split for the validation split (images the feature network never
      trained on), and for real training images of the generated sets' size and class composition (``per_class`` of
      each class) and the whole training split (which the feature network has seen, so they read closer to it than
      unseen images would).
    * Sweep: for each solver and number of network evaluations (NFE) that the solver can spend exactly,
      ``per_class`` images of every class against the real test split: Fréchet distance, precision, recall,
      class fidelity (the classifier's accuracy on them, overall and per class) and time per image.
    * Classification Accuracy Score: a ``cas_classifier`` (``"resnet18"`` or the small ``"cnn"``) trained for
      ``cas_epochs`` (0: ``classifier_epochs``) only on ``cas_images`` generated images (0: as many as the real
      training split, with its class frequencies) at the run's generation setting, tested on the real test
      split, beside the same classifier trained on as many real training images.

    The images of the run's generation setting are kept in ``generation_samples.npz`` (uint8). When ``reuse``,
    a recorded sweep with the same settings and checkpoint is kept, and so is its CAS if its settings match too.
    """
    from msflow import fidelity  # deferred: only this function needs them
    from msflow_study import baselines

    run_dir = Path(run_dir)
    loaded = load_run(run_dir, "best", device)
    cfg, info = loaded.config, loaded.components.info
    settings = {"per_class": per_class, "nfe": list(nfe), "solvers": list(solvers), "classifier_epochs": classifier_epochs,
                "seed": seed, "checkpoint_step": loaded.meta.get("step"),
                "key": [cfg.eval.gen_solver, cfg.eval.gen_steps * SOLVERS[cfg.eval.gen_solver][1]]}
    cas_settings = {"images": cas_images, "classifier": cas_classifier, "epochs": cas_epochs or classifier_epochs}
    out_path = run_dir / GENERATION_FILE
    record = None
    if reuse and out_path.exists() and (run_dir / GENERATION_SAMPLES).exists():
        found = read_json(out_path)
        if {k: v for k, v in found.get("settings", {}).items() if k != "cas_images"} == settings:
            if (found.get("cas_settings") == cas_settings and "test_accuracy" in found.get("classifier", {})
                    and "val" in found.get("floor", {})):
                return found
            record = found  # the sweep stands; only the CAS (and what an older record lacks) is measured again
    dev = next(loaded.components.model.parameters()).device
    size = cfg.data.size
    train_split, val, test = (load_split(cfg.data.dataset, s, size, data_root) for s in ("train", "val", "test"))
    bcfg = baselines.BaselineConfig(dataset=info.flag, epochs=classifier_epochs, seed=0)
    clf, _ = baselines.load_baseline(baselines.train_baseline(bcfg, classifier_dir, data_root, dev, progress), dev)
    y_test = test.labels.numpy()
    cache: dict[str, np.ndarray] = {}

    def real_features(split) -> np.ndarray:  # each split's features once, for the floors, the sweep and the accuracy
        if split.name not in cache:
            cache[split.name] = baselines.features(clf, split.images)
        return cache[split.name]

    if record is None:
        record = {"run": run_dir.name, "dataset": {"flag": info.flag, "md5_test": test.md5, "synthetic": test.synthetic},
                  "settings": settings, **_generation_sweep(loaded, run_dir, clf, real_features(train_split), real_features(test),
                                                            train_split.labels.numpy(), settings, progress)}
    record["settings"] = settings
    if "val" not in record["floor"]:
        # The feature network was trained on the training split, so its features of training images are not those of
        # unseen images; the validation split, which it never trained on, is the floor that is read on equal terms.
        real_val, real_test = real_features(val), real_features(test)
        pr = fidelity.precision_recall(real_test, real_val)
        record["floor"]["val"] = {"frechet": fidelity.frechet_distance(real_test, real_val), "precision": pr.precision,
                                  "recall": pr.recall, "n": len(val)}
    record["classifier"] = {"network": "ResNet-18 (msflow_study.baselines)", "layer": "penultimate, 512-d",
                            "dir": Path(classifier_dir).name, "epochs": classifier_epochs,
                            "test_accuracy": float((_heads(clf, real_features(test)) == y_test).mean())}
    record["provenance"] = provenance(dev)
    write_json(out_path, record)  # the sweep and floors are kept even if the CAS below is interrupted (it completes them)
    if record.get("cas_settings") == cas_settings and "cas" in record:  # only what an older record lacked was added
        return record
    # Classification Accuracy Score: train on generated images only, with the real training split's class frequencies
    n_cas = min(cas_images or len(train_split), len(train_split))
    order = torch.randperm(len(train_split), generator=torch.Generator().manual_seed(seed))[:n_cas]
    cas_labels = train_split.labels[order]
    fake = generate_from_run(loaded, cas_labels, cfg.eval.gen_steps, cfg.eval.gen_solver, seed=seed + 1).images.cpu()
    ccfg = baselines.BaselineConfig(dataset=info.flag, epochs=cas_settings["epochs"], seed=0, arch=cas_classifier)
    parent = Path(cas_dir) if cas_dir else Path(classifier_dir).parent
    tag = f"{cas_classifier}{ccfg.epochs}e"
    on_fake = baselines.train_on(ccfg, fake, cas_labels, val, parent / f"{run_dir.name}-cas-{tag}", dev, progress,
                                 {"generated_by": run_dir.name, "checkpoint_step": settings["checkpoint_step"], "seed": seed + 1, "n": n_cas})
    # the same classifier on as many real images (the same class frequencies: the same draw of the split)
    on_real = baselines.train_on(ccfg, train_split.images[order], cas_labels, val, parent / f"{info.flag}-real{n_cas}-{tag}", dev,
                                 progress, {"subset_of": train_split.md5, "seed": seed, "n": n_cas})
    accuracy = {name: float((baselines.predict_images(baselines.load_baseline(d, dev)[0], test.images) == y_test).mean())
                for name, d in (("generated", on_fake), ("real_same_n", on_real))}
    record["cas_settings"] = cas_settings
    record["cas"] = {**accuracy, "classifier": cas_classifier, "epochs": ccfg.epochs, "n_generated": n_cas, "n_real": len(train_split)}
    record["provenance"] = provenance(dev)
    write_json(out_path, record)
    return record


def _heads(clf, feats: np.ndarray) -> np.ndarray:
    """The classes a ResNet-18 predicts from its own penultimate features (its head alone)."""
    with torch.no_grad():
        return clf.fc(torch.from_numpy(feats).to(next(clf.parameters()).device)).argmax(1).cpu().numpy()


def _generation_sweep(loaded: LoadedModel, run_dir: Path, clf, real_train: np.ndarray, real_test: np.ndarray,
                      y_train: np.ndarray, settings: dict[str, Any], progress: bool) -> dict[str, Any]:
    """The floor and the solver/NFE sweep of :func:`generation_metrics`; writes the key setting's samples."""
    from msflow import fidelity
    from msflow_study import baselines

    cfg, info = loaded.config, loaded.components.info
    dev = next(loaded.components.model.parameters()).device
    per_class, seed = settings["per_class"], settings["seed"]
    labels = torch.arange(info.num_classes).repeat_interleave(per_class)
    # The floor is read from real training images of the generated sets' size and class composition, since
    # both the Fréchet distance and precision/recall depend on them; the whole training split is kept beside it.
    rng = np.random.default_rng(seed)
    matched = np.concatenate([rng.choice(np.flatnonzero(y_train == k), per_class, replace=per_class > (y_train == k).sum())
                              for k in range(info.num_classes)])
    floor_pr = fidelity.precision_recall(real_test, real_train[matched])
    whole_pr = fidelity.precision_recall(real_test, real_train)
    floor = {"frechet": fidelity.frechet_distance(real_test, real_train[matched]), "precision": floor_pr.precision,
             "recall": floor_pr.recall, "n": len(matched),
             "whole_train": {"frechet": fidelity.frechet_distance(real_test, real_train), "precision": whole_pr.precision,
                             "recall": whole_pr.recall, "n": len(y_train)}}
    rows, key_images = [], None
    todo = [(s, b) for s in settings["solvers"] for b in settings["nfe"] if b % SOLVERS[s][1] == 0]
    for solver, budget in tqdm(todo, desc=f"generation sweep {info.flag}", disable=not progress):
        _sync(dev)
        t0 = time.perf_counter()
        gen = generate_from_run(loaded, labels, budget // SOLVERS[solver][1], solver, seed=seed)
        _sync(dev)
        seconds = time.perf_counter() - t0
        feats = baselines.features(clf, gen.images)
        pr = fidelity.precision_recall(real_test, feats)
        hit = _heads(clf, feats) == labels.numpy()  # the classifier's head on the same features: its predicted classes
        rows.append({"solver": solver, "nfe": budget, "frechet": fidelity.frechet_distance(real_test, feats),
                     "precision": pr.precision, "recall": pr.recall, "class_fidelity": float(hit.mean()),
                     "class_fidelity_per_class": [float(hit[labels.numpy() == k].mean()) for k in range(info.num_classes)],
                     "seconds_per_image": seconds / len(labels), "images_per_second": len(labels) / seconds})
        if [solver, budget] == settings["key"]:
            key_images = gen.images
    if key_images is None:  # the generation setting was not in the sweep
        key_images = generate_from_run(loaded, labels, cfg.eval.gen_steps, cfg.eval.gen_solver, seed=seed).images
    save_predictions(run_dir / GENERATION_SAMPLES, images=_uint8(key_images), labels=labels.numpy())
    return {"floor": floor, "sweep": rows}


def _uint8(images: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` in [-1, 1] to ``(B, C, H, W)`` uint8."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
