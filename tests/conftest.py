"""Shared fixtures: synthetic MedMNIST roots, the real-data root when present, opt-in slow tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from msflow import data

REAL_ROOT = Path(os.environ.get("MSFLOW_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A data root with small synthetic files for all four study datasets at 28 px."""
    root = tmp_path_factory.mktemp("medmnist")
    for name in data.STUDY_DATASETS:
        data.write_synthetic(root, name, 28, seed=1)
    return root


def real_file(name: str) -> Path:
    return REAL_ROOT / data.get_info(name).filename(28)


def require_real(name: str) -> Path:
    """Skip unless the real MedMNIST file of ``name`` is present."""
    path = real_file(name)
    if not path.exists():
        pytest.skip(f"real data not present: {path} (set MSFLOW_DATA to a folder holding it)")
    return REAL_ROOT


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    """Synthetic files small enough for ResNet-18 on a CPU."""
    root = tmp_path_factory.mktemp("small")
    data.write_synthetic(root, "pneumoniamnist", 28, {"train": 48, "val": 24, "test": 24}, seed=3)
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_root) -> Path:
    """A trained smoke run of PneumoniaMNIST (``pneumoniamnist-smoke``) on ``small_root``."""
    from msflow.config import make_config
    from msflow.train import train

    path = tmp_path_factory.mktemp("runs") / "pneumoniamnist-smoke"
    train(make_config("pneumoniamnist", "smoke"), path, small_root, "cpu", progress=False)
    return path


@pytest.fixture
def forbid(monkeypatch):
    """``forbid(module, name)``: calling ``module.name`` fails the test (a recorded results file should be read instead)."""

    def forbid_(module, name):
        def fail(*args, **kwargs):
            raise AssertionError(f"{name} was called: the recorded results file should have been read")

        monkeypatch.setattr(module, name, fail)

    return forbid_
