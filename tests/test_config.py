import dataclasses
import json
from pathlib import Path

import pytest

from msflow.config import RECIPES, RunConfig, apply_overrides, config_diff, make_config, parse_overrides


def test_defaults_are_the_reference_recipe():
    cfg = RunConfig()
    assert (cfg.model.base_channels, cfg.model.channel_mult, cfg.model.layers_per_block) == (64, (1, 2, 2, 2), 2)
    assert cfg.model.attention_resolutions == (16,) and cfg.model.dropout == 0
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.epochs, cfg.train.warmup_frac) == (4e-4, 64, 1000, 0.1)
    assert (cfg.train.ema_decay, cfg.train.weight_decay) == (0.7, 0.0)
    assert (cfg.flow.lam, cfg.flow.beta, cfg.flow.sigma_min, cfg.flow.t_one_frac, cfg.flow.code) == (0.7, 4.0, 1e-4, 0.0, "rgb")
    assert (cfg.data.resolution, cfg.eval.steps, cfg.eval.gen_steps, cfg.eval.repeats) == (32, 1, 25, 5)
    assert RECIPES["paper"] == {}


@pytest.mark.parametrize("n, steps", [(4708, 74_000), (11959, 187_000), (7007, 110_000), (1080, 17_000)])
def test_paper_iterations(n, steps):
    # method.md: 1000 epochs x batch 64 is about 74 k / 187 k / 110 k / 17 k iterations
    assert RunConfig().train.total_steps(n) == steps


def test_every_recipe_resolves_for_every_dataset():
    assert len(RECIPES) <= 8  # a handful a user would pick; the study's experiments are data files outside the library
    for recipe in RECIPES:
        for ds in ("pneumonia", "blood", "derma", "retina"):
            cfg = make_config(ds, recipe)
            assert cfg.recipe == recipe and cfg.data.dataset.endswith("mnist")


def test_overrides_from_strings_and_round_trip():
    cfg = make_config("blood", "cpu", parse_overrides(["train.lr=2e-3", "model.channel_mult=1,2", "train.ema_warmup=false", "data.augment=none"]))
    assert cfg.train.lr == 2e-3 and cfg.model.channel_mult == (1, 2)
    assert cfg.train.ema_warmup is False and cfg.data.augment is None
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert config_diff(cfg, dataclasses.replace(cfg, seed=3)) == {"seed": (0, 3)}


def test_a_recorded_config_without_a_later_field_reads_as_before():
    # results/*/config.json written before train.cpu_bf16 existed (their CPU training ran in fp32), and before the
    # recipe had its name: the field was called profile, and is read as the recipe
    recorded = json.loads((Path(__file__).parents[1] / "results" / "bloodmnist-cpu-lam05-x6" / "config.json").read_text())
    assert "cpu_bf16" not in recorded["train"] and recorded["profile"] == "cpu-lam05-x6"
    cfg = RunConfig.from_dict(recorded)
    assert cfg.train.cpu_bf16 is False and cfg.recipe == "cpu-lam05-x6"
    assert config_diff(cfg, make_config("bloodmnist", "cpu", {"flow.lam": 0.5, "train.max_steps": 9000,
                                                              "train.checkpoint_every": 500})) == {"recipe": ("cpu-lam05-x6", "cpu")}
    assert RunConfig.from_dict(cfg.to_dict()) == cfg and "profile" not in cfg.to_dict()


def test_bad_overrides_are_explained():
    with pytest.raises(ValueError, match="unknown recipe 'huge'; choose one of"):
        make_config("blood", "huge")
    with pytest.raises(ValueError, match="has no field 'lr_max'"):
        apply_overrides(RunConfig(), {"train.lr_max": 1})
    with pytest.raises(ValueError, match="unknown config section"):
        apply_overrides(RunConfig(), {"optim.lr": 1})
    with pytest.raises(ValueError, match="train.bf16 expects true or false, got .maybe."):
        apply_overrides(RunConfig(), {"train.bf16": "maybe"})
    with pytest.raises(ValueError, match="section.field=value"):
        parse_overrides(["train.lr"])
    with pytest.raises(ValueError, match="unknown config fields"):
        RunConfig.from_dict({"data": {"dataset": "bloodmnist", "colour": 1}})


@pytest.mark.parametrize("override, message", [
    ("train.max_steps=1.5", r"train.max_steps expects an integer, got '1.5'"),
    ("train.max_steps=true", r"train.max_steps expects an integer, got 'true'"),
    ("train.batch_size=-5", r"train.batch_size = -5 is not allowed: it must be at least 1"),
    ("flow.lam=2", r"flow.lam = 2.0 is not allowed: it must be in \[0, 1\]"),
    ("eval.solver=foo", r"eval.solver = 'foo' is not allowed: it must be one of euler, midpoint, heun, rk4"),
    ("eval.views=rot", r"eval.views = 'rot' is not allowed: it must be one of none, flips, dihedral"),
    ("flow.code=hsv", r"flow.code = 'hsv' is not allowed: it must be one of rgb, rgb-spread, gray"),
    ("train.lr=fast", r"train.lr expects a number, got 'fast'"),
    ("train.select=loss", r"train.select = 'loss' is not allowed: it must be acc or auc"),
    ("data.size=32", r"data.size = 32 is not allowed: it must be one of 28, 64, 128, 224"),
    ("seed=-1", r"seed = -1 is not allowed"),
])
def test_a_config_that_cannot_be_right_is_refused_when_it_is_made(override, message):
    # the error names the field, the value and what is allowed, before anything is trained or written
    with pytest.raises(ValueError, match=message):
        make_config("bloodmnist", "cpu", parse_overrides([override]))


def test_strings_from_a_command_line_parse_exactly():
    cfg = make_config("bloodmnist", "cpu", parse_overrides(["train.max_steps=1e3", "train.lr=2e-3", "train.batch_size=32"]))
    assert (cfg.train.max_steps, cfg.train.lr, cfg.train.batch_size) == (1000, 2e-3, 32)


def test_the_names_configs_allow_are_the_library_s():
    from msflow.codes import CODES
    from msflow.config import CODE_NAMES, SOLVER_NAMES, VIEW_NAMES
    from msflow.sampler import SOLVERS, VIEWS

    assert set(CODE_NAMES) == set(CODES) and set(SOLVER_NAMES) == set(SOLVERS) and set(VIEW_NAMES) == set(VIEWS)
