"""The study's entry points: the notebook pipeline (its table of contents and arguments) and the GPU session's packing."""

import os
import tarfile
from pathlib import Path

import nbformat
import pytest
import torch

from msflow import train as training
from msflow.config import make_config
from msflow.model import ConfigMismatchError
from msflow_study import gpu_session, pipeline, registry


def test_recorded_config_of_a_time_boxed_run(tmp_path, small_root, capsys):
    fitted = make_config("pneumoniamnist", "smoke", {"train.max_steps": 6, "train.eval_every": 3})
    training.train(fitted, tmp_path / "pneumoniamnist-smoke", small_root, "cpu", progress=False)
    asked = make_config("pneumoniamnist", "smoke")
    assert registry.recorded_config(tmp_path / "pneumoniamnist-smoke", asked) == fitted
    assert "train.max_steps = 6 (entry: 30)" in capsys.readouterr().out
    # anything else recorded otherwise is another run: an error that names the fields, not a silent reuse
    with pytest.raises(ConfigMismatchError, match=r"another configuration .*model.base_channels: 8 there, 16 asked"):
        registry.recorded_config(tmp_path / "pneumoniamnist-smoke", make_config("pneumoniamnist", "cpu"))
    assert registry.recorded_config(tmp_path / "missing", asked) is asked
    # the speed fields are the asker's: the recorded run goes on compiled, in channels-last order
    fast = make_config("pneumoniamnist", "smoke", {"train.compile": True, "train.channels_last": True})
    found = registry.recorded_config(tmp_path / "pneumoniamnist-smoke", fast)
    assert found.train.compile and found.train.channels_last and found.train.max_steps == 6


def test_gpu_session_packs_new_results_in_parts(tmp_path, run):
    session = gpu_session
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


def test_toc_lists_the_dataset_pages_which_link_every_executed_run(tmp_path, monkeypatch):
    module = pipeline
    executed = tmp_path / "book" / "executed"
    for page in ("pneumoniamnist-cpu/train", "pneumoniamnist-gpu/train", "pneumoniamnist-gpu/evaluate", "pneumoniamnist-recipes"):
        (executed / page).parent.mkdir(parents=True, exist_ok=True)
        (executed / f"{page}.ipynb").write_text("{}")
    monkeypatch.setattr(module, "EXECUTED", executed)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    assert module.write_toc() is True
    toc = (tmp_path / "_toc.yml").read_text()
    assert 'file: book/datasets/pneumoniamnist\n            title: "PneumoniaMNIST: the runs"' in toc
    # run pages are orphans; the recipes page is a section of the compute chapter, the one dataset with pages only
    assert "book/executed/pneumoniamnist-cpu" not in toc and "book/executed/pneumoniamnist-gpu" not in toc
    assert "bloodmnist" not in toc
    assert ('- file: book/compute\n        sections:\n          - file: book/executed/pneumoniamnist-recipes\n'
            '            title: "PneumoniaMNIST: recipes compared"') in toc
    assert toc.count("- file:") <= 20
    assert module.write_toc() is False  # the same pages: the file is left as it is
    # the dataset's page has a tab per run, in the editions' order, linking the runs' pages and the recipes page
    page = (tmp_path / "book" / "datasets" / "pneumoniamnist.md").read_text()
    assert page.count(":::{tab-item}") == 2 and page.index("tab-item} gpu") < page.index("tab-item} cpu")
    assert "{doc}`evaluation <../executed/pneumoniamnist-gpu/evaluate>`" in page
    assert "{doc}`training <../executed/pneumoniamnist-cpu/train>`" in page
    assert "{doc}`../executed/pneumoniamnist-recipes`" in page
    assert "{run}`" not in page  # the recipes page glued no facts: no number is quoted


def test_the_committed_dataset_pages_quote_their_runs():
    page = (pipeline.ROOT / "book" / "datasets" / "bloodmnist.md").read_text()
    assert ":::{tab-item} cpu-ens" in page and "{run}`bloodmnist/cpu-ens:acc`" in page
    assert "{doc}`training <../executed/bloodmnist-cpu-lam05-x6/train>`" in page


def test_the_documented_compare_command_is_the_one_the_recipes_pages_were_executed_with():
    # Reproducing prints the command that renders the recipes pages: its runs must be those the pages record, in order
    import json
    import shlex

    text = (pipeline.ROOT / "book" / "reproducing.md").read_text()
    block = text.split(":::{dropdown} The command that renders the recipes pages", 1)[1].split("```bash\n", 1)[1]
    words = shlex.split(block.split("```", 1)[0].replace("\\\n", " "))
    assert words[:3] == ["bash", "scripts/study.sh", "--compare"]
    end = words.index("--")
    for flag in words[end + 1:]:
        page = json.loads((pipeline.EXECUTED / f"{flag}-recipes.ipynb").read_text())
        assert page["metadata"]["papermill"]["parameters"]["run_names"].split(",") == words[3:end], flag
    assert sorted(words[end + 1:]) == sorted(p.name.removesuffix("-recipes.ipynb")
                                             for p in pipeline.EXECUTED.glob("*-recipes.ipynb"))


def test_study_notebook_params():
    module = pipeline
    assert module.notebook_params(["uncertainty.ensemble=1", "fidelity.solvers=euler,heun", "fidelity.inception=false"]) == {
        "uncertainty": {"ensemble": 1}, "fidelity": {"solvers": "euler,heun", "inception": False}}
    with pytest.raises(SystemExit, match="NOTEBOOK.NAME=VALUE"):
        module.notebook_params(["ensemble=1"])


def test_study_refuses_datasets_taken_for_compared_runs(monkeypatch):
    module = pipeline
    # argparse gives --compare every word after it, datasets included: the run must stop before executing anything
    monkeypatch.setattr(module, "execute", lambda *a, **k: pytest.fail("nothing may be executed"))
    with pytest.raises(SystemExit, match=r"--compare bloodmnist retinamnist: no such runs .* after -- that ends its list"):
        module.main(["--no-book", "--compare", "cpu", "gpu", "bloodmnist", "retinamnist"])
    # seeds and ensembles of the experiment files may be compared; a seed suffix does not make a dataset a run
    with pytest.raises(SystemExit, match=r"--compare bloodmnist-seed1: no such runs"):
        module.main(["--no-book", "--compare", "cpu-w24-seed1", "cpu-ens", "bloodmnist-seed1"])


def test_the_committed_toc_is_the_one_the_pipeline_writes():
    # a run of the study that changes no page leaves _toc.yml as committed (no -dirty commit in later records)
    before = (pipeline.ROOT / "_toc.yml").read_text()
    assert before.count("- file:") <= 20  # chapters and dataset pages; the run pages are linked from the latter
    assert pipeline.write_toc() is False
    assert (pipeline.ROOT / "_toc.yml").read_text() == before


def _page(cells: list[str], when: str) -> str:
    import hashlib

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c, id=f"cell-{i}") for i, c in enumerate(cells)])
    nb.metadata["papermill"] = {"start_time": when, "duration": 1.5}
    for i, cell in enumerate(nb.cells):
        cell.metadata["papermill"] = {"start_time": when, "duration": 0.1}
        widget = hashlib.md5(f"{i} {when}".encode()).hexdigest()  # a new id at every execution, as ipywidgets makes them
        cell.outputs = [nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {
            "model_id": widget, "version_major": 2}})]
    return nbformat.writes(nb)


def test_a_page_is_replaced_only_by_a_successful_and_different_execution(tmp_path, monkeypatch):
    executed = tmp_path / "book" / "executed"
    executed.mkdir(parents=True)
    committed = executed / "summary.ipynb"
    committed.write_text(_page(["1 + 1"], "2026-11-01T10:00"))
    monkeypatch.setattr(pipeline, "ROOT", tmp_path)
    monkeypatch.setattr(pipeline, "EXECUTED", executed)
    monkeypatch.setattr(pipeline, "WORK", tmp_path / ".msflow-study")
    page = {"text": _page(["1 + 1"], "2026-12-03T11:00")}  # the same page, executed at another time (new widget ids)

    def execute_notebook(src, out, *args, **kwargs):
        Path(out).write_text(page["text"])
        if "fail" in page:
            raise RuntimeError("a cell failed")

    monkeypatch.setattr(pipeline, "execute_notebook", execute_notebook)
    log: list[str] = []
    before = committed.read_bytes()
    assert pipeline.execute("summary", committed, {}, True, log) is True
    assert committed.read_bytes() == before and log[-1].endswith("the same page as before, kept as it was")
    page["fail"] = True  # a failure keeps the committed page, and the partial one where the log says
    assert pipeline.execute("summary", committed, {}, True, log) is False
    assert committed.read_bytes() == before
    assert "partial notebook in .msflow-study/failed/summary.ipynb; its committed copy is kept" in log[-1]
    assert (tmp_path / ".msflow-study" / "failed" / "summary.ipynb").read_text() == page["text"]
    del page["fail"]
    page["text"] = _page(["1 + 2"], "2026-12-03T11:00")  # new content replaces the page
    assert pipeline.execute("summary", committed, {}, True, log) is True
    assert committed.read_text() == page["text"]
    assert pipeline.execute("summary", committed, {}, False, log) is None and log[-1] == "reused book/executed/summary.ipynb"


def test_a_bare_machine_renders_the_committed_book_and_says_what_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MSFLOW_DATA", str(tmp_path / "no-data"))
    monkeypatch.setattr(pipeline, "execute_notebook", lambda *a, **k: pytest.fail("nothing needs executing"))
    monkeypatch.setattr(pipeline, "write_toc", lambda: False)
    assert pipeline.main(["--no-book", "pneumoniamnist", "bloodmnist"]) == 0
    out = capsys.readouterr().out
    assert "skipped pneumoniamnist: PneumoniaMNIST at 28 px is missing: pneumoniamnist.npz is needed in" in out
    assert "skipped the explore page" in out and "reused book/executed/summary.ipynb" in out
    assert "bash scripts/study.sh --download pneumoniamnist bloodmnist" in out and "../shared/data/medmnist" in out
    assert pipeline.main(["--no-book", "--strict", "pneumoniamnist"]) == 1
    asked = []

    def locate(name, size, root, download):
        asked.append((name, size, download))
        raise FileNotFoundError("offline here")

    monkeypatch.setattr("msflow.data.locate", locate)
    assert pipeline.main(["--no-book", "--download", "retinamnist"]) == 0  # the download is asked for, and fails here
    assert asked == [("retinamnist", 28, True)] and "skipped retinamnist: offline here" in capsys.readouterr().out


def test_bad_arguments_are_errors_before_anything_runs(monkeypatch):
    monkeypatch.setattr(pipeline, "execute", lambda *a, **k: pytest.fail("nothing may be executed"))
    with pytest.raises(SystemExit, match="unknown dataset 'chestxray'"):
        pipeline.main(["--no-book", "chestxray"])
    with pytest.raises(SystemExit, match="'cpu-huge' is neither a run of the experiment files nor a recipe"):
        pipeline.main(["--no-book", "--name", "cpu-huge", "bloodmnist"])


def test_the_gpu_session_spreads_its_processes_over_the_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu_session._visible_gpus() == ["2", "3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert gpu_session._visible_gpus() == ["0", "1", "2", "3"]


def test_a_damaged_record_fails_the_pages_that_read_it_not_the_run_of_the_study(tmp_path, monkeypatch, capsys):
    # the pipeline itself lists the editions without parsing records: a truncated results file fails the pages that
    # read it (their committed copies are kept), with a message naming it, and the rest goes on
    runs = tmp_path / "results"
    (runs / "pneumoniamnist-cpu-ens").mkdir(parents=True)
    (runs / "pneumoniamnist-cpu-ens" / "eval_test.json").write_text('{"metrics": {"mean"')
    assert registry.editions(runs, "cpu") == ["cpu-ens", "cpu"]


def test_same_page_ignores_times_random_ids_and_object_addresses_only():
    import json

    def page(time, widget, address, value, injected="e6ba2429"):
        params = {"cell_type": "code", "id": injected, "metadata": {"tags": ["injected-parameters"]}, "source": "x = 1"}
        return json.dumps({"metadata": {"papermill": {"duration": time}}, "cells": [params, {
            "cell_type": "code", "id": "summary-3", "metadata": {}, "execution_count": 1,
            "outputs": [{"data": {"text/plain": f"<Styler at 0x{address}>", "text/html": f"<b>{value}</b> {widget}"}}]}]})

    a = page(1.5, "a" * 32, "7fee94ed4f90", "95.0")
    assert pipeline.same_page(a, page(9.0, "b" * 32, "7f00aa11bb22", "95.0", injected="414ddb66"))
    assert not pipeline.same_page(a, page(1.5, "a" * 32, "7fee94ed4f90", "95.1"))  # a number changed: a new page
