import json
import math

import numpy as np
import pytest
import torch

from msflow import cli, train as training
from msflow.config import make_config
from msflow.model import ConfigMismatchError, load_weights, save_weights
from msflow.train import batch_indices, ema_decay_at, ema_update, epoch_permutation, lr_at


def test_lr_schedule_known_values():
    total, peak = 1000, 4e-4
    assert lr_at(0, total, peak, 0.1) == pytest.approx(peak * 0.5 * (1 - math.cos(math.pi / 100)))
    assert lr_at(49, total, peak, 0.1) == pytest.approx(peak / 2)
    assert lr_at(99, total, peak, 0.1) == pytest.approx(peak)
    assert lr_at(100, total, peak, 0.1) == pytest.approx(peak)
    assert lr_at(550, total, peak, 0.1) == pytest.approx(peak / 2)
    assert lr_at(1000, total, peak, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(0, 10, peak, 0.0) == pytest.approx(peak)


def test_ema_decay_warmup():
    assert ema_decay_at(0, 0.999, True) == pytest.approx(0.1)
    assert ema_decay_at(10**6, 0.999, True) == 0.999
    assert ema_decay_at(0, 0.7, False) == 0.7


def test_ema_update_by_hand():
    model, ema = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0), model.bias.fill_(2.0), ema.weight.fill_(0.0), ema.bias.fill_(0.0)
    ema_update(ema, model, 0.75)  # 0.75 * 0 + 0.25 * value
    assert ema.weight.tolist() == [[0.25, 0.25]] and ema.bias.tolist() == [0.5]
    ema_update(ema, model, 0.5)
    assert ema.weight.tolist() == [[0.625, 0.625]] and ema.bias.tolist() == [1.25]


def test_batches_cover_each_epoch_once():
    n, b = 10, 4
    epoch0 = torch.cat([batch_indices(s, n, b, seed=0) for s in range(3)])
    epoch1 = torch.cat([batch_indices(s, n, b, seed=0) for s in range(3, 6)])
    assert sorted(epoch0.tolist()) == list(range(10)) and sorted(epoch1.tolist()) == list(range(10))
    assert len(batch_indices(2, n, b, 0)) == 2  # short last batch
    assert not torch.equal(epoch0, epoch1)
    # the epoch's permutation passed in (as training does, once per epoch on its device) gives the same batches
    perm1 = epoch_permutation(1, n, 0)
    assert torch.equal(torch.cat([batch_indices(s, n, b, 0, perm1) for s in range(3, 6)]), epoch1)


def test_checkpoint_round_trip_is_bit_identical(tmp_path):
    cfg = make_config("bloodmnist", "smoke")
    from msflow.model import build

    model = build(cfg).model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    save_weights(tmp_path / "w.pt", model, cfg, {"step": 3})
    loaded = load_weights(tmp_path / "w.pt", expect=cfg)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.components.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert loaded.config == cfg and loaded.meta == {"step": 3}
    save_weights(tmp_path / "h.pt", model, cfg, half=True)
    half = load_weights(tmp_path / "h.pt").components.model
    assert all(torch.equal(a.half().float(), b) for a, b in zip(model.parameters(), half.parameters()))


def test_checkpoint_from_another_config_is_refused(tmp_path):
    cfg = make_config("bloodmnist", "smoke")
    from msflow.model import build

    save_weights(tmp_path / "w.pt", build(cfg).model, cfg)
    other = make_config("bloodmnist", "smoke", {"model.base_channels": 16})
    with pytest.raises(ConfigMismatchError, match="model.base_channels: 8 there, 16 asked"):
        load_weights(tmp_path / "w.pt", expect=other)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable msflow checkpoint"):
        load_weights(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="train the run first"):
        load_weights(tmp_path / "none.pt")


def _cfg(**over):
    return make_config("bloodmnist", "smoke", {"train.max_steps": 12, "train.checkpoint_every": 5, "train.eval_every": 6, **over})


def _interrupt_at(n, exc):
    def hook(step):
        if step == n:
            raise exc

    return hook


@pytest.mark.parametrize("exc, saved_at", [(KeyboardInterrupt(), 7), (RuntimeError("killed"), 5)])
def test_resume_after_interruption_is_exact(tmp_path, synthetic_root, exc, saved_at):
    """An interrupted run saves its state (Ctrl-C) or keeps the last checkpoint (crash) and resumes exactly."""
    straight = training.train(_cfg(), tmp_path / "a", synthetic_root, "cpu", progress=False)
    with pytest.raises(type(exc)):
        training.train(_cfg(), tmp_path / "b", synthetic_root, "cpu", progress=False, on_step=_interrupt_at(7, exc))
    assert torch.load(tmp_path / "b" / training.STATE_FILE, weights_only=False)["step"] == saved_at
    resumed = training.train(_cfg(), tmp_path / "b", synthetic_root, "cpu", progress=False)
    assert resumed.steps == straight.steps == 12
    a = load_weights(tmp_path / "a" / "final.pt").components.model.state_dict()
    b = load_weights(tmp_path / "b" / "final.pt").components.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["val_acc"] for h in resumed.history] == [h["val_acc"] for h in straight.history]
    import json

    record = json.loads((tmp_path / "b" / "train.json").read_text())
    assert [r["step"] for r in record["resumed"]] == [saved_at]  # the code of each segment is on record
    assert record["provenance"]["git_commit"] and record["finished"]["git_commit"]


def test_resuming_with_another_config_is_refused(tmp_path, synthetic_root):
    training.train(_cfg(**{"train.max_steps": 2}), tmp_path, synthetic_root, "cpu", progress=False)
    with pytest.raises(ConfigMismatchError, match="train.lr"):
        training.train(_cfg(**{"train.max_steps": 2, "train.lr": 1.0}), tmp_path, synthetic_root, "cpu", progress=False)


def test_channels_last_trains_the_same_run_and_may_change_on_resume(tmp_path, synthetic_root):
    """channels_last changes the memory order, not the arithmetic's meaning: the weights agree to float rounding; a run
    started without it goes on with it (a speed field is no mismatch), while any other change is still refused."""
    straight = training.train(_cfg(), tmp_path / "a", synthetic_root, "cpu", progress=False)
    with pytest.raises(KeyboardInterrupt):
        training.train(_cfg(), tmp_path / "b", synthetic_root, "cpu", progress=False, on_step=_interrupt_at(7, KeyboardInterrupt()))
    fast = _cfg(**{"train.channels_last": True, "train.compile": False})
    resumed = training.train(fast, tmp_path / "b", synthetic_root, "cpu", progress=False)
    assert resumed.steps == straight.steps == 12
    a = load_weights(tmp_path / "a" / "final.pt").components.model.state_dict()
    b = load_weights(tmp_path / "b" / "final.pt").components.model.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    training.train(_cfg(**{"train.channels_last": True}), tmp_path / "c", synthetic_root, "cpu", progress=False)
    c = load_weights(tmp_path / "c" / "final.pt").components.model.state_dict()
    assert max((a[k] - c[k]).abs().max().item() for k in a) < 1e-4
    with pytest.raises(ConfigMismatchError, match="train.lr"):
        training.train(_cfg(**{"train.channels_last": True, "train.lr": 1.0}), tmp_path / "b", synthetic_root, "cpu", progress=False)


def test_train_autocast_follows_the_config():
    layer, x, cpu = torch.nn.Linear(4, 4), torch.randn(2, 4), torch.device("cpu")
    fp32 = make_config("bloodmnist", "cpu").train
    assert fp32.bf16 and not fp32.cpu_bf16  # bf16 alone leaves CPU training (and the recorded CPU runs) in fp32
    with training.train_autocast(fp32, cpu):
        assert layer(x).dtype == torch.float32
    with training.train_autocast(make_config("bloodmnist", "cpu", {"train.cpu_bf16": True}).train, cpu):
        assert layer(x).dtype == torch.bfloat16


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_training_learns_the_synthetic_task(tmp_path, synthetic_root, cpu_bf16):
    cfg = make_config("pneumoniamnist", "smoke", {"train.max_steps": 40, "train.eval_every": 40, "train.cpu_bf16": cpu_bf16})
    result = training.train(cfg, tmp_path, synthetic_root, "cpu", progress=False)
    assert result.best["val_acc"] >= 0.9
    assert result.images_seen == 40 * 16
    recall = result.history[-1]["val_recall"]  # per class, consistent with the accuracy on a balanced split
    assert len(recall) == 2 and min(recall) >= 0.8
    record = json.loads((tmp_path / "train.json").read_text())
    assert record["dataset"]["synthetic"] is True and record["steps"] == 40
    assert record["provenance"]["git_commit"] and record["provenance"]["torch_version"]


def test_end_to_end_cli_train_evaluate_generate(tmp_path, synthetic_root, capsys):
    run = tmp_path / "run"
    common = ["--data-root", str(synthetic_root), "--device", "cpu"]
    assert cli.main(["train", "--dataset", "retinamnist", "--recipe", "smoke", "--out", str(run), "--no-eval", *common]) == 0
    assert cli.main(["evaluate", "--run", str(run), "--repeats", "3", "--steps", "2", "--solver", "heun", *common]) == 0
    record = json.loads((run / "eval_test.json").read_text())
    m = record["metrics"]
    assert len(m["per_pass"]) == 3 and record["eval"]["solver"] == "heun"
    assert m["mean"]["acc"] == pytest.approx(np.mean([p["acc"] for p in m["per_pass"]]))
    assert len(m["accuracy_rejection"]["mean"]) == 20 and np.array(m["confusion"]).sum() == 64
    assert record["dataset"]["synthetic"] is True and record["training"]["steps"] == 30
    for key in ("git_commit", "msflow_version", "torch_version", "device"):
        assert record["provenance"][key]
    preds = np.load(run / "predictions_test.npz")
    assert preds["distances"].shape == (3, 64, 5)
    assert "Retina" in capsys.readouterr().out
    assert cli.main(["evaluate", "--run", str(run), "--repeats", "2", "--views", "flips", *common]) == 0
    flips = json.loads((run / "eval_test_flips.json").read_text())
    assert flips["eval"]["views"] == "flips" and len(flips["metrics"]["per_pass"]) == 2
    assert json.loads((run / "eval_test.json").read_text())["eval"]["solver"] == "heun"  # the single readout's record stays
    assert cli.main(["generate", "--run", str(run), "--per-class", "2", "--steps", "3", "--device", "cpu"]) == 0
    from PIL import Image

    img = Image.open(run / "samples.png")
    assert img.size == (2 * (2 + 2 * 18), 2 * (2 + 5 * 18))  # 2 columns, 5 class rows of 16 px, 2 px padding, x2
    out = capsys.readouterr().out
    assert "wrote 10 images" in out


def test_cli_errors_are_clear(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "chestxray", "--recipe", "smoke", "--out", str(tmp_path)]) == 2
    assert "unknown dataset 'chestxray'" in capsys.readouterr().err
    assert cli.main(["train", "--dataset", "dermamnist", "--recipe", "smoke", "--out", str(tmp_path / "r"), "--data-root", str(tmp_path)]) == 2
    assert "dermamnist.npz" in capsys.readouterr().err
    assert cli.main(["evaluate", "--run", str(tmp_path / "nothing")]) == 2
    assert "train the run first" in capsys.readouterr().err
