"""The report helpers: every number the book's prose and tables quote is read from the records."""

import json
from pathlib import Path

import pytest

from msflow_study import registry, report

ROOT = Path(__file__).resolve().parents[2]


def _records(select="auc", chosen="flips"):
    history = [{"step": 250, "images": 16000, "val_acc": 0.475, "val_auc": 0.708},
               {"step": 300, "images": 19200, "loss": 0.4},  # a loss-only point has no validation facts
               {"step": 500, "images": 32000, "val_acc": 0.5417, "val_auc": 0.7381},
               {"step": 750, "images": 48000, "val_acc": 0.5333, "val_auc": 0.7520}]
    train = {"steps": 750, "images_seen": 48000, "train_seconds": 300.0, "parameters": 906244, "history": history, "best": history[3],
             "config": {"train": {"select": select}}, "provenance": {"device": "CPU (x86_64, 2 threads)"}}
    metric = {"acc": 0.5195, "auc_paper": 0.72139, "auc_medmnist": 0.7243}
    evaluation = {"metrics": {"mean": metric, "std": {"acc": 0.0043, "auc_paper": 0.01, "auc_medmnist": 0.01},
                              "confusion": [[154, 80], [4, 386]]}}
    readout = {"chosen": chosen, "test": {"mean": {"acc": 0.5235, "auc_paper": 0.6962, "auc_medmnist": 0.6986}}}
    return train, evaluation, readout


def test_run_facts_read_every_number_from_the_records():
    train, evaluation, readout = _records()
    f = report.run_facts(train, evaluation, readout, {"metrics": {"mean": {"acc": 0.965}}})
    assert (f["steps"], f["images"], f["minutes"], f["seconds"], f["steps_per_s"]) == ("750", "48,000", "5.0", "300", "2.5")
    assert f["params"] == "0.9 M"
    assert (f["select"], f["step"], f["best_val"], f["best_val_auc"]) == ("AUC", "750", "53.3", "75.2")
    assert (f["val_250"], f["val_auc_500"], f["val_750"]) == ("47.5", "73.8", "53.3") and "val_300" not in f
    assert (f["acc"], f["acc_std"], f["auc"], f["aucm"]) == ("51.9", "0.4", "72.1", "72.4")
    assert (f["readout"], f["readout_acc"], f["readout_auc"], f["readout_aucm"]) == ("flips", "52.3", "69.6", "69.9")
    assert f["train_acc"] == "96.5"
    assert (f["recall_0"], f["recall_1"]) == ("65.8", "99.0")  # 154 / 234 and 386 / 390, the first pass's rows
    # a single read kept on validation: the readout facts are the single read's
    f = report.run_facts(*_records(select="acc", chosen="none"))
    assert (f["select"], f["readout"], f["readout_acc"]) == ("accuracy", "none", "51.9") and "train_acc" not in f


def test_ensemble_facts_sum_the_members_and_quote_the_readout_chosen_for_the_ensemble():
    _, evaluation, readout = _records()
    members = [{"seed": 0, "run": "bloodmnist-cpu-lam05-x6"}, {"seed": 2, "run": "bloodmnist-cpu-lam05-x6-seed2"}]
    evaluation |= {"training": {"images_seen": 96000, "train_seconds": 750.0, "parameters": 1812488},
                   "ensemble": {"members": members}, "config": {"profile": "cpu-lam05-x6"}}
    f = report.ensemble_facts(evaluation, readout)
    assert (f["members"], f["seeds"], f["run"]) == ("2", "0, 2", "cpu-lam05-x6")  # the run the members are seeds of
    assert (f["images"], f["minutes"], f["params"]) == ("96,000", "12.5", "1.8 M")
    assert (f["acc"], f["auc"], f["recall_0"]) == ("51.9", "72.1", "65.8")
    assert (f["readout"], f["readout_acc"], f["readout_auc"], f["readout_aucm"]) == ("flips", "52.3", "69.6", "69.9")
    assert "readout" not in report.ensemble_facts(evaluation)  # no readout.json: no readout facts
    assert report.ensemble_facts(evaluation, _records(chosen="none")[2])["readout_acc"] == "51.9"


def test_recipes_prose_and_matched_steps_table():
    train, evaluation, readout = _records()
    facts = {"cpu-lam03-auc": report.run_facts(train, evaluation, readout),
             "cpu": report.run_facts(*_records(select="acc", chosen="none"))}
    prose = report.recipes_prose(facts).splitlines()
    assert len(prose) == 2 and prose[0].startswith("- `cpu-lam03-auc`: 750 steps (48,000 images) in 5.0 min")
    assert "validation AUC chose step 750" in prose[0] and "with the flips readout chosen on validation, 52.3 %" in prose[0]
    assert "a single read was kept on validation" in prose[1]
    table = report.val_at_steps(facts)
    assert list(table.columns) == [500, 750]  # every 500 steps, and each run's last step
    assert table.loc["cpu", 500] == "54.2" and table.loc["cpu-lam03-auc", 750] == "53.3"
    assert report.recipes_prose({}) == "No finished run to describe."
    long = {"x8": {f"val_{s}": "90.0" for s in range(250, 12001, 250)}}
    assert list(report.val_at_steps(long).columns) == list(range(1000, 12001, 1000))  # twelve columns for 12000 steps


def _seed_run(runs_dir: Path, name: str, seed: int, acc: float, auc: float, step: int) -> None:
    run = runs_dir / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"seed": seed}))
    (run / "train.json").write_text(json.dumps({"best": {"step": step}}))
    metric = {"acc": acc, "auc_paper": auc, "auc_medmnist": auc + 0.01}
    (run / "eval_test.json").write_text(json.dumps({"metrics": {"mean": metric, "std": {k: 0.001 for k in metric}}}))


def test_seeds_table_lists_each_seed_and_their_mean_with_its_range(tmp_path):
    _seed_run(tmp_path, "retinamnist-cpu-lam03-auc-x2", 0, 0.5315, 0.7305, 2500)
    _seed_run(tmp_path, "retinamnist-cpu-lam03-auc-x2-seed1", 1, 0.5455, 0.7286, 3000)
    _seed_run(tmp_path, "retinamnist-cpu-lam03-auc-x2-seed1-other", 2, 0.1, 0.1, 1)  # not a seed of this profile
    _seed_run(tmp_path, "retinamnist-cpu", 0, 0.5, 0.7, 500)  # one seed only: no rows
    assert list(registry.seed_runs(tmp_path, "retinamnist", "cpu-lam03-auc-x2")) == [0, 1]
    table = report.seeds_table(tmp_path, ["cpu-lam03-auc-x2", "cpu"])
    rows = table.loc[("RetinaMNIST", "cpu-lam03-auc-x2")]
    assert list(rows.index) == ["0", "1", "mean of 2 (range)"]
    assert rows.loc["1", "ACC"] == "54.5 ± 0.1" and rows.loc["1", "selected step"] == "3000"
    assert rows.loc["mean of 2 (range)", "ACC"] == "53.8 (53.1 to 54.5)"
    assert rows.loc["mean of 2 (range)", "AUC, paper's"] == "73.0 (72.9 to 73.0)"
    assert rows.loc["mean of 2 (range)", "AUC, MedMNIST"] == "74.0 (73.9 to 74.1)"
    assert report.seeds_table(tmp_path, ["cpu"]) is None
    # a run folder named for one seed whose config records another seed's number is an error, not a silent duplicate
    _seed_run(tmp_path, "retinamnist-cpu-seed1", 0, 0.5, 0.7, 500)
    with pytest.raises(ValueError, match="both trained with seed 0; one of them is misnamed"):
        registry.seed_runs(tmp_path, "retinamnist", "cpu")


def test_results_page_editions(tmp_path):
    for run in ("pneumoniamnist-cpu", "bloodmnist-gpu-long", "retinamnist-other"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "eval_test.json").write_text("{}")
    # the book's editions that have a finished run, in their order, whatever run was asked for (so that the page does
    # not change with it); the asked run in its place even without a run, or first if it is no edition
    assert registry.editions(tmp_path, "gpu") == ["gpu-long", "gpu", "cpu"]
    assert registry.editions(tmp_path, "cpu") == ["gpu-long", "cpu"]
    assert registry.editions(tmp_path, "other") == ["other", "gpu-long", "cpu"]


def test_the_readme_s_headline_table_is_the_records():
    readme = (ROOT / "README.md").read_text()
    table = report.headline_table(ROOT / "results")
    assert report.readme_with_headline(readme, table) == readme, "run python -m msflow_study readme"
    head, _, *rows = table.splitlines()
    assert head == "| test ACC / AUC, % | PneumoniaMNIST | BloodMNIST | RetinaMNIST |"
    together = next(r for r in rows if r.startswith("| ours, seeds together |")).split(" | ")
    # the ensemble's number is its record's (BloodMNIST kept the single read on validation), to one decimal
    blood = json.loads((ROOT / "results" / "bloodmnist-cpu-ens" / "eval_test.json").read_text())["metrics"]["mean"]
    assert together[2] == f"{100 * blood['acc']:.1f} / {100 * blood['auc_paper']:.1f}"


@pytest.mark.parametrize("ours, expected", [
    ({"acc": 0.90, "auc_paper": 0.96}, "yes: ACC and AUC at or above the paper's"),
    ({"acc": 0.875, "auc_paper": 0.96}, "within one standard error of the test set (ACC −0.5 pt, SE 1.3)"),
    ({"acc": 0.864, "auc_paper": 0.950}, "no: ACC −1.6 pt (SE 1.3)"),
    ({"acc": 0.80, "auc_paper": 0.90}, "no: ACC −8.0 pt (SE 1.3), AUC −5.2 pt (SE 0.8)"),
])
def test_verdict_against_the_paper_by_the_test_sets_standard_error(ours, expected):
    assert report.verdict(ours, {"acc": 0.88, "auc_paper": 0.952}, {"acc": 0.013, "auc_paper": 0.008}) == expected


def test_the_books_first_page_opens_with_the_same_table():
    intro = (ROOT / "book" / "intro.md").read_text()
    table = report.headline_table(ROOT / "results")
    assert report.readme_with_headline(intro, table) == intro, "run python -m msflow_study readme"
    assert intro.index(report.README_START) < intro.index("## ")  # before the first section: the answer first
    verdicts = table.splitlines()[-1].strip("| ").split(" | ")[1:]
    assert len(verdicts) == 3 and all(v.startswith(("yes:", "no:", "within one standard error")) for v in verdicts)


def test_mark_best_bolds_the_best_number_of_each_column():
    import pandas as pd

    table = pd.DataFrame({"ACC": ["88.0", "86.4 ± 0.9", "not run"], "AURC": ["0.050", "0.047", "0.061"]})
    html = report.mark_best(table).to_html()
    styles = report.mark_best(table)._compute().ctx
    assert styles[(0, 0)] == [("font-weight", "bold")] and not styles.get((1, 0)) and not styles.get((2, 0))
    assert styles[(2, 1)] == [("font-weight", "bold")]  # the highest AURC: higher is the default
    low = report.mark_best(table[["AURC"]], higher=False)._compute().ctx
    assert low[(1, 0)] == [("font-weight", "bold")]
    assert "not run" in html
    assert report.mark_best(table).to_html() == html  # the same page at every execution


def test_the_results_chapter_tables_read_the_committed_records():
    from pathlib import Path

    from msflow_study import selection

    results = Path(__file__).resolve().parents[2] / "results"
    aucs = report.auc_table(results)
    blood = json.loads((results / "bloodmnist-cpu-ens" / "eval_test.json").read_text())["metrics"]["mean"]
    together = aucs.loc[("BloodMNIST", "seeds together")]
    assert together["MedMNIST evaluator, T fitted on validation"] == report.pct(blood["auc_medmnist"])
    assert together["paper's distance AUC"] == report.pct(blood["auc_paper"])
    pneumonia = aucs.loc[("PneumoniaMNIST", "seeds together")]  # binary: no temperature changes the ranking
    assert pneumonia["MedMNIST evaluator, T fitted on validation"] == pneumonia["MedMNIST evaluator, plain softmax(−d)"]
    recall = report.recall_table(results, "pneumoniamnist")
    for (network, split), row in recall.iterrows():
        if network != "share of the split":
            assert abs(float(row["balanced accuracy"]) - (float(row["recall: normal"]) + float(row["recall: pneumonia"])) / 2) <= 0.051
    shares = recall.loc[("share of the split", "test")]
    assert (shares["recall: normal"], shares["recall: pneumonia"]) == ("37.5", "62.5")  # 234 and 390 of 624
    choices = selection.choices_table(results)
    assert choices.loc[("PneumoniaMNIST", "cpu"), "chosen"] == "by validation · the headline"
    assert choices.loc[("PneumoniaMNIST", "cpu-w24"), "chosen"] == ""
    changed = report.changed_headlines(results, selection.FORMER_HEADLINES)
    assert list(changed.index.get_level_values("headline")) == ["before: chosen partly on test", "now: chosen on validation"] * 2
    assert "`" not in changed.to_string()  # an HTML table shows no Markdown
    grid = report.uncertainty_grid(results, {"pneumoniamnist": "cpu", "bloodmnist": "cpu-lam05-x6"})
    assert list(grid.columns) == ["PneumoniaMNIST", "BloodMNIST"] and grid.loc["run", "BloodMNIST"] == "cpu-lam05-x6"
    assert grid.iloc[0, 0].startswith(("yes: ", "no: "))
    assert "Not measured yet" not in report.generation_key(results, {"pneumoniamnist": "cpu"})


def test_selective_table_reads_one_network_and_the_seeds_together_from_their_records():
    import numpy as np

    results = ROOT / "results"
    table = report.selective_table(results)
    assert list(table.index.get_level_values("dataset").unique()) == ["PneumoniaMNIST", "BloodMNIST", "RetinaMNIST"]
    ens = json.loads((results / "bloodmnist-cpu-ens" / "eval_test.json").read_text())
    together = json.loads((results / "bloodmnist-cpu-ens" / "readout.json").read_text())["test"]["mean"]
    row = table.loc[("BloodMNIST", "seeds together")]
    assert row["AURC"] == f"{together['aurc']:.3f}" and row["error-detection AUROC"] == report.pct(together["error_auroc"])
    members = [json.loads((results / m["run"] / "eval_test.json").read_text())["metrics"]["mean"]["aurc"]
               for m in ens["ensemble"]["members"]]
    one = table.loc[("BloodMNIST", f"one network ({len(members)} seeds of `cpu-lam05-x6`)")]
    assert one["AURC"] == f"{np.mean(members):.3f}\u00a0±\u00a0{np.std(members, ddof=1):.3f}"
    assert report.selective_table(results, ensemble="no-such-ensemble") is None
