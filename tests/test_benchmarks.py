"""benchmarks/throughput.py: what it measures is msflow's own code and the reference network; it prints its table.

No figure it prints is asserted beyond being a positive rate: speed is the benchmark's business, not a test's.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from msflow.config import make_config
from msflow.model import build

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


throughput = _load()


def test_the_plain_loop_trains_msflows_paper_network():
    """The plain loop's UNet, written from the reference's settings, is msflow's paper network, name for name."""
    ours = build(make_config("bloodmnist", "paper")).model.unet.state_dict()
    plain = throughput.plain_unet().state_dict()
    assert list(ours) == list(plain)
    assert all(ours[k].shape == plain[k].shape for k in ours)
    assert sum(v.numel() for v in plain.values()) == 8_955_526


def test_the_plain_loop_uses_the_rgb_code_of_eight_classes_and_trains():
    from msflow.codes import RGBCode

    assert torch.allclose(throughput.plain_colours(), RGBCode(8).prototypes)
    images, labels = torch.randint(0, 256, (16, 3, 28, 28), dtype=torch.uint8), torch.randint(0, 8, (16,))
    rate, params = throughput.plain_loop_rate(images, labels, torch.device("cpu"), 0, 1, batch=2)
    assert rate > 0 and params == 8_955_526


def test_the_table_runs_msflows_training_and_classification(tmp_path, capsys):
    out = tmp_path / "bench.json"
    throughput.main(["--networks", "smoke", "--options", "none,channels_last", "--processes", "1", "--warmup", "1",
                     "--iters", "1", "--passes", "1", "--no-plain", "--json", str(out)])
    rows = json.loads(out.read_text())["table"]
    assert [(r["network"], r["option"], r["processes"]) for r in rows] == [("smoke", "none", 1), ("smoke", "channels_last", 1)]
    params = build(make_config("bloodmnist", "smoke")).model.num_parameters()
    assert all(r["train"] > 0 and r["classify"] > 0 and r["parameters"] == params and r["batch"] == 16 for r in rows)
    printed = capsys.readouterr().out
    assert "network" in printed and printed.count("smoke ") == 2 and "1 x " in printed


@pytest.mark.slow
def test_the_table_times_two_processes(tmp_path):
    out = tmp_path / "bench.json"
    throughput.main(["--networks", "smoke", "--options", "none", "--processes", "2", "--warmup", "1", "--iters", "1",
                     "--passes", "1", "--no-plain", "--json", str(out)])
    (row,) = json.loads(out.read_text())["table"]
    assert row["processes"] == 2 and "error" not in row and row["train"] > 0 and row["threads_per_process"] >= 1


@pytest.mark.parametrize("argv, message", [
    (["--options", "fast"], "unknown option(s) ['fast']: choose from none,channels_last,compile,compile+channels_last"),
    (["--networks", "huge"], "unknown network(s) ['huge']"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        throughput.main(argv)
    assert message in capsys.readouterr().err
