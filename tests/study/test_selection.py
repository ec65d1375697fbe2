"""Every choice on validation: the recipe rule's known answers, and the committed records' evidence for every run and
ensemble the book shows."""

import hashlib
import json
from pathlib import Path

import pytest

from msflow.data import STUDY_DATASETS, get_info
from msflow_study import registry, selection
from msflow_study.selection import EvidenceError

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"


def _candidate(acc, auc=0.9, params=1_000_000, images=64_000):
    return {"val_acc": acc, "val_auc": auc, "parameters": params, "images": images}


def test_pick_recipe_takes_the_best_validation_accuracy_then_auc_then_the_cheaper():
    assert selection.pick_recipe({"a": _candidate(0.95), "b": _candidate(0.96), "c": _candidate(0.94, auc=0.99)}) == "b"
    assert selection.pick_recipe({"a": _candidate(0.96, auc=0.97), "b": _candidate(0.96, auc=0.98)}) == "b"
    assert selection.pick_recipe({"wide": _candidate(0.96, params=2_000_000), "small": _candidate(0.96)}) == "small"
    assert selection.pick_recipe({"z": _candidate(0.96), "a": _candidate(0.96)}) == "a"
    with pytest.raises(ValueError, match="no runs to choose"):
        selection.pick_recipe({})


def _run(folder: Path, seed: int, device: str, acc: float, step: int = 100, test_step: int | None = None):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"seed": seed}))
    (folder / "train.json").write_text(json.dumps({
        "provenance": {"device": device}, "parameters": 1000, "steps": 200,
        "config": {"train": {"select": "acc"}},
        "best": {"val_acc": acc, "val_auc": 0.9, "step": step, "images": 6400}}))
    (folder / "eval_test.json").write_text(json.dumps({"checkpoint": {"step": test_step or step},
                                                       "metrics": {"temperature": 0.5}}))


def test_candidates_are_the_cpu_runs_with_seed_zero_and_the_choice_ignores_test(tmp_path):
    _run(tmp_path / "bloodmnist-cpu", 0, "CPU (x86_64, 2 threads)", 0.90)
    _run(tmp_path / "bloodmnist-cpu-lam05", 0, "CPU (x86_64, 2 threads)", 0.93)
    _run(tmp_path / "bloodmnist-cpu-lam05-seed1", 1, "CPU (x86_64, 2 threads)", 0.97)  # trained after the choice
    _run(tmp_path / "bloodmnist-gpu", 0, "NVIDIA H100 80GB HBM3", 0.99)  # another device, another budget
    _run(tmp_path / "retinamnist-cpu", 0, "CPU (x86_64, 2 threads)", 0.99)  # another dataset
    assert set(selection.recipe_candidates(tmp_path, "bloodmnist")) == {"cpu", "cpu-lam05"}
    pick = selection.choose_recipe(tmp_path, "bloodmnist")
    assert pick["chosen"] == "cpu-lam05" and pick["val_images"] == get_info("bloodmnist").n_samples["val"]
    assert pick["val_se"] == pytest.approx((0.93 * 0.07 / pick["val_images"]) ** 0.5)
    evidence = selection.evidence(tmp_path, "bloodmnist", "cpu-lam05")
    assert evidence["checkpoint"] == "step 100, by validation acc 93.0 % (train.json)"
    assert evidence["temperature"].startswith("T = 0.50, fitted on validation")
    assert evidence["weights"] == "not kept: cannot be re-checked"  # no run.json with a checkpoint hash


def test_evidence_refuses_a_test_record_of_another_checkpoint_or_a_missing_record(tmp_path):
    _run(tmp_path / "bloodmnist-cpu", 0, "CPU (x86_64, 2 threads)", 0.90, step=100, test_step=200)
    with pytest.raises(EvidenceError, match="reads the checkpoint of step 200, but train.json's validation chose step 100"):
        selection.evidence(tmp_path, "bloodmnist", "cpu")
    with pytest.raises(EvidenceError, match="eval_test.json is missing"):
        selection.evidence(tmp_path, "bloodmnist", "gpu")


def test_the_headline_ensemble_must_read_the_recipe_validation_chooses(tmp_path):
    for name, acc in (("cpu", 0.95), ("cpu-w24", 0.94)):
        _run(tmp_path / f"pneumoniamnist-{name}", 0, "CPU (x86_64, 2 threads)", acc)
    ens = tmp_path / "pneumoniamnist-cpu-ens"
    ens.mkdir()
    (ens / "eval_test.json").write_text(json.dumps({"ensemble": {"members": [{"run": "pneumoniamnist-cpu-w24"}]},
                                                    "checkpoint": {}, "metrics": {}}))
    with pytest.raises(EvidenceError, match="reads seeds of cpu-w24, but validation chooses cpu"):
        selection.evidence(tmp_path, "pneumoniamnist", "cpu-ens")


# the committed records

def _shown(dataset: str) -> list[str]:
    """The runs and ensembles the book shows for ``dataset``: its editions and the headline ensemble's members."""
    names = [e for e in registry.EDITIONS if (registry.run_path(RESULTS, dataset, e) / "eval_test.json").exists()]
    head = registry.run_path(RESULTS, dataset, selection.HEADLINE) / "eval_test.json"
    if head.exists():
        names += [m["run"].partition("-")[2] for m in json.loads(head.read_text())["ensemble"]["members"]]
    return sorted(set(names))


@pytest.mark.parametrize("dataset", STUDY_DATASETS)
def test_every_run_the_book_shows_names_the_validation_evidence_of_its_choices(dataset):
    shown = _shown(dataset)
    if dataset == "dermamnist":
        assert shown == []  # never run here: no data
        return
    assert selection.HEADLINE in shown
    for name in shown:
        said = selection.evidence(RESULTS, dataset, name)
        assert "readout" in said, (dataset, name)
        if not (registry.run_path(RESULTS, dataset, name) / "eval_test.json").read_text().count('"ensemble"'):
            assert {"checkpoint", "temperature", "weights"} <= set(said), (dataset, name)
    # the headline reads every seed of the recipe validation chooses
    pick = selection.choose_recipe(RESULTS, dataset)
    assert selection.headline_recipe(RESULTS, dataset) == pick["chosen"]
    assert pick["candidates"][pick["chosen"]]["val_acc"] == max(c["val_acc"] for c in pick["candidates"].values())


def test_kept_weights_are_the_recorded_ones_and_the_lost_ones_are_marked():
    for name in registry.BOOK_CHECKPOINTS:
        folder = RESULTS / name
        recorded = json.loads((folder / "run.json").read_text())["checkpoint"]
        assert recorded["sha256"] == hashlib.sha256((folder / "best.pt").read_bytes()).hexdigest(), name
        assert recorded["bytes"] == (folder / "best.pt").stat().st_size
    lost = sorted(p.parent.name for p in RESULTS.glob("*/run.json")
                  if json.loads(p.read_text()).get("checkpoint", {}).get("sha256", "") is None)
    assert lost == ["pneumoniamnist-gpu-wide"]  # its file never came back from the GPU session
    assert not selection.checkpoint_kept(RESULTS / "pneumoniamnist-gpu-wide")
    # the book cites it: the method chapter says what its dagger means
    assert "(no-checkpoint)=" in (ROOT / "book" / "method.md").read_text()
    assert "{run}`pneumoniamnist/gpu-wide:" in (ROOT / "book" / "levers.md").read_text()
