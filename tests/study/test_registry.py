"""The study's registry: experiments are data files, every recorded run is an entry of them, and its record says so."""

import json
import shutil
from pathlib import Path

import pytest

from msflow.config import RECIPES, RunConfig, config_diff, make_config
from msflow.model import ConfigMismatchError
from msflow_study import experiments, registry
from msflow_study.experiments import ExperimentError

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"


@pytest.fixture(scope="module")
def exp():
    return experiments.load()


def _folders():
    return sorted(p for p in RESULTS.iterdir() if (p / "config.json").exists() or (p / "run.json").exists())


def test_every_recorded_run_is_its_entry_and_records_it(exp):
    # the resolved entry is exactly the configuration that ran (older records name the recipe by the run's name)
    folders = _folders()
    assert len(folders) >= 50
    for folder in folders:
        record = json.loads((folder / registry.RECORD_FILE).read_text())
        assert record["run"] == folder.name, folder
        if "members" in record:  # an ensemble: its members are runs of the experiment files, recorded beside it
            assert record["members"] == list(exp.ensembles[record["name"]].members[record["dataset"]])
            members = json.loads((folder / "eval_test.json").read_text())["ensemble"]["members"]
            assert [m["run"] for m in members] == [f"{record['dataset']}-{m}" for m in record["members"]]
            continue
        recorded = RunConfig.from_dict(json.loads((folder / "config.json").read_text()))
        entry = exp.config(record["name"], record["dataset"])
        assert set(config_diff(entry, recorded)) <= {"recipe"}, folder
        assert record["recipe"] == exp.recipe(record["name"]) and record["seed"] == recorded.seed
        # the record's overrides rebuild the configuration from its recipe
        rebuilt = make_config(record["dataset"], record["recipe"], record["overrides"], seed=record["seed"])
        assert rebuilt == entry, folder
        assert record["experiment"].startswith("experiments/") and record["why"] and record["question"]
        train = json.loads((folder / "train.json").read_text())
        assert record["commit"] == train["provenance"]["git_commit"]


def test_migration_is_idempotent_and_writes_what_is_committed(tmp_path, exp):
    runs = tmp_path / "results"
    for name in ("bloodmnist-cpu-lam05-x6", "pneumoniamnist-gpu", "retinamnist-cpu-ens"):  # weights in git: see the checkpoint
        shutil.copytree(RESULTS / name, runs / name, ignore=shutil.ignore_patterns("*.npz"))
    for f in runs.glob("*/run.json"):
        f.unlink()
    assert set(registry.migrate(runs, exp, say=lambda _: None).values()) == {"written"}
    first = {f: f.read_bytes() for f in runs.glob("*/run.json")}
    assert len(first) == 3
    assert set(registry.migrate(runs, exp, say=lambda _: None).values()) == {"unchanged"}
    assert {f: f.read_bytes() for f in runs.glob("*/run.json")} == first
    for f, content in first.items():  # what the repository holds is what the migration writes
        assert content == (RESULTS / f.parent.name / "run.json").read_bytes()
    record = json.loads((runs / "pneumoniamnist-gpu" / "run.json").read_text())
    assert record["overrides"]["train.max_steps"] == 400 and record["base"] == "gpu"  # the length the time box fitted
    assert record["checkpoint"]["file"] == "best.pt" and len(record["checkpoint"]["sha256"]) == 64


def test_migration_keeps_the_recorded_checkpoint_of_weights_not_in_the_clone(tmp_path, exp):
    # a clone holds only the book's checkpoints: the others' hashes stay as recorded, and a run never recorded says so
    runs = tmp_path / "results"
    shutil.copytree(RESULTS / "bloodmnist-cpu-lam05-x6-seed1", runs / "bloodmnist-cpu-lam05-x6-seed1",
                    ignore=shutil.ignore_patterns("*.pt", "*.npz"))
    assert registry.migrate(runs, exp, say=lambda _: None) == {"bloodmnist-cpu-lam05-x6-seed1": "unchanged"}
    (runs / "bloodmnist-cpu-lam05-x6-seed1" / "run.json").unlink()
    registry.migrate(runs, exp, say=lambda _: None)
    lost = json.loads((runs / "bloodmnist-cpu-lam05-x6-seed1" / "run.json").read_text())["checkpoint"]
    assert lost["sha256"] is None and "cannot be checked again" in lost["note"]


def test_migration_refuses_a_folder_without_its_entry_or_with_another_config(tmp_path, exp):
    runs = tmp_path / "results"
    shutil.copytree(RESULTS / "bloodmnist-cpu-lam05", runs / "bloodmnist-cpu-lam07", ignore=shutil.ignore_patterns("*.pt", "*.npz"))
    with pytest.raises(ExperimentError, match="bloodmnist-cpu-lam07 has no entry 'cpu-lam07'"):
        registry.migrate(runs, exp)
    shutil.rmtree(runs / "bloodmnist-cpu-lam07")
    shutil.copytree(RESULTS / "bloodmnist-cpu-lam05", runs / "bloodmnist-cpu-long", ignore=shutil.ignore_patterns("*.pt", "*.npz"))
    with pytest.raises(ExperimentError, match=r"records another configuration than its entry 'cpu-long' .*flow.lam: 0.5 recorded, 0.7"):
        registry.migrate(runs, exp)


def test_a_run_differs_from_its_base_exactly_by_its_own_overrides(exp):
    # true by construction: a run's configuration is its base's with its own overrides, and nothing else
    for name, entry in exp.runs.items():
        for flag in entry.datasets:
            cfg = exp.config(name, flag)
            base = exp.config(entry.base, flag) if entry.base in exp.runs else make_config(flag, entry.base)
            own = {**entry.set, **entry.set_for.get(flag, {})} | ({"seed": entry.seed} if entry.seed is not None else {})
            own = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in own.items()}
            changed = {k: b for k, (_, b) in config_diff(base, cfg).items()}
            assert changed == {k: v for k, v in own.items() if _value(base, k) != v}, (name, flag)


def _value(cfg, key):
    section, _, field = key.partition(".")
    value = getattr(getattr(cfg, section), field) if field else getattr(cfg, section)
    return list(value) if isinstance(value, tuple) else value


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)
    return folder


GOOD = '''question = "A question?"

[runs.tiny]
base = "smoke"
datasets = ["pneumoniamnist"]
why = "A smoke run."
'''


@pytest.mark.parametrize("text, message", [
    ('question = "q"\n[runs.a]\nbase = "cpu"\ndatasets = ["bloodmnist"]\nwhy = "w"\nset = { "train.lr_max" = 1 }\n',
     r"bad.toml, run 'a': TrainConfig has no field 'lr_max'"),
    ('question = "q"\n[runs.a]\nbase = "cpu"\ndatasets = ["bloodmnist"]\nwhy = "w"\nset = { "train.ema_warmup" = "maybe" }\n',
     r"bad.toml, run 'a': train.ema_warmup expects true or false"),
    ('question = "q"\n[runs.a]\nbase = "cpu-huge"\ndatasets = ["bloodmnist"]\nwhy = "w"\n', r"bad.toml, run 'a': unknown base 'cpu-huge'"),
    ('question = "q"\n[runs.a]\nbase = "cpu"\ndatasets = ["bloodmnist"]\nwhy = "w"\nsteps = 3\n', r"bad.toml, run 'a': unknown keys \['steps'\]"),
    ('question = "q"\n[runs.a]\nbase = "cpu"\ndatasets = ["bloodmnist"]\n', r"bad.toml, run 'a' has no why"),
    ('question = "q"\n[runs.a]\nbase = "cpu"\ndatasets = ["chestxray"]\nwhy = "w"\n', r"bad.toml, run 'a': unknown dataset 'chestxray'"),
    ('question = "q"\n[runs.a]\nbase = "b"\ndatasets = ["bloodmnist"]\nwhy = "w"\n[runs.b]\nbase = "a"\ndatasets = ["bloodmnist"]\nwhy = "w"\n',
     r"its bases form a cycle"),
    ('question = "q"\n[runs.tiny]\nbase = "cpu"\ndatasets = ["bloodmnist"]\nwhy = "w"\n', r"good.toml, run 'tiny' is also defined in .*bad.toml; a run name is defined once"),
    ('question = "q"\n[runs.a]\nbase = "cpu"\ndatasets = ["bloodmnist"]\nwhy = "w"\nset_for.retinamnist = { "train.lr" = 1 }\n',
     r"set_for names retinamnist, which is not among its datasets"),
    ('[runs.a]\nbase = "cpu"\ndatasets = ["bloodmnist"]\nwhy = "w"\n', r"bad.toml has no question"),
    ('question = "q"\n[runs.a\n', r"bad.toml is not valid TOML"),
    ('question = "q"\n[ensembles.e]\nwhy = "w"\nmembers.pneumoniamnist = ["tiny", "tiny-seed9"]\n', r"member 'tiny-seed9' is no run"),
])
def test_a_bad_experiment_file_is_an_error_that_names_the_file_and_the_entry(tmp_path, text, message):
    folder = _write(tmp_path / "experiments", "good.toml", GOOD)
    _write(folder, "bad.toml", text)
    with pytest.raises(ExperimentError, match=message):
        experiments.load(folder)


def test_training_an_entry_writes_its_record_and_a_changed_entry_is_refused(tmp_path, small_root):
    folder = _write(tmp_path / "experiments", "q.toml", GOOD + '\n[runs.tiny-lr]\nbase = "tiny"\nset = { "train.lr" = 0.01, '
                    '"train.max_steps" = 4, "train.eval_every" = 2 }\nseed = 1\ndatasets = ["pneumoniamnist"]\nwhy = "w"\n')
    exp = experiments.load(folder)
    runs = tmp_path / "results"
    result = registry.train_run("tiny-lr", "pneumoniamnist", runs, small_root, "cpu", experiments=exp, progress=False)
    run = runs / "pneumoniamnist-tiny-lr"
    record = json.loads((run / "run.json").read_text())
    assert result.steps == 4 and record["base"] == "tiny" and record["recipe"] == "smoke" and record["seed"] == 1
    assert record["overrides"] == {"train.eval_every": 2, "train.lr": 0.01, "train.max_steps": 4}
    assert record["command"] == "python -m msflow_study train tiny-lr --dataset pneumoniamnist"
    assert json.loads((run / "config.json").read_text())["recipe"] == "smoke"
    before = (run / "run.json").read_bytes()
    registry.train_run("tiny-lr", "pneumoniamnist", runs, small_root, "cpu", experiments=exp, progress=False)  # reused
    assert (run / "run.json").read_bytes() == before
    (folder / "q.toml").write_text((folder / "q.toml").read_text().replace('"train.lr" = 0.01', '"train.lr" = 0.02'))
    with pytest.raises(ConfigMismatchError, match=r"train.lr: 0.01 there, 0.02 asked.*a name of its own"):
        registry.train_run("tiny-lr", "pneumoniamnist", runs, small_root, "cpu", experiments=experiments.load(folder),
                           progress=False)


def test_every_committed_checkpoint_is_loaded_by_the_book():
    import subprocess

    tracked = subprocess.run(["git", "ls-files", "*.pt"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert len(tracked) <= len(registry.BOOK_CHECKPOINTS)
    assert {str(Path(p).parent.relative_to("results")) for p in tracked} <= set(registry.BOOK_CHECKPOINTS)


def test_recipes_are_few_and_experiments_are_not_recipes(exp):
    assert len(RECIPES) <= 8
    assert {e.base for e in exp.runs.values()} - set(exp.runs) <= set(RECIPES)
    assert len(exp.runs) >= 40


def test_the_explorer_loads_an_ensembles_first_member(tmp_path):
    ens, member = tmp_path / "bloodmnist-cpu-ens", tmp_path / "bloodmnist-cpu-lam05-x6"
    ens.mkdir()
    member.mkdir()
    (ens / "eval_test.json").write_text(json.dumps({"ensemble": {"members": [{"run": member.name}, {"run": "other"}]}}))
    (member / "best.pt").write_bytes(b"weights")
    assert registry._one_network(ens) == member
    assert registry._one_network(member) == member  # a run is itself
    assert registry._one_network(tmp_path / "missing") == tmp_path / "missing"


def test_the_book_explores_one_network_of_each_headline():
    from conftest import REAL_ROOT, require_real

    from msflow_study.pipeline import EXPLORER_RUN

    for name in ("pneumoniamnist", "bloodmnist", "retinamnist"):
        require_real(name)
    runs = registry.explorer_runs(ROOT / "results", EXPLORER_RUN, str(REAL_ROOT))
    assert {f: p.name for f, p in runs.items()} == {"pneumoniamnist": "pneumoniamnist-cpu",
                                                    "bloodmnist": "bloodmnist-cpu-lam05-x6",
                                                    "retinamnist": "retinamnist-cpu"}
    assert all(p.name in registry.BOOK_CHECKPOINTS for p in runs.values())  # their weights are in git
