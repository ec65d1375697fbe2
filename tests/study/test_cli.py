"""The study's command line: training an experiment entry, choosing readout views, errors that name the problem."""

import json

import pytest

from msflow_study import cli


def test_choose_views_reads_validation_then_the_test_split(run, small_root, capsys):
    common = ["--data-root", str(small_root), "--device", "cpu"]
    assert cli.main(["choose-views", "--run", str(run), *common]) == 0
    readout = json.loads((run / "readout.json").read_text())
    assert set(readout["options"]) == {"none", "flips"} and readout["chosen"] in readout["options"]
    assert f"chosen on validation: {readout['chosen']}" in capsys.readouterr().out
    assert cli.main(["choose-views", "--run", str(run), "--options", "flips,dihedral", *common]) == 2
    assert "must start with the reference readout 'none'" in capsys.readouterr().err


def test_unknown_runs_and_ensembles_are_named(tmp_path, capsys):
    assert cli.main(["train", "cpu-lam09", "--dataset", "bloodmnist", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "neither a run of the experiment files nor a recipe" in err and "cpu-lam05-x6" in err
    assert cli.main(["train", "cpu-lam05-x6", "--dataset", "retinamnist", "--runs-dir", str(tmp_path)]) == 2
    assert "is run on bloodmnist, not on retinamnist" in capsys.readouterr().err
    assert cli.main(["ensemble", "cpu-ensemble", "--dataset", "bloodmnist", "--runs-dir", str(tmp_path)]) == 2
    assert "no ensemble 'cpu-ensemble'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written for a request that could not be resolved


def test_restore_baseline_names_a_folder_without_a_record(tmp_path, capsys):
    assert cli.main(["restore-baseline", str(tmp_path / "bloodmnist-resnet18-2e-seed0")]) == 2
    assert "holds no baseline record (baseline.json) to restore from" in capsys.readouterr().err


def test_list_names_every_run_with_its_base(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "cpu-lam05-x6" in out and "base cpu-lam05" in out and "ensemble of" in out


@pytest.mark.parametrize("command", ["run", "gpu-session"])
def test_entry_points_have_their_own_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0 and f"python -m msflow_study {command}" in capsys.readouterr().out
