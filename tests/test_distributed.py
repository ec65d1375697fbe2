"""Data-parallel training under torchrun on this CPU (gloo): N processes train the run one process trains, a run
resumes on any number of processes, two "nodes" on 127.0.0.1 train as one, and what cannot work is an error."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from msflow import distributed, train as training
from msflow.config import make_config

pytestmark = pytest.mark.slow  # each test starts a few Python processes

OVERRIDES = {"train.max_steps": 8, "train.eval_every": 4, "train.checkpoint_every": 2}

# Trains the smoke run into argv[1] on the data in argv[2]; with argv[3] = K > 0 it stops (as Ctrl-C would) after step K.
SCRIPT = textwrap.dedent("""
    import sys
    from msflow.config import make_config
    from msflow.train import train

    run, root, stop = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def on_step(step):
        if step == stop:
            raise KeyboardInterrupt("stopped for the test")

    train(make_config("bloodmnist", "smoke", %r), run, root, "cpu", progress=False, on_step=on_step if stop else None)
    """ % OVERRIDES)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], nproc: int = 2, extra: list[str] = (), env: dict | None = None, timeout: int = 300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1",
           "--master-port", str(_port()), *extra, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _script(run, root, stop: int = 0, script: str = SCRIPT) -> list[str]:
    """torchrun's arguments that run ``script`` in each process."""
    return ["--no-python", sys.executable, "-c", script, str(run), str(root), str(stop)]


def _result(run):
    weights = torch.load(run / "final.pt", weights_only=True)["weights"]
    record = json.loads((run / "train.json").read_text())
    return weights, [(h["step"], h["loss"], h["val_acc"]) for h in record["history"]], record


def _close(a, b, atol=1e-4):
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=atol) for k in a)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, synthetic_root):
    run = tmp_path_factory.mktemp("one") / "run"
    training.train(make_config("bloodmnist", "smoke", OVERRIDES), run, synthetic_root, "cpu", progress=False)
    return _result(run) + (run,)


def test_two_processes_with_half_the_batch_train_what_one_process_trains(tmp_path, synthetic_root, one_process):
    run = tmp_path / "run"
    done = _torchrun(_script(run, synthetic_root))
    assert done.returncode == 0, done.stderr[-3000:]
    weights, history, record = _result(run)
    ref_weights, ref_history = one_process[:2]
    assert _close(weights, ref_weights)  # the mean of two half-batch gradients is the batch's, up to rounding
    assert [h[0] for h in history] == [h[0] for h in ref_history]
    assert all(abs(a[1] - b[1]) < 1e-4 for a, b in zip(history, ref_history))  # the loss is the whole batch's
    assert record["provenance"]["world_size"] == 2 and len(record["provenance"]["devices"]) == 2
    assert record["images_seen"] == 8 * 16  # the global batch, as one process counts it
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == [
        "best.pt", "config.json", "final.pt", "train.json", "train_state.pt"]  # one writer


@pytest.mark.parametrize("first, then", [(2, 1), (1, 2)])
def test_a_run_resumes_on_another_number_of_processes(tmp_path, synthetic_root, one_process, first, then):
    run = tmp_path / "run"
    if first == 1:
        stopped = subprocess.run(_script(run, synthetic_root, 5)[1:], capture_output=True, text=True, timeout=300)
    else:
        stopped = _torchrun(_script(run, synthetic_root, 5))
    assert stopped.returncode != 0 and "KeyboardInterrupt" in stopped.stderr
    assert torch.load(run / "train_state.pt", weights_only=False)["step"] == 5
    if then == 1:
        training.train(make_config("bloodmnist", "smoke", OVERRIDES), run, synthetic_root, "cpu", progress=False)
    else:
        done = _torchrun(_script(run, synthetic_root))
        assert done.returncode == 0, done.stderr[-3000:]
    weights, history, record = _result(run)
    assert _close(weights, one_process[0]) and [h[0] for h in history] == [h[0] for h in one_process[1]]
    assert record["resumed"][0]["step"] == 5 and record["resumed"][0]["world_size"] == then


def test_two_nodes_on_one_host_train_as_one(tmp_path, synthetic_root, one_process):
    run, port = tmp_path / "run", _port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
                               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
                               *_script(run, synthetic_root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for rank in (0, 1)]
    outs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    weights, history, record = _result(run)
    assert _close(weights, one_process[0]) and record["provenance"]["world_size"] == 2


def test_a_crashed_process_ends_the_run_with_its_error(tmp_path, synthetic_root):
    crash = SCRIPT.replace("def on_step(step):", "import os\ndef on_step(step):\n    if step == 3 and os.environ['RANK'] == '1':\n"
                           "        raise RuntimeError('process 1 failed here')")
    crash = crash.replace("on_step=on_step if stop else None", "on_step=on_step")
    done = _torchrun(_script(tmp_path / "run", synthetic_root, 0, crash), env={distributed.TIMEOUT_ENV: "60"}, timeout=240)
    assert done.returncode != 0 and "process 1 failed here" in done.stderr


def test_processes_that_cannot_share_the_batch_are_refused(tmp_path, synthetic_root, monkeypatch):
    monkeypatch.setattr(distributed, "context", lambda device: distributed.Context(world=3, rank=0))
    with pytest.raises(ValueError, match=r"train.batch_size = 16 cannot be shared evenly by 3 processes: .*multiple of 3"):
        training.train(make_config("bloodmnist", "smoke"), tmp_path / "run", synthetic_root, "cpu", progress=False)
    assert not (tmp_path / "run").exists()  # nothing written


def test_more_processes_than_gpus_is_an_error_that_names_the_fix(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"process 1 of this node has no GPU: the node has 1; .*--nproc-per-node"):
        distributed.context(torch.device("cuda"))


EVALUATE = textwrap.dedent("""
    import sys
    from msflow.runs import evaluate_run

    evaluate_run(sys.argv[1], "test", data_root=sys.argv[2], device="cpu", progress=False, reuse=False,
                 eval_overrides={"batch_size": 16, "repeats": 2, "views": sys.argv[3]})
    """)


@pytest.mark.parametrize("views", ["none", "flips"])
def test_an_evaluation_on_two_processes_is_the_evaluation_on_one(tmp_path, synthetic_root, one_process, views):
    import shutil

    import numpy as np

    runs = {}
    for n in (1, 2):
        runs[n] = tmp_path / f"run{n}"
        shutil.copytree(one_process[3], runs[n], ignore=shutil.ignore_patterns("eval_*", "predictions_*", ".lock"))
    done = subprocess.run([sys.executable, "-c", EVALUATE, str(runs[1]), str(synthetic_root), views], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    done = _torchrun(["--no-python", sys.executable, "-c", EVALUATE, str(runs[2]), str(synthetic_root), views])
    assert done.returncode == 0, done.stderr[-2000:]
    suffix = "test" if views == "none" else f"test_{views}"
    one, two = (np.load(runs[n] / f"predictions_{suffix}.npz") for n in (1, 2))
    assert np.array_equal(one["labels"], two["labels"]) and one["distances"].shape == (2, 64, 8)
    assert np.array_equal(one["distances"], two["distances"])  # the same noise per image, however the batches are shared
    a, b = (json.loads((runs[n] / f"eval_{suffix}.json").read_text()) for n in (1, 2))
    assert a["metrics"]["per_pass"] == b["metrics"]["per_pass"] and b["provenance"]["world_size"] == 2


MULTIPASS = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    from msflow import distributed
    from msflow.data import load_split
    from msflow.runs import load_run
    from msflow.uncertainty import multi_pass

    loaded = load_run(sys.argv[1], "best", "cpu")
    split = load_split("bloodmnist", "test", 28, sys.argv[2])
    ctx = distributed.context(torch.device("cpu"))
    mp = multi_pass(loaded.components, split, 3, seed=5, batch_size=16, ctx=ctx)
    if ctx.main:
        np.savez(sys.argv[3], distances=mp.distances, spread=mp.spread)
    """)


def test_multi_pass_readouts_on_two_processes_are_those_of_one(tmp_path, synthetic_root, one_process):
    import numpy as np

    run = str(one_process[3])
    done = subprocess.run([sys.executable, "-c", MULTIPASS, run, str(synthetic_root), str(tmp_path / "one.npz")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    done = _torchrun(["--no-python", sys.executable, "-c", MULTIPASS, run, str(synthetic_root), str(tmp_path / "two.npz")])
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert one["distances"].shape == (3, 64, 8)
    assert np.array_equal(one["distances"], two["distances"]) and np.array_equal(one["spread"], two["spread"])
