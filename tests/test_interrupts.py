"""A run stopped at any point (SIGINT, SIGTERM, SIGKILL; in a validation, a checkpoint write or an optimisation step)
resumes to the same final weights, the same selected checkpoint and the same validation history as a run never stopped;
and two processes never write one run folder."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from msflow import train as training
from msflow.config import make_config
from msflow.files import RunLockedError, run_lock

OVERRIDES = {"train.max_steps": 12, "train.checkpoint_every": 4, "train.eval_every": 3}

# Trains the smoke run into argv[1] on the data in argv[2], and sends itself the signal argv[4] at the argv[5]-th call of
# the function at the point argv[3]: a validation (predict), a checkpoint write (the state's torch_save, after half a
# file is written) or an optimisation step (the EMA update, between the optimiser's step and the step counter).
STOPPED = textwrap.dedent("""
    import os, signal, sys
    import msflow.train as T
    from msflow.config import make_config

    run, root, point, sig, n = sys.argv[1], sys.argv[2], sys.argv[3], getattr(signal, sys.argv[4]), int(sys.argv[5])
    calls = [0]

    def stopping(real, before=None):
        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == n:
                if before:
                    before(*args)
                os.kill(os.getpid(), sig)
            return real(*args, **kwargs)
        return wrapped

    def half_file(obj, path):
        with open(str(path) + ".partial", "wb") as f:
            f.write(b"half a checkpoint")

    name = {"validation": "predict", "checkpoint": "torch_save", "step": "ema_update"}[point]
    setattr(T, name, stopping(getattr(T, name), half_file if point == "checkpoint" else None))
    T.train(make_config("bloodmnist", "smoke", %r), run, root, "cpu", progress=False)
    """ % OVERRIDES)


def _state(run):
    final = torch.load(run / "final.pt", weights_only=True)["weights"]
    record = json.loads((run / "train.json").read_text())
    history = [{k: h[k] for k in ("step", "loss", "val_acc", "val_auc", "val_recall")} for h in record["history"]]
    return final, record["best"]["step"], torch.load(run / "best.pt", weights_only=True)["meta"]["step"], history


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, synthetic_root):
    run = tmp_path_factory.mktemp("ref") / "run"
    training.train(make_config("bloodmnist", "smoke", OVERRIDES), run, synthetic_root, "cpu", progress=False)
    return _state(run)


@pytest.mark.slow  # a subprocess per case: about ten seconds each
@pytest.mark.parametrize("point, sig, n", [
    ("validation", "SIGINT", 2),   # Ctrl-C during the validation of step 6
    ("validation", "SIGTERM", 3),  # a scheduler's stop during the validation of step 9
    ("validation", "SIGKILL", 2),  # killed during a validation: resumes from the checkpoint of step 4
    ("checkpoint", "SIGKILL", 2),  # killed while the state of step 8 is written
    ("step", "SIGINT", 5),         # Ctrl-C between the optimiser's step and the step counter: deferred to the step's end
])
def test_a_stopped_run_resumes_to_the_run_never_stopped(tmp_path, synthetic_root, uninterrupted, point, sig, n):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", STOPPED, str(run), str(synthetic_root), point, sig, str(n)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0, done.stdout + done.stderr  # it was stopped
    assert not (run / "train.json").exists()
    training.train(make_config("bloodmnist", "smoke", OVERRIDES), run, synthetic_root, "cpu", progress=False)
    final, best, best_saved, history = _state(run)
    ref_final, ref_best, ref_best_saved, ref_history = uninterrupted
    assert history == ref_history  # every validation, once, with the same numbers
    assert best == ref_best == best_saved == ref_best_saved  # the same checkpoint selected, and saved
    assert final.keys() == ref_final.keys() and all(torch.equal(final[k], ref_final[k]) for k in final)


def test_a_second_writer_of_a_run_folder_is_refused_with_the_holder_named(tmp_path, synthetic_root, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from msflow.files import run_lock\n"
                               "with run_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)", str(run)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"{run.name} is being written by process {holder.pid} on .*wait until it ends"):
            training.train(make_config("bloodmnist", "smoke"), run, synthetic_root, "cpu", progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert not (run / "config.json").exists()  # the refused writer wrote nothing
    # the killed holder's lock goes with it: the folder is taken over, with a message
    with run_lock(run), run_lock(run):  # and one process may take it twice (train inside an evaluation, say)
        pass
    assert f"took over the lock left by process {holder.pid} on" in capsys.readouterr().out
    assert (run / ".lock").read_text() == ""  # released cleanly: nothing to take over next time
    with run_lock(run):
        pass
    assert "took over" not in capsys.readouterr().out
