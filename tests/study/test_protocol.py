"""The study's protocol: readout views chosen on validation, seed ensembles, and the generation measurements."""

import json
import shutil

import numpy as np
import pytest

from msflow import metrics, runs, train as training
from msflow.config import make_config
from msflow_study import baselines, protocol, registry, report


def test_readout_options_are_parsed_from_a_comma_separated_list():
    assert protocol.parse_readout_options("none, flips,,dihedral ") == ("none", "flips", "dihedral")
    assert protocol.parse_readout_options("") == ()


def test_readout_choice_prefers_accuracy_then_fewer_views():
    assert protocol.pick_readout({"none": (0.90, 1), "flips": (0.92, 4), "dihedral": (0.91, 8)}) == "flips"
    assert protocol.pick_readout({"none": (0.92, 1), "flips": (0.92, 4)}) == "none"
    assert protocol.pick_readout({"none": (0.50, 1), "flips": (0.70, 4), "dihedral": (0.70, 8)}) == "flips"


def test_readout_views_are_chosen_on_validation_and_recorded_beside_the_reference(run, small_root, monkeypatch, forbid):
    runs.evaluate_run(run, "test", data_root=small_root, device="cpu", progress=False, reuse=False)
    rec = protocol.choose_readout(run, ("none", "flips"), data_root=small_root, device="cpu", progress=False)
    acc = {v: o["mean"]["acc"] for v, o in rec["options"].items()}
    assert set(acc) == {"none", "flips"} and rec["options"]["flips"]["views"] == 4
    assert rec["chosen"] == protocol.pick_readout({v: (acc[v], rec["options"][v]["views"]) for v in acc})
    on_disk = json.loads((run / "readout.json").read_text())
    assert on_disk["chosen"] == rec["chosen"] and on_disk["provenance"]["git_commit"] and on_disk["provenance"]["device"]
    # each option's validation record is a file of its own, and the reference's test record stays as it was
    flips_val = json.loads((run / "eval_val_flips.json").read_text())
    assert flips_val["eval"]["views"] == "flips" and flips_val["metrics"]["settings"]["views"] == "flips"
    assert json.loads((run / "eval_val.json").read_text())["eval"]["views"] == "none"
    assert json.loads((run / "eval_test.json").read_text())["eval"]["views"] == "none"
    chosen_file = "eval_test.json" if rec["chosen"] == "none" else f"eval_test_{rec['chosen']}.json"
    assert rec["test"]["file"] == chosen_file and (run / chosen_file).exists()
    assert rec["test"]["mean"]["acc"] == json.loads((run / chosen_file).read_text())["metrics"]["mean"]["acc"]
    # the flip readout on test is its own record too, with four views' maps averaged per pass
    _, flips_test = runs.evaluate_run(run, "test", data_root=small_root, device="cpu", progress=False, eval_overrides={"views": "flips"})
    assert (run / "eval_test_flips.json").exists() and flips_test["eval"]["views"] == "flips"
    # recorded: choosing again recomputes nothing, and the same choice leaves readout.json (and its provenance) as it was
    forbid(runs, "evaluate")
    forbid(protocol, "write_json")
    again = protocol.choose_readout(run, ("none", "flips"), data_root=small_root, device="cpu", progress=False)
    assert again["provenance"] == on_disk["provenance"]
    assert again["chosen"] == rec["chosen"] and {v: o["mean"]["acc"] for v, o in again["options"].items()} == acc
    with pytest.raises(ValueError, match="must start with the reference readout 'none'"):
        protocol.choose_readout(run, ("flips",), data_root=small_root, device="cpu")
    with pytest.raises(ValueError, match=r"unknown readout views \['spin'\]"):
        protocol.choose_readout(run, ("none", "spin"), data_root=small_root, device="cpu")


def test_generation_metrics_record(run, small_root, monkeypatch, forbid):
    kw = dict(data_root=small_root, device="cpu", per_class=3, nfe=(1, 2, 4), solvers=("euler", "heun"),
              classifier_epochs=1, cas_images=10, progress=False)
    rec = protocol.generation_metrics(run, run.parent / "baselines" / "clf", **kw)
    sweep = {(r["solver"], r["nfe"]) for r in rec["sweep"]}
    assert sweep == {("euler", 1), ("euler", 2), ("euler", 4), ("heun", 2), ("heun", 4)}  # Heun cannot spend 1 NFE
    assert rec["settings"]["key"] == ["euler", 4]  # the smoke profile generates with 4 Euler steps
    for r in rec["sweep"]:
        assert r["frechet"] >= 0 and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
        assert len(r["class_fidelity_per_class"]) == 2 and r["images_per_second"] > 0
        assert r["class_fidelity"] == pytest.approx(np.mean(r["class_fidelity_per_class"]))
    cas = rec["cas"]
    assert (cas["n_generated"], cas["n_real"], cas["classifier"], cas["epochs"]) == (10, 48, "resnet18", 1)
    assert 0 <= cas["generated"] <= 1 and 0 <= cas["real_same_n"] <= 1 and 0 <= rec["classifier"]["test_accuracy"] <= 1
    assert rec["floor"]["n"] == 6 and rec["floor"]["whole_train"]["n"] == 48  # 3 real images of each class, then all
    assert rec["floor"]["val"]["n"] == 24 and rec["floor"]["val"]["frechet"] >= 0
    assert rec["floor"]["frechet"] >= 0 and 0 <= rec["floor"]["whole_train"]["recall"] <= 1
    with np.load(run / protocol.GENERATION_SAMPLES) as z:
        assert z["images"].dtype == np.uint8 and z["images"].shape[0] == 6
    recorded = json.loads((run / protocol.GENERATION_FILE).read_text())
    forbid(protocol, "generate_from_run")
    assert protocol.generation_metrics(run, run.parent / "baselines" / "clf", **kw) == recorded
    monkeypatch.undo()
    # another CAS classifier: the recorded sweep stands, only the CAS is measured (and its classifiers trained)
    forbid(protocol, "_generation_sweep")
    cnn = protocol.generation_metrics(run, run.parent / "baselines" / "clf", **(kw | {"cas_classifier": "cnn", "cas_epochs": 2}))
    assert cnn["sweep"] == recorded["sweep"] and cnn["floor"] == recorded["floor"]
    assert (cnn["cas"]["classifier"], cnn["cas"]["epochs"]) == ("cnn", 2) and cnn["cas_settings"]["classifier"] == "cnn"
    monkeypatch.undo()
    # measured once more with the same CAS: its classifiers, trained on the same images, are reused
    forbid(baselines.torch.optim, "Adam")
    (run / protocol.GENERATION_FILE).write_text(json.dumps(recorded))
    again = protocol.generation_metrics(run, run.parent / "baselines" / "clf", **(kw | {"cas_classifier": "cnn", "cas_epochs": 2}))
    assert again["cas"] == cnn["cas"]
    monkeypatch.undo()
    # a record written before the feature network's accuracy was kept is completed, its sweep kept
    older = json.loads((run / protocol.GENERATION_FILE).read_text())
    del older["classifier"]["test_accuracy"], older["floor"]["val"]
    (run / protocol.GENERATION_FILE).write_text(json.dumps(older))
    forbid(protocol, "_generation_sweep")
    forbid(protocol, "generate_from_run")  # nor is its CAS measured again
    completed = protocol.generation_metrics(run, run.parent / "baselines" / "clf", **(kw | {"cas_classifier": "cnn", "cas_epochs": 2}))
    assert completed["classifier"]["test_accuracy"] == rec["classifier"]["test_accuracy"] and completed["sweep"] == rec["sweep"]
    assert completed["cas"] == cnn["cas"] and completed["floor"]["val"] == rec["floor"]["val"]


def test_an_ensemble_of_seeds_averages_the_recorded_distances_pass_by_pass(tmp_path, small_root, monkeypatch, capsys, forbid):
    members = []
    for seed in (0, 1):
        path = tmp_path / f"pneumoniamnist-smoke-seed{seed}"
        training.train(make_config("pneumoniamnist", "smoke", seed=seed), path, small_root, "cpu", progress=False)
        for split in ("val", "test"):
            runs.evaluate_run(path, split, data_root=small_root, device="cpu", progress=False)
        members.append(path)
    forbid(runs, "evaluate")  # read from the members' results files, never recomputed
    result, record = protocol.ensemble_runs(members, tmp_path / "ens")
    # the known answer, from the members' predictions files
    d = [np.load(m / "predictions_test.npz")["distances"].astype(np.float32) for m in members]
    labels = np.load(members[0] / "predictions_test.npz")["labels"]
    mean = (d[0] + d[1]) / 2
    assert np.isclose(result.mean["acc"], np.mean([(p.argmin(1) == labels).mean() for p in mean]))
    assert np.isclose(result.mean["auc_paper"], np.mean([metrics.auc_distance(p, labels) for p in mean]))
    written = json.loads((tmp_path / "ens" / "eval_test.json").read_text())
    assert written["metrics"]["mean"]["acc"] == result.mean["acc"] and written["metrics"]["settings"]["seed"] == [0, 1]
    assert [m["seed"] for m in written["ensemble"]["members"]] == [0, 1]
    trained = [json.loads((m / "train.json").read_text()) for m in members]
    assert written["training"]["images_seen"] == sum(t["images_seen"] for t in trained)
    assert written["training"]["parameters"] == sum(t["parameters"] for t in trained)
    assert runs.load_evaluation(tmp_path / "ens") is not None  # the book reads it as it reads a run's
    readout = json.loads((tmp_path / "ens" / "readout.json").read_text())
    assert list(readout["options"]) == ["none"] and readout["chosen"] == "none"  # the members were read once only
    assert readout["test"]["file"] == "eval_test.json" and readout["test"]["mean"] == written["metrics"]["mean"]
    from msflow_study import cli

    exp = tmp_path / "experiments"
    exp.mkdir()
    (exp / "seeds.toml").write_text('question = "q"\n' + "".join(
        f'[runs.smoke-seed{k}]\nbase = "smoke"\nseed = {k}\ndatasets = ["pneumoniamnist"]\nwhy = "w"\n' for k in (0, 1))
        + '[ensembles.ens]\nwhy = "w"\nmembers.pneumoniamnist = ["smoke-seed0", "smoke-seed1"]\n'
        + '[ensembles.one]\nwhy = "w"\nmembers.pneumoniamnist = ["smoke-seed0"]\n')
    common = ["--dataset", "pneumoniamnist", "--runs-dir", str(tmp_path), "--experiments", str(exp)]
    assert cli.main(["ensemble", "ens", *common]) == 0
    assert "chosen on validation: none; test accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "pneumoniamnist-ens" / "eval_test.json").read_text())["metrics"]["mean"] == written["metrics"]["mean"]
    assert json.loads((tmp_path / "pneumoniamnist-ens" / "run.json").read_text())["members"] == ["smoke-seed0", "smoke-seed1"]
    assert cli.main(["ensemble", "one", *common]) == 2
    assert "msflow_study ensemble: error: an ensemble needs at least two runs" in capsys.readouterr().err
    prose = report.results_prose({"cpu-ens": {"pneumoniamnist": written}}, ["pneumoniamnist"])
    assert "the mean of 2 networks: seeds 0, 1 of `smoke` (images and minutes are their sum)." in prose
    # the readout views are chosen for the ensemble on validation, from the members' recorded readouts: here the
    # members' single readouts of validation are replaced by wrong ones (the nearest code is never the label's), so
    # that the ensemble must choose the flips
    monkeypatch.undo()
    for m in members:
        runs.evaluate_run(m, "val", data_root=small_root, device="cpu", progress=False, eval_overrides={"views": "flips"})
        with np.load(m / "predictions_val.npz") as z:
            d, val_labels = z["distances"], z["labels"]
        wrong = np.broadcast_to(np.eye(d.shape[2])[val_labels], d.shape).astype(np.float16)
        np.savez(m / "predictions_val.npz", distances=wrong, labels=val_labels)
    with pytest.raises(FileNotFoundError, match=r"readout chosen on validation is 'flips', and .*seed0 has no recorded "
                       r"readout of the test split with it: run `msflow evaluate --run .*seed0 --views flips` first"):
        protocol.ensemble_runs(members, tmp_path / "ens-flips")
    monkeypatch.undo()
    for m in members:
        runs.evaluate_run(m, "test", data_root=small_root, device="cpu", progress=False, eval_overrides={"views": "flips"})
    forbid(runs, "evaluate")
    none, _ = protocol.ensemble_runs(members, tmp_path / "ens-flips")
    for k in ("acc", "auc_paper", "auc_medmnist", "aurc"):  # the reference readout of test is as before (its
        assert none.mean[k] == result.mean[k]  # temperature, fitted on the altered validation readout, is not)
    readout = json.loads((tmp_path / "ens-flips" / "readout.json").read_text())
    assert readout["options"]["none"]["mean"]["acc"] == 0.0 and readout["options"]["flips"]["mean"]["acc"] > 0.5
    assert readout["chosen"] == "flips"
    flips = json.loads((tmp_path / "ens-flips" / "eval_test_flips.json").read_text())
    d = [np.load(m / "predictions_test_flips.npz")["distances"].astype(np.float32) for m in members]
    assert np.isclose(flips["metrics"]["mean"]["acc"], np.mean([(p.argmin(1) == labels).mean() for p in (d[0] + d[1]) / 2]))
    assert flips["eval"]["views"] == "flips" and readout["test"]["mean"] == flips["metrics"]["mean"]
    shutil.copytree(tmp_path / "ens-flips", tmp_path / "runs" / "pneumoniamnist-smoke-ens")
    chosen = registry.our_results(tmp_path / "runs", "smoke-ens", ["pneumoniamnist"], readout=True)["pneumoniamnist"]
    assert chosen["metrics"] == flips["metrics"] and chosen["readout"]["chosen"] == "flips"  # the book reads it as a run's
    # members are compared apart from the batch size and the views; an older record without a field has its default
    older = {k: v for k, v in flips["eval"].items() if k != "views"} | {"batch_size": 7}
    assert protocol._readout_settings({"eval": older}) == protocol._readout_settings(flips)
    # what is not an ensemble of seeds of one recipe is refused with the reason
    with pytest.raises(ValueError, match="at least two runs"):
        protocol.ensemble_runs(members[:1], tmp_path / "bad")
    with pytest.raises(ValueError, match="is one of the members; the ensemble's results go to a folder of their own"):
        protocol.ensemble_runs(members, members[1])
    with pytest.raises(ValueError, match="has seed 0, as another member"):
        protocol.ensemble_runs([members[0], members[0]], tmp_path / "bad")
    altered = tmp_path / "pneumoniamnist-smoke-seed1-steps2"
    shutil.copytree(members[1], altered)
    rec = json.loads((altered / "eval_test.json").read_text())
    rec["eval"]["steps"] = 2
    (altered / "eval_test.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="was read with other evaluation settings than"):
        protocol.ensemble_runs([members[0], altered], tmp_path / "bad")
    other = tmp_path / "pneumoniamnist-smoke-lr"
    training.train(make_config("pneumoniamnist", "smoke", {"train.lr": 0.01}, seed=2), other, small_root, "cpu", progress=False)
    monkeypatch.undo()
    runs.evaluate_run(other, "test", data_root=small_root, device="cpu", progress=False)
    with pytest.raises(FileNotFoundError, match="no recorded single readout of the val split: run `python -m msflow_study choose-views --run .*` first"):
        protocol.ensemble_runs([members[0], other], tmp_path / "bad")
    runs.evaluate_run(other, "val", data_root=small_root, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"was not trained like .* \(they differ in train\)"):
        protocol.ensemble_runs([members[0], other], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
