"""Every study notebook executes headless in smoke mode (synthetic data, tiny model), as CI requires."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


RESULTS = NOTEBOOKS.parent / "results"


def _listing() -> list[str]:
    return sorted(str(p) for p in RESULTS.rglob("*")) if RESULTS.exists() else []


@pytest.fixture(scope="module")
def smoke_env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MSFLOW_SMOKE_DIR", str(tmp_path_factory.mktemp("smoke")))  # inherited by the kernels
    before = _listing()
    yield
    mp.undo()
    assert _listing() == before, "a smoke-mode notebook wrote into the repository's results/"


SMOKE_CELL_TIMEOUT = 300  # seconds; a smoke cell takes seconds, so one past this is a lost kernel reply (see execute_notebook)


def _run(name: str, out: Path, **params) -> dict:
    from msflow_study.executor import execute_notebook

    execute_notebook(NOTEBOOKS / f"{name}.ipynb", out, {"smoke": True, **params}, NOTEBOOKS, SMOKE_CELL_TIMEOUT)
    return json.loads(out.read_text())


def _outputs(nb: dict, mime: str) -> list:
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []) if mime in o.get("data", {})]


def _glued(nb: dict) -> set[str]:
    return {o["metadata"]["scrapbook"]["name"] for c in nb["cells"] if c["cell_type"] == "code"
            for o in c.get("outputs", []) if "scrapbook" in o.get("metadata", {})}


def test_every_notebook_has_a_typed_parameters_cell_and_no_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        params = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
        assert len(params) == 1, path.name
        lines = [line for line in "".join(params[0]["source"]).splitlines() if line.strip()]
        assert all(": " in line.split("=")[0] and "  # " in line for line in lines), f"{path.name}: untyped or undocumented parameter"
        assert any(line.startswith("smoke: bool = False") for line in lines), path.name
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), f"{path.name} is committed with outputs"
        assert all(c.get("id") for c in nb["cells"]), f"{path.name}: a cell without an id (nbformat 4.5 requires one)"


@pytest.mark.parametrize("name, keys, images", [
    ("data", {"data_table"}, 2),  # the samples of every dataset in one figure, their class balance in another
    ("train", {"train_images", "train_minutes", "train_best_val_acc"}, 1),
    ("evaluate", {"eval_acc", "eval_auc_paper", "eval_auc_medmnist", "eval_repeats", "eval_views_chosen"}, 3),
    ("generate", set(), 3),  # real beside generated in one figure, then the two paths
    ("uncertainty", {"uncertainty_table", "uncertainty_checks"}, 1),
    ("fidelity", {"fidelity_sweep", "fidelity_cas"}, 1),
    ("recipes", {"recipes_figure", "recipes_table", "recipes_prose", "val_steps_table", "smoke__acc", "smoke__step",
                 "smoke-seed1__acc", "smoke-ens__acc", "smoke-ens__members", "smoke-ens__minutes"}, 0),
])
def test_notebook_runs_in_smoke_mode(smoke_env, tmp_path, name, keys, images):
    nb = _run(name, tmp_path / f"{name}.ipynb")
    assert keys <= _glued(nb)
    assert len(_outputs(nb, "image/png")) >= images


def test_summary_reads_every_smoke_result(smoke_env, tmp_path):
    nb = _run("summary", tmp_path / "summary.ipynb")
    assert {"results_prose", "readout_prose", "results_table", "runs_table", "seeds_table", "arc_figure"} <= _glued(nb)
    assert len(_outputs(nb, "application/papermill.record/image/png")) == 1  # the accuracy-rejection figure
    prose = next(o["data"]["application/papermill.record/text/markdown"] for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
                 if o.get("metadata", {}).get("scrapbook", {}).get("name") == "results_prose")
    text = "".join(prose)
    for title in ("PneumoniaMNIST", "BloodMNIST", "DermaMNIST", "RetinaMNIST"):
        assert title in text
    assert "(paper: accuracy 88.0 %, AUC 95.2 %)" in text  # the paper's PneumoniaMNIST numbers, labelled as the paper's
    assert "`smoke`: accuracy" in text  # one line per profile


def test_explore_saves_the_default_view_of_every_panel(smoke_env, tmp_path):
    nb = _run("explore", tmp_path / "explore.ipynb")
    state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    texts = [m["state"]["value"] for m in state.values() if m["model_name"] == "HTMLModel"]
    # generate, classify, abstain, codes: each a PNG with the alt text that describes it
    figures = [t for t in texts if t.startswith('<img src="data:image/png;base64,')]
    assert len(figures) == 4 and all(re.search(r'alt="[^"]{40,}"', f) for f in figures)
    assert any("rejecting the" in t and "errors and" in t for t in texts)
    # the views that answer without a kernel: a menu, a slider and every frame in the page, the first one shown
    views = ["".join(o["data"]["text/html"]) for o in _outputs(nb, "text/html") if "msflow-view" in "".join(o["data"]["text/html"])]
    assert len(views) == 3 and all('<input type="range"' in v and "<select>" in v and "<script>" in v for v in views)
    assert all(re.search(r'<img src="data:image/png;base64,[^"]+" alt="[^"]{30,}"', v) for v in views)
    assert "method_schematic" in _glued(nb)  # the method chapter's figure of the two flows


def test_confusion_prose_names_the_classes_taken_for_others():
    from msflow_study.report import confusion_prose

    m = [[9, 1, 0], [0, 10, 0], [0, 8, 2]]  # class c: recall 20 %, mostly taken for b
    assert confusion_prose(m, ["a", "b", "c"]) == (
        "Classes with a recall under 50 % in this pass: c (recall 20.0 %; 80.0 % of its 10 images are taken for b).")
    assert confusion_prose([[5, 0], [1, 4]], ["a", "b"]).startswith("Every class has a recall of at least 50 %")


def test_short_commit_keeps_the_dirty_and_declared_marks():
    from msflow_study.report import short_commit

    sha = "a638c0882147308447bded7a960e94b8183f7950"
    assert short_commit(sha) == "a638c0882147"
    assert short_commit(sha + "-dirty") == "a638c0882147-dirty"
    assert short_commit(sha + " (declared)") == "a638c0882147 (declared)"
    assert short_commit(None) == "not recorded" and short_commit("unknown") == "unknown"


def _metrics(acc, auc, std=0.001):
    return {"mean": {"acc": acc, "auc_paper": auc, "auc_medmnist": auc}, "std": {"acc": std, "auc_paper": std, "auc_medmnist": std}}


def test_readout_table_and_prose_show_the_choice_on_validation_and_only_the_chosen_test_readout():
    from msflow_study.report import readout_prose, readout_table

    choice = {"options": {"none": {**_metrics(0.958, 0.990), "views": 1}, "flips": {**_metrics(0.962, 0.991), "views": 4}},
              "chosen": "flips", "test": {**_metrics(0.9531, 0.9861), "file": "eval_test_flips.json"}}
    reference = {"metrics": _metrics(0.9517, 0.9855), "eval": {"views": "none", "steps": 1}}
    table = readout_table(choice, reference)
    assert table.loc["flips", "chosen"] == "yes" and table.loc["none", "chosen"] == ""
    assert table.loc["flips", "network evaluations per image"] == 4
    assert table.loc["none", "validation ACC"] == "95.8 ± 0.1" and table.loc["flips", "test ACC"] == "95.3 ± 0.1"
    assert table.loc["none", "test ACC"] == "95.2 ± 0.1"  # the reference readout's own test record
    choice3 = {**choice, "options": {**choice["options"], "dihedral": {**_metrics(0.961, 0.992), "views": 8}}}
    assert readout_table(choice3, reference).loc["dihedral", "test ACC"] == "not evaluated"  # not chosen: not read on test
    ours = {"cpu": {"bloodmnist": {"metrics": reference["metrics"]}}}
    chosen = {"cpu": {"bloodmnist": {"metrics": choice["test"], "readout": choice}}}
    assert readout_prose(chosen, ours) == (
        "- **BloodMNIST**, `cpu`: validation accuracy 95.8 % with views none, 96.2 % with views flips; chosen: **flips**, "
        "test accuracy 95.3 ± 0.1 %, AUC 98.6 ± 0.1 % (paper's), against 95.2 ± 0.1 % and 98.6 ± 0.1 % read once.")
    assert readout_prose({}, ours).startswith("No run has its readout views chosen yet")


def test_results_table_says_not_run_or_what_a_row_names_for_a_missing_result():
    from msflow_study.report import results_table

    rec = {"metrics": _metrics(0.95, 0.985)}
    table = results_table({"cpu": {"bloodmnist": rec}, "cpu, views chosen on validation": {"bloodmnist": rec}},
                          missing={"cpu, views chosen on validation": "not compared"})
    assert table.loc[("MedSymmFlow (28), ours, cpu", "this study"), ("BloodMNIST", "ACC")] == "95.0 ± 0.1"
    assert table.loc[("MedSymmFlow (28), ours, cpu", "this study"), ("RetinaMNIST", "ACC")] == "not run"
    assert table.loc[("MedSymmFlow (28), ours, cpu, views chosen on validation", "this study"), ("RetinaMNIST", "AUC")] == "not compared"
