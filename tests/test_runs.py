"""A run folder's records let a run computed on one machine be read on another without recomputation: recorded
evaluations, multi-pass readouts, finished runs without their resumable state; and the provenance they carry."""

import json
from pathlib import Path

import numpy as np
import pytest

from msflow import files, runs, train as training
from msflow.config import make_config

ROOT = Path(__file__).resolve().parents[1]


def test_recorded_evaluation_is_read_not_recomputed(run, small_root, monkeypatch, forbid):
    first, record = runs.evaluate_run(run, "test", data_root=small_root, device="cpu", progress=False, reuse=False)
    forbid(runs, "evaluate")
    again, record2 = runs.evaluate_run(run, "test", data_root=small_root, device="cpu", progress=False)
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN-safe
    assert same(record2, json.loads((run / "eval_test.json").read_text())) and same(again.mean, first.mean)
    assert record2["checkpoint"] == record["checkpoint"] and record2["provenance"] == record["provenance"]
    assert len(again.passes) == len(first.passes) == 2
    # passes come back from the fp16 predictions file: same predictions, distances to fp16 precision
    for a, b in zip(again.passes, first.passes):
        assert np.array_equal(a.labels, b.labels)
        assert np.allclose(a.distances, b.distances, atol=2e-3)
    assert np.allclose(again.arc_accuracy.mean(0), record["metrics"]["accuracy_rejection"]["mean"], atol=0.05)
    monkeypatch.undo()
    # other settings are a new evaluation, and the recorded one is replaced
    _, record3 = runs.evaluate_run(run, "test", data_root=small_root, device="cpu", progress=False, eval_overrides={"repeats": 3})
    assert len(record3["metrics"]["per_pass"]) == 3
    assert runs.load_evaluation(run, "val") is None


def test_multi_pass_readout_is_kept_and_sliced(run, small_root, monkeypatch, forbid):
    mp = runs.multi_pass_run(run, "test", 4, seed=1, data_root=small_root, device="cpu")
    assert mp.distances.shape == (4, 24, 2) and mp.spread.shape == (4, 24)
    meta = json.loads((run / "multipass_test.json").read_text())
    assert meta["draws"] == 4 and meta["synthetic"] is True and meta["provenance"]["git_commit"]
    forbid(runs, "multi_pass")
    two = runs.multi_pass_run(run, "test", 2, seed=1, data_root=small_root, device="cpu")
    # a first readout and the same readout read back agree exactly, so a page executed again gives the same numbers
    assert np.array_equal(two.distances, mp.distances[:2]) and np.array_equal(two.spread, mp.spread[:2])
    assert two.distances.dtype == mp.distances.dtype == np.float32
    monkeypatch.undo()
    other_seed = runs.multi_pass_run(run, "test", 2, seed=5, data_root=small_root, device="cpu")
    assert not np.allclose(other_seed.distances, two.distances)


def test_an_evaluation_recorded_before_readout_views_existed_is_still_reused(run, small_root, monkeypatch, forbid):
    runs.evaluate_run(run, "test", data_root=small_root, device="cpu", progress=False, reuse=False)
    path = run / "eval_test.json"
    rec = json.loads(path.read_text())
    del rec["eval"]["views"], rec["config"]["eval"]["views"]  # as written by msflow before the field
    path.write_text(json.dumps(rec))
    forbid(runs, "evaluate")
    _, again = runs.evaluate_run(run, "test", data_root=small_root, device="cpu", progress=False)
    assert again["metrics"]["mean"]["acc"] == rec["metrics"]["mean"]["acc"]


def test_finished_run_is_reused_without_its_state(tmp_path, small_root, monkeypatch, forbid):
    cfg = make_config("pneumoniamnist", "smoke", {"train.max_steps": 4, "train.eval_every": 2})
    done = training.train(cfg, tmp_path, small_root, "cpu", progress=False)
    (tmp_path / training.STATE_FILE).unlink()
    forbid(training, "flow_loss")
    again = training.train(cfg, tmp_path, small_root, "cpu", progress=False)
    assert again.steps == done.steps == 4 and again.best == json.loads(json.dumps(done.best))


def test_a_length_is_fitted_to_a_time_box_by_known_answers():
    assert training.fit_steps(50, 0.3, 10) == 160  # 166.7 steps fit, rounded down to tens
    assert training.fit_steps(50, 0.05, 100) == 1000
    assert training.fit_steps(1e-6, 5.0, 10) == 10  # at least one unit, however slow the machine
    with pytest.raises(ValueError, match="cannot take 0"):
        training.fit_steps(50, 0.0)


def test_steps_for_budget_measures_a_probe_and_fits_its_length(small_root):
    # the measured time per step depends on the machine and its load: only what follows from it is asserted
    cfg = make_config("pneumoniamnist", "smoke")
    steps, per_step = training.steps_for_budget(cfg, 50, small_root, "cpu", probe_steps=3, round_to=10)
    assert per_step > 0 and steps == training.fit_steps(50, per_step, 10)


def test_declared_commit_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("MSFLOW_GIT_COMMIT", "0123abc")
    assert files.git_commit(tmp_path) == "0123abc (declared)"
    monkeypatch.delenv("MSFLOW_GIT_COMMIT")
    assert files.git_commit(tmp_path) == "unknown"


def test_declared_commit_wins_inside_a_checkout(monkeypatch):
    # a tree copied with a stale git folder must not report that folder's commit as the code that ran
    assert not files.git_commit(ROOT).endswith("(declared)")
    monkeypatch.setenv("MSFLOW_GIT_COMMIT", "0123abc")
    assert files.git_commit(ROOT) == "0123abc (declared)"


def test_a_damaged_record_is_an_error_that_names_the_file_and_the_way_back(tmp_path, small_root, capsys):
    damaged = tmp_path / "eval_test.json"
    damaged.write_text('{"metrics": {"mean": {"acc": 0.9')  # half written by something that is not msflow
    with pytest.raises(files.RecordError, match=rf"{damaged} is damaged \(not valid JSON: .* at line 1\); restore it with "
                                                rf"`git checkout -- {damaged}` .*or delete it"):
        files.read_json(damaged)
    cfg = make_config("pneumoniamnist", "smoke", {"train.max_steps": 4, "train.checkpoint_every": 2})
    run = tmp_path / "run"
    (run).mkdir()
    (run / training.STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(files.RecordError, match=rf"{run / training.STATE_FILE} is damaged .*start afresh with --force"):
        training.train(cfg, run, small_root, "cpu", progress=False)
    assert training.train(cfg, run, small_root, "cpu", progress=False, force=True).steps == 4  # as the message says
    from msflow import cli

    (run / "config.json").write_text("{")
    assert cli.main(["train", "--dataset", "pneumoniamnist", "--recipe", "smoke", "--out", str(run), "--data-root", str(small_root)]) == 2
    assert f"msflow train: error: {run / 'config.json'} is damaged" in capsys.readouterr().err


def test_text_is_written_atomically_and_only_when_it_changes(tmp_path):
    path = tmp_path / "pages" / "toc.yml"
    assert files.write_text_if_changed(path, "a\n") is True and path.read_text() == "a\n"
    stamp = path.stat().st_mtime_ns
    assert files.write_text_if_changed(path, "a\n") is False and path.stat().st_mtime_ns == stamp
    assert files.write_text_if_changed(path, "b\n") is True and path.read_text() == "b\n"
    assert [p.name for p in path.parent.iterdir()] == ["toc.yml"]  # no temporary file left behind
