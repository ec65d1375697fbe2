"""Results files that let a run computed on one machine be rendered on another without recomputation:
recorded evaluations, multi-pass readouts, baseline logits, generation measurements, finished runs
without their resumable state, time-boxed lengths; and the GPU session's packing."""

import importlib.util
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from msflow import baselines, metrics, results, runs, study, train as training
from msflow.config import make_config
from msflow.data import load_split, write_synthetic
from msflow.results import ConfigMismatchError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    """Synthetic files small enough for ResNet-18 on a CPU."""
    root = tmp_path_factory.mktemp("small")
    write_synthetic(root, "pneumoniamnist", 28, {"train": 48, "val": 24, "test": 24}, seed=3)
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_root) -> Path:
    path = tmp_path_factory.mktemp("runs") / "pneumoniamnist-smoke"
    training.train(make_config("pneumoniamnist", "smoke"), path, small_root, "cpu", progress=False)
    return path


def _forbid(monkeypatch, module, name):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} was called: the recorded results file should have been read")

    monkeypatch.setattr(module, name, fail)


def test_recorded_evaluation_is_read_not_recomputed(run, small_root, monkeypatch):
    first, record = runs.evaluate_run(run, "test", data_root=small_root, device="cpu", progress=False, reuse=False)
    _forbid(monkeypatch, runs, "evaluate")
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


def test_multi_pass_readout_is_kept_and_sliced(run, small_root, monkeypatch):
    mp = runs.multi_pass_run(run, "test", 4, seed=1, data_root=small_root, device="cpu")
    assert mp.distances.shape == (4, 24, 2) and mp.spread.shape == (4, 24)
    meta = json.loads((run / "multipass_test.json").read_text())
    assert meta["draws"] == 4 and meta["synthetic"] is True and meta["provenance"]["git_commit"]
    _forbid(monkeypatch, runs, "multi_pass")
    two = runs.multi_pass_run(run, "test", 2, seed=1, data_root=small_root, device="cpu")
    assert np.allclose(two.distances, mp.distances[:2], atol=2e-3) and np.array_equal(two.spread, mp.spread[:2])
    monkeypatch.undo()
    other_seed = runs.multi_pass_run(run, "test", 2, seed=5, data_root=small_root, device="cpu")
    assert not np.allclose(other_seed.distances, two.distances)


def test_baseline_logits_are_kept_and_a_changed_recipe_is_refused(tmp_path, small_root, monkeypatch):
    cfg = baselines.BaselineConfig(dataset="pneumoniamnist", epochs=1, batch_size=16)
    out = baselines.train_baseline(cfg, tmp_path / "b", small_root, "cpu", progress=False)
    test = load_split("pneumoniamnist", "test", 28, small_root)
    z = baselines.cached_logits(out, test)
    mc = baselines.cached_logits(out, test, mc_samples=3)
    assert z.shape == (24, 2) and mc.shape == (3, 24, 2)
    assert not np.allclose(mc[0], mc[1])  # dropout is active in MC samples
    (out / "baseline.pt").unlink()  # as brought back from a GPU session: logits, no weights
    _forbid(monkeypatch, baselines, "load_baseline")
    assert np.array_equal(baselines.cached_logits(out, test), z)
    assert baselines.train_baseline(cfg, out, small_root, "cpu") == out  # reused
    val = load_split("pneumoniamnist", "val", 28, small_root)
    with pytest.raises(FileNotFoundError, match="holds no weights"):
        baselines.cached_logits(out, val)
    with pytest.raises(ConfigMismatchError, match="epochs"):
        baselines.train_baseline(baselines.BaselineConfig(dataset="pneumoniamnist", epochs=3, batch_size=16), out, small_root)


def test_baseline_folders_are_named_by_recipe(tmp_path):
    # members of different lengths (a CPU run's few epochs, a GPU session's 20) do not share a folder
    a, b = (baselines.member_dir(tmp_path, "bloodmnist", e, 0) for e in (2, 20))
    assert a.name == "bloodmnist-resnet18-2e-seed0" and b.name == "bloodmnist-resnet18-20e-seed0"
    assert baselines.member_dir(tmp_path, "bloodmnist", 20, 3).name == "bloodmnist-resnet18-20e-seed3"
    assert a.parent == tmp_path


def test_generation_metrics_record(run, small_root, monkeypatch):
    kw = dict(data_root=small_root, device="cpu", per_class=3, nfe=(1, 2, 4), solvers=("euler", "heun"),
              classifier_epochs=1, cas_images=10, progress=False)
    rec = runs.generation_metrics(run, run.parent / "baselines" / "clf", **kw)
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
    with np.load(run / runs.GENERATION_SAMPLES) as z:
        assert z["images"].dtype == np.uint8 and z["images"].shape[0] == 6
    recorded = json.loads((run / runs.GENERATION_FILE).read_text())
    _forbid(monkeypatch, runs, "generate_from_run")
    assert runs.generation_metrics(run, run.parent / "baselines" / "clf", **kw) == recorded
    monkeypatch.undo()
    # another CAS classifier: the recorded sweep stands, only the CAS is measured (and its classifiers trained)
    _forbid(monkeypatch, runs, "_generation_sweep")
    cnn = runs.generation_metrics(run, run.parent / "baselines" / "clf", **(kw | {"cas_classifier": "cnn", "cas_epochs": 2}))
    assert cnn["sweep"] == recorded["sweep"] and cnn["floor"] == recorded["floor"]
    assert (cnn["cas"]["classifier"], cnn["cas"]["epochs"]) == ("cnn", 2) and cnn["cas_settings"]["classifier"] == "cnn"
    monkeypatch.undo()
    # measured once more with the same CAS: its classifiers, trained on the same images, are reused
    _forbid(monkeypatch, baselines.torch.optim, "Adam")
    (run / runs.GENERATION_FILE).write_text(json.dumps(recorded))
    again = runs.generation_metrics(run, run.parent / "baselines" / "clf", **(kw | {"cas_classifier": "cnn", "cas_epochs": 2}))
    assert again["cas"] == cnn["cas"]
    monkeypatch.undo()
    # a record written before the feature network's accuracy was kept is completed, its sweep kept
    older = json.loads((run / runs.GENERATION_FILE).read_text())
    del older["classifier"]["test_accuracy"], older["floor"]["val"]
    (run / runs.GENERATION_FILE).write_text(json.dumps(older))
    _forbid(monkeypatch, runs, "_generation_sweep")
    _forbid(monkeypatch, runs, "generate_from_run")  # nor is its CAS measured again
    completed = runs.generation_metrics(run, run.parent / "baselines" / "clf", **(kw | {"cas_classifier": "cnn", "cas_epochs": 2}))
    assert completed["classifier"]["test_accuracy"] == rec["classifier"]["test_accuracy"] and completed["sweep"] == rec["sweep"]
    assert completed["cas"] == cnn["cas"] and completed["floor"]["val"] == rec["floor"]["val"]


def test_small_cnn_interface():
    cfg = baselines.BaselineConfig(dataset="bloodmnist", arch="cnn")
    net = cfg.build().eval()
    x = torch.randn(4, 3, 28, 28)
    assert net(x).shape == (4, 8) and net.features(x).shape == (4, 128)
    assert sum(p.numel() for p in net.parameters()) < 0.5e6
    with pytest.raises(ValueError, match="unknown classifier architecture"):
        baselines.BaselineConfig(dataset="bloodmnist", arch="vgg").build()


def test_finished_run_is_reused_without_its_state(tmp_path, small_root, monkeypatch):
    cfg = make_config("pneumoniamnist", "smoke", {"train.max_steps": 4, "train.eval_every": 2})
    done = training.train(cfg, tmp_path, small_root, "cpu", progress=False)
    (tmp_path / training.STATE_FILE).unlink()
    _forbid(monkeypatch, training, "flow_loss")
    again = training.train(cfg, tmp_path, small_root, "cpu", progress=False)
    assert again.steps == done.steps == 4 and again.best == json.loads(json.dumps(done.best))


def test_recorded_config_of_a_time_boxed_run(tmp_path, small_root, capsys):
    fitted = make_config("pneumoniamnist", "smoke", {"train.max_steps": 6, "train.eval_every": 3})
    training.train(fitted, tmp_path / "pneumoniamnist-smoke", small_root, "cpu", progress=False)
    asked = make_config("pneumoniamnist", "smoke")
    assert study.recorded_config(tmp_path / "pneumoniamnist-smoke", asked) == fitted
    assert "train.max_steps = 6 (profile: 30)" in capsys.readouterr().out
    assert study.recorded_config(tmp_path / "pneumoniamnist-smoke", make_config("pneumoniamnist", "cpu")).profile == "cpu"
    assert study.recorded_config(tmp_path / "missing", asked) is asked


def test_steps_for_budget_measures_and_rounds(small_root):
    cfg = make_config("pneumoniamnist", "smoke")
    steps, per_step = training.steps_for_budget(cfg, 1e-6, small_root, "cpu", probe_steps=3, round_to=10)
    assert steps == 10 and per_step > 0  # at least one unit
    steps, per_step = training.steps_for_budget(cfg, 1000 * 0.05, small_root, "cpu", probe_steps=3, round_to=10)
    assert steps % 10 == 0 and steps == int(50 / per_step) // 10 * 10


def test_declared_commit_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("MSFLOW_GIT_COMMIT", "0123abc")
    assert results.git_commit(tmp_path) == "0123abc (declared)"
    monkeypatch.delenv("MSFLOW_GIT_COMMIT")
    assert results.git_commit(tmp_path) == "unknown"


def test_declared_commit_wins_inside_a_checkout(monkeypatch):
    # a tree copied with a stale git folder must not report that folder's commit as the code that ran
    assert not results.git_commit(ROOT).endswith("(declared)")
    monkeypatch.setenv("MSFLOW_GIT_COMMIT", "0123abc")
    assert results.git_commit(ROOT) == "0123abc (declared)"


def _script(name: str):
    """``scripts/<name>.py`` imported as a module (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_session_packs_new_results_in_parts(tmp_path, run):
    session = _script("gpu_session")
    runs_dir = tmp_path / "results"
    old = runs_dir / "old-run"
    old.mkdir(parents=True)
    (old / "eval_test.json").write_text("{}")
    os.utime(old / "eval_test.json", (1, 1))  # written before the session: not packed
    new = runs_dir / "pneumoniamnist-gpu"
    new.mkdir()
    for name in ("best.pt", "train.json", "train_state.pt"):
        (new / name).write_bytes((run / name).read_bytes() if (run / name).exists() else b"x")
    (new / "noise.bin").write_bytes(os.urandom(300_000))  # incompressible, to force several parts
    log = tmp_path / "w.log"
    log.write_text("worker log")
    out = tmp_path / "out"
    out.mkdir()
    session.pack(out, runs_dir, [log], since=100.0, part_mb=0.1)
    parts = sorted(out.iterdir())
    assert len(parts) >= 3 and all(p.stat().st_size <= 0.1 * 1024 * 1024 for p in parts)
    blob = tmp_path / "all.tar.gz"
    blob.write_bytes(b"".join(p.read_bytes() for p in sorted(parts, key=lambda p: int(p.name.split("part")[1]))))
    with tarfile.open(blob) as tar:
        names = set(tar.getnames())
    assert "results/pneumoniamnist-gpu/best.pt" in names and "logs/w.log" in names
    assert "results/pneumoniamnist-gpu/train_state.pt" not in names and "results/old-run/eval_test.json" not in names
    weights = torch.load(new / "best.pt", weights_only=False)["weights"]  # the packed checkpoint is fp16
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    # a checkpoint too large to commit stays behind; the run's results files still come back
    out2 = tmp_path / "out2"
    out2.mkdir()
    session.pack(out2, runs_dir, [], since=100.0, max_weights_mb=1e-3)
    with tarfile.open(next(out2.iterdir())) as tar:
        names = set(tar.getnames())
    assert "results/pneumoniamnist-gpu/train.json" in names and "results/pneumoniamnist-gpu/best.pt" not in names


def test_results_page_editions(tmp_path):
    for run in ("pneumoniamnist-cpu", "bloodmnist-gpu-long", "retinamnist-other"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "eval_test.json").write_text("{}")
    # the asked profile first (even without runs), then the book's editions that have a finished run, in order
    assert study.editions(tmp_path, "gpu") == ["gpu", "gpu-long", "cpu"]
    assert study.editions(tmp_path, "cpu") == ["cpu", "gpu-long"]


def test_toc_lists_every_executed_profile(tmp_path, monkeypatch):
    module = _script("study")
    executed = tmp_path / "book" / "executed"
    for page in ("pneumoniamnist-cpu/train", "pneumoniamnist-gpu/train", "pneumoniamnist-gpu/evaluate", "pneumoniamnist-recipes"):
        (executed / page).parent.mkdir(parents=True, exist_ok=True)
        (executed / f"{page}.ipynb").write_text("{}")
    monkeypatch.setattr(module, "EXECUTED", executed)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    module.write_toc("gpu")
    toc = (tmp_path / "_toc.yml").read_text()
    order = [toc.index(f"book/executed/{p}\n") for p in ("pneumoniamnist-gpu/train", "pneumoniamnist-gpu/evaluate",
                                                           "pneumoniamnist-cpu/train", "pneumoniamnist-recipes")]
    assert order == sorted(order) and 'title: "PneumoniaMNIST, cpu: train"' in toc
    assert "bloodmnist" not in toc


def test_study_notebook_params():
    module = _script("study")
    assert module.notebook_params(["uncertainty.ensemble=1", "fidelity.solvers=euler,heun", "fidelity.inception=false"]) == {
        "uncertainty": {"ensemble": 1}, "fidelity": {"solvers": "euler,heun", "inception": False}}
    with pytest.raises(SystemExit, match="NOTEBOOK.NAME=VALUE"):
        module.notebook_params(["ensemble=1"])


def test_study_refuses_datasets_taken_for_compared_profiles(monkeypatch):
    module = _script("study")
    # argparse gives --compare every word after it, datasets included: the run must stop before executing anything
    monkeypatch.setattr("sys.argv", ["study.py", "--no-book", "--compare", "cpu", "gpu", "bloodmnist", "retinamnist"])
    monkeypatch.setattr(module, "execute", lambda *a, **k: pytest.fail("nothing may be executed"))
    with pytest.raises(SystemExit, match=r"--compare bloodmnist retinamnist: not profiles .* after -- that ends its list"):
        module.main()
    # a profile's run with another seed may be compared; a seed suffix does not make a dataset a profile
    monkeypatch.setattr("sys.argv", ["study.py", "--no-book", "--compare", "cpu-seed1", "cpu-ens", "bloodmnist-seed1"])
    with pytest.raises(SystemExit, match=r"--compare bloodmnist-seed1: not profiles"):
        module.main()


def test_a_quick_notebook_whose_cell_hangs_is_executed_once_more(tmp_path, monkeypatch):
    module = _script("study")
    calls = []

    def execute_notebook(src, out, **kwargs):
        calls.append(kwargs["execution_timeout"])
        if len(calls) == 1:
            raise TimeoutError("A cell timed out while it was being executed, after 5 seconds.")
        Path(out).write_text("{}")

    monkeypatch.setattr("papermill.execute_notebook", execute_notebook)
    executed = tmp_path / "book" / "executed"
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "EXECUTED", executed)
    log = []
    assert module.execute("explore", executed / "explore.ipynb", {}, True, log, cell_timeout=5)
    assert calls == [5, 5] and log[-1].startswith("executed")
    # without a timeout (a notebook that trains) nothing is retried, and a failure is logged, not raised
    calls.clear()
    assert not module.execute("explore", executed / "other.ipynb", {}, True, log)
    assert calls == [None] and log[-1].startswith("FAILED explore {}: TimeoutError")
    # a second timeout is not retried again: the page is reported as failed
    def always_hangs(src, out, **kwargs):
        calls.append(kwargs["execution_timeout"])
        raise TimeoutError("again")

    calls.clear()
    monkeypatch.setattr("papermill.execute_notebook", always_hangs)
    assert not module.execute("explore", executed / "third.ipynb", {}, True, log, cell_timeout=5)
    assert calls == [5, 5] and log[-1] == "FAILED explore {}: TimeoutError: again (partial notebook kept in _build/failed/third.ipynb)"


def test_kernel_channel_polls_are_sliced_so_a_missed_wake_up_costs_one_slice():
    import asyncio
    import time
    from queue import Empty

    waits = []

    def channel(arrives_at: float | None):
        """A channel's get_msg that, as pyzmq's asyncio poll after a missed wake-up, sees a message that has arrived
        only when its poll times out."""
        start = time.monotonic()

        async def get_msg(timeout=None):
            waits.append(timeout)
            await asyncio.sleep(timeout)
            if arrives_at is not None and time.monotonic() - start >= arrives_at:
                return {"msg_type": "execute_reply"}
            raise Empty

        return get_msg

    sliced = study.sliced_get_msg(channel(0.0), slice_s=0.05)
    t0 = time.monotonic()
    assert asyncio.run(sliced(timeout=30)) == {"msg_type": "execute_reply"}  # one slice, not the 30 s timeout
    assert time.monotonic() - t0 < 5 and waits == [0.05]
    waits.clear()
    assert asyncio.run(study.sliced_get_msg(channel(0.12), 0.05)(timeout=None))["msg_type"] == "execute_reply"
    assert waits == [0.05, 0.05, 0.05]  # no timeout: polls slice by slice until the message is read
    waits.clear()
    t0 = time.monotonic()
    with pytest.raises(Empty):  # nothing arrives: Empty at the timeout, as the channel's own get_msg
        asyncio.run(study.sliced_get_msg(channel(None), 0.05)(timeout=0.12))
    assert 0.12 <= time.monotonic() - t0 < 2 and max(waits) == 0.05 and sum(waits) == pytest.approx(0.12, abs=0.02)


def test_notebooks_are_executed_by_a_client_with_sliced_polls_and_papermill_is_restored(monkeypatch):
    import papermill.engines as engines

    base, seen = engines.PapermillNotebookClient, []

    def execute_notebook(src, out, **kwargs):
        seen.append(engines.PapermillNotebookClient)
        raise RuntimeError("stop here")

    monkeypatch.setattr("papermill.execute_notebook", execute_notebook)
    with pytest.raises(RuntimeError, match="stop here"):
        study.execute_notebook("a.ipynb", "b.ipynb", {}, ".")
    assert issubclass(seen[0], base) and seen[0] is not base  # the sliced client, during the call only
    assert engines.PapermillNotebookClient is base


def test_a_real_execution_polls_its_kernel_through_the_slices(tmp_path, monkeypatch):
    import nbformat

    sliced = []
    real = study.sliced_get_msg

    def spy(get_msg, slice_s):
        inner = real(get_msg, slice_s)

        async def get_msg_spied(timeout=None):
            sliced.append(timeout)
            return await inner(timeout)

        return get_msg_spied

    monkeypatch.setattr(study, "sliced_get_msg", spy)
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("6 * 7")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    out = study.execute_notebook(tmp_path / "in.ipynb", tmp_path / "out.ipynb", {}, tmp_path, cell_timeout=60)
    assert out.cells[0].outputs[0]["data"]["text/plain"] == "42"
    assert 60 in sliced  # the cell's reply was awaited through the sliced channel, with the cell timeout as deadline


def test_readout_options_are_parsed_from_a_comma_separated_list():
    assert runs.parse_readout_options("none, flips,,dihedral ") == ("none", "flips", "dihedral")
    assert runs.parse_readout_options("") == ()


def test_readout_choice_prefers_accuracy_then_fewer_views():
    assert runs.pick_readout({"none": (0.90, 1), "flips": (0.92, 4), "dihedral": (0.91, 8)}) == "flips"
    assert runs.pick_readout({"none": (0.92, 1), "flips": (0.92, 4)}) == "none"
    assert runs.pick_readout({"none": (0.50, 1), "flips": (0.70, 4), "dihedral": (0.70, 8)}) == "flips"


def test_readout_views_are_chosen_on_validation_and_recorded_beside_the_reference(run, small_root, monkeypatch):
    runs.evaluate_run(run, "test", data_root=small_root, device="cpu", progress=False, reuse=False)
    rec = runs.choose_readout(run, ("none", "flips"), data_root=small_root, device="cpu", progress=False)
    acc = {v: o["mean"]["acc"] for v, o in rec["options"].items()}
    assert set(acc) == {"none", "flips"} and rec["options"]["flips"]["views"] == 4
    assert rec["chosen"] == runs.pick_readout({v: (acc[v], rec["options"][v]["views"]) for v in acc})
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
    _forbid(monkeypatch, runs, "evaluate")
    _forbid(monkeypatch, runs, "write_json")
    again = runs.choose_readout(run, ("none", "flips"), data_root=small_root, device="cpu", progress=False)
    assert again["provenance"] == on_disk["provenance"]
    assert again["chosen"] == rec["chosen"] and {v: o["mean"]["acc"] for v, o in again["options"].items()} == acc
    with pytest.raises(ValueError, match="must start with the reference readout 'none'"):
        runs.choose_readout(run, ("flips",), data_root=small_root, device="cpu")
    with pytest.raises(ValueError, match=r"unknown readout views \['spin'\]"):
        runs.choose_readout(run, ("none", "spin"), data_root=small_root, device="cpu")


def test_an_evaluation_recorded_before_readout_views_existed_is_still_reused(run, small_root, monkeypatch):
    runs.evaluate_run(run, "test", data_root=small_root, device="cpu", progress=False, reuse=False)
    path = run / "eval_test.json"
    rec = json.loads(path.read_text())
    del rec["eval"]["views"], rec["config"]["eval"]["views"]  # as written by msflow before the field
    path.write_text(json.dumps(rec))
    _forbid(monkeypatch, runs, "evaluate")
    _, again = runs.evaluate_run(run, "test", data_root=small_root, device="cpu", progress=False)
    assert again["metrics"]["mean"]["acc"] == rec["metrics"]["mean"]["acc"]


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
    f = study.run_facts(train, evaluation, readout, {"metrics": {"mean": {"acc": 0.965}}})
    assert (f["steps"], f["images"], f["minutes"], f["seconds"], f["steps_per_s"]) == ("750", "48,000", "5.0", "300", "2.5")
    assert f["params"] == "0.9 M"
    assert (f["select"], f["step"], f["best_val"], f["best_val_auc"]) == ("AUC", "750", "53.3", "75.2")
    assert (f["val_250"], f["val_auc_500"], f["val_750"]) == ("47.5", "73.8", "53.3") and "val_300" not in f
    assert (f["acc"], f["acc_std"], f["auc"], f["aucm"]) == ("51.95", "0.43", "72.14", "72.43")
    assert (f["readout"], f["readout_acc"], f["readout_auc"], f["readout_aucm"]) == ("flips", "52.35", "69.62", "69.86")
    assert f["train_acc"] == "96.5"
    assert (f["recall_0"], f["recall_1"]) == ("65.8", "99.0")  # 154 / 234 and 386 / 390, the first pass's rows
    # a single read kept on validation: the readout facts are the single read's
    f = study.run_facts(*_records(select="acc", chosen="none"))
    assert (f["select"], f["readout"], f["readout_acc"]) == ("accuracy", "none", "51.95") and "train_acc" not in f


def test_ensemble_facts_sum_the_members_and_quote_the_readout_chosen_for_the_ensemble():
    _, evaluation, readout = _records()
    members = [{"seed": 0}, {"seed": 2}]
    evaluation |= {"training": {"images_seen": 96000, "train_seconds": 750.0, "parameters": 1812488},
                   "ensemble": {"members": members}, "config": {"profile": "cpu-lam05-x6"}}
    f = study.ensemble_facts(evaluation, readout)
    assert (f["members"], f["seeds"], f["profile"]) == ("2", "0, 2", "cpu-lam05-x6")
    assert (f["images"], f["minutes"], f["params"]) == ("96,000", "12.5", "1.8 M")
    assert (f["acc"], f["auc"], f["recall_0"]) == ("51.95", "72.14", "65.8")
    assert (f["readout"], f["readout_acc"], f["readout_auc"], f["readout_aucm"]) == ("flips", "52.35", "69.62", "69.86")
    assert "readout" not in study.ensemble_facts(evaluation)  # no readout.json: no readout facts
    assert study.ensemble_facts(evaluation, _records(chosen="none")[2])["readout_acc"] == "51.95"


def test_recipes_prose_and_matched_steps_table():
    train, evaluation, readout = _records()
    facts = {"cpu-lam03-auc": study.run_facts(train, evaluation, readout),
             "cpu": study.run_facts(*_records(select="acc", chosen="none"))}
    prose = study.recipes_prose(facts).splitlines()
    assert len(prose) == 2 and prose[0].startswith("- `cpu-lam03-auc`: 750 steps (48,000 images) in 5.0 min")
    assert "validation AUC chose step 750" in prose[0] and "with the flips readout chosen on validation, 52.35 %" in prose[0]
    assert "a single read was kept on validation" in prose[1]
    table = study.val_at_steps(facts)
    assert list(table.columns) == [500, 750]  # every 500 steps, and each run's last step
    assert table.loc["cpu", 500] == "54.2" and table.loc["cpu-lam03-auc", 750] == "53.3"
    assert study.recipes_prose({}) == "No finished run to describe."
    long = {"x8": {f"val_{s}": "90.0" for s in range(250, 12001, 250)}}
    assert list(study.val_at_steps(long).columns) == list(range(1000, 12001, 1000))  # twelve columns for 12000 steps


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
    assert list(study.seed_runs(tmp_path, "retinamnist", "cpu-lam03-auc-x2")) == [0, 1]
    table = study.seeds_table(tmp_path, ["cpu-lam03-auc-x2", "cpu"])
    rows = table.loc[("RetinaMNIST", "cpu-lam03-auc-x2")]
    assert list(rows.index) == ["0", "1", "mean of 2 (range)"]
    assert rows.loc["1", "ACC"] == "54.55 ± 0.10" and rows.loc["1", "selected step"] == "3000"
    assert rows.loc["mean of 2 (range)", "ACC"] == "53.85 (53.15 to 54.55)"
    assert rows.loc["mean of 2 (range)", "AUC, paper's"] == "72.95 (72.86 to 73.05)"
    assert rows.loc["mean of 2 (range)", "AUC, MedMNIST"] == "73.95 (73.86 to 74.05)"
    assert study.seeds_table(tmp_path, ["cpu"]) is None
    # a run folder named for one seed whose config records another seed's number is an error, not a silent duplicate
    _seed_run(tmp_path, "retinamnist-cpu-seed1", 0, 0.5, 0.7, 500)
    with pytest.raises(ValueError, match="both trained with seed 0; one of them is misnamed"):
        study.seed_runs(tmp_path, "retinamnist", "cpu")


def test_an_ensemble_of_seeds_averages_the_recorded_distances_pass_by_pass(tmp_path, small_root, monkeypatch, capsys):
    members = []
    for seed in (0, 1):
        path = tmp_path / f"pneumoniamnist-smoke-seed{seed}"
        training.train(make_config("pneumoniamnist", "smoke", seed=seed), path, small_root, "cpu", progress=False)
        for split in ("val", "test"):
            runs.evaluate_run(path, split, data_root=small_root, device="cpu", progress=False)
        members.append(path)
    _forbid(monkeypatch, runs, "evaluate")  # read from the members' results files, never recomputed
    result, record = runs.ensemble_runs(members, tmp_path / "ens")
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
    from msflow import cli

    assert cli.main(["ensemble", "--runs", *map(str, members), "--out", str(tmp_path / "ens-cli")]) == 0
    assert "chosen on validation: none; test accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "ens-cli" / "eval_test.json").read_text())["metrics"]["mean"] == written["metrics"]["mean"]
    assert cli.main(["ensemble", "--runs", str(members[0]), "--out", str(tmp_path / "bad")]) == 2
    assert "msflow ensemble: error: an ensemble needs at least two runs" in capsys.readouterr().err
    prose = study.results_prose({"cpu-ens": {"pneumoniamnist": written}}, ["pneumoniamnist"])
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
        runs.ensemble_runs(members, tmp_path / "ens-flips")
    monkeypatch.undo()
    for m in members:
        runs.evaluate_run(m, "test", data_root=small_root, device="cpu", progress=False, eval_overrides={"views": "flips"})
    _forbid(monkeypatch, runs, "evaluate")
    none, _ = runs.ensemble_runs(members, tmp_path / "ens-flips")
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
    chosen = study.our_results(tmp_path / "runs", "smoke-ens", ["pneumoniamnist"], readout=True)["pneumoniamnist"]
    assert chosen["metrics"] == flips["metrics"] and chosen["readout"]["chosen"] == "flips"  # the book reads it as a run's
    # members are compared apart from the batch size and the views; an older record without a field has its default
    older = {k: v for k, v in flips["eval"].items() if k != "views"} | {"batch_size": 7}
    assert runs._readout_settings({"eval": older}) == runs._readout_settings(flips)
    # what is not an ensemble of seeds of one recipe is refused with the reason
    with pytest.raises(ValueError, match="at least two runs"):
        runs.ensemble_runs(members[:1], tmp_path / "bad")
    with pytest.raises(ValueError, match="is one of the members; the ensemble's results go to a folder of their own"):
        runs.ensemble_runs(members, members[1])
    with pytest.raises(ValueError, match="has seed 0, as another member"):
        runs.ensemble_runs([members[0], members[0]], tmp_path / "bad")
    altered = tmp_path / "pneumoniamnist-smoke-seed1-steps2"
    shutil.copytree(members[1], altered)
    rec = json.loads((altered / "eval_test.json").read_text())
    rec["eval"]["steps"] = 2
    (altered / "eval_test.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="was read with other evaluation settings than"):
        runs.ensemble_runs([members[0], altered], tmp_path / "bad")
    other = tmp_path / "pneumoniamnist-smoke-lr"
    training.train(make_config("pneumoniamnist", "smoke", {"train.lr": 0.01}, seed=2), other, small_root, "cpu", progress=False)
    monkeypatch.undo()
    runs.evaluate_run(other, "test", data_root=small_root, device="cpu", progress=False)
    with pytest.raises(FileNotFoundError, match="no recorded single readout of the val split: run `msflow evaluate --run .* --choose-views` first"):
        runs.ensemble_runs([members[0], other], tmp_path / "bad")
    runs.evaluate_run(other, "val", data_root=small_root, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"was not trained like .* \(they differ in train\)"):
        runs.ensemble_runs([members[0], other], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
