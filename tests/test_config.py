import dataclasses
import json
from pathlib import Path

import pytest

from msflow.config import PROFILES, RunConfig, apply_overrides, config_diff, make_config, parse_overrides


def test_defaults_are_the_reference_recipe():
    cfg = RunConfig()
    assert (cfg.model.base_channels, cfg.model.channel_mult, cfg.model.layers_per_block) == (64, (1, 2, 2, 2), 2)
    assert cfg.model.attention_resolutions == (16,) and cfg.model.dropout == 0
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.epochs, cfg.train.warmup_frac) == (4e-4, 64, 1000, 0.1)
    assert (cfg.train.ema_decay, cfg.train.weight_decay) == (0.7, 0.0)
    assert (cfg.flow.lam, cfg.flow.beta, cfg.flow.sigma_min, cfg.flow.t_one_frac, cfg.flow.code) == (0.7, 4.0, 1e-4, 0.0, "rgb")
    assert (cfg.data.resolution, cfg.eval.steps, cfg.eval.gen_steps, cfg.eval.repeats) == (32, 1, 25, 5)
    assert PROFILES["paper"] == {}


@pytest.mark.parametrize("n, steps", [(4708, 74_000), (11959, 187_000), (7007, 110_000), (1080, 17_000)])
def test_paper_iterations(n, steps):
    # method.md: 1000 epochs x batch 64 is about 74 k / 187 k / 110 k / 17 k iterations
    assert RunConfig().train.total_steps(n) == steps


def test_every_profile_resolves_for_every_dataset():
    for profile in PROFILES:
        for ds in ("pneumonia", "blood", "derma", "retina"):
            cfg = make_config(ds, profile)
            assert cfg.profile == profile and cfg.data.dataset.endswith("mnist")


def test_overrides_from_strings_and_round_trip():
    cfg = make_config("blood", "cpu", parse_overrides(["train.lr=2e-3", "model.channel_mult=1,2", "train.ema_warmup=false", "data.augment=none"]))
    assert cfg.train.lr == 2e-3 and cfg.model.channel_mult == (1, 2)
    assert cfg.train.ema_warmup is False and cfg.data.augment is None
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert config_diff(cfg, dataclasses.replace(cfg, seed=3)) == {"seed": (0, 3)}


def test_a_recorded_config_without_a_later_field_reads_as_before():
    # results/*/config.json written before train.cpu_bf16 existed: their CPU training ran in fp32
    recorded = json.loads((Path(__file__).parents[1] / "results" / "bloodmnist-cpu-lam05-x6" / "config.json").read_text())
    assert "cpu_bf16" not in recorded["train"]
    cfg = RunConfig.from_dict(recorded)
    assert cfg.train.cpu_bf16 is False
    assert config_diff(cfg, make_config("bloodmnist", "cpu-lam05-x6")) == {}


def test_bad_overrides_are_explained():
    with pytest.raises(ValueError, match="unknown profile"):
        make_config("blood", "huge")
    with pytest.raises(ValueError, match="has no field 'lr_max'"):
        apply_overrides(RunConfig(), {"train.lr_max": 1})
    with pytest.raises(ValueError, match="unknown config section"):
        apply_overrides(RunConfig(), {"optim.lr": 1})
    with pytest.raises(ValueError, match="expects a boolean"):
        apply_overrides(RunConfig(), {"train.bf16": "maybe"})
    with pytest.raises(ValueError, match="section.field=value"):
        parse_overrides(["train.lr"])
    with pytest.raises(ValueError, match="unknown config fields"):
        RunConfig.from_dict({"data": {"dataset": "bloodmnist", "colour": 1}})


@pytest.mark.parametrize("base, profile, lever", [
    ("cpu-lam05", "cpu-lam05-t075", {"flow.t_one_frac": (0.5, 0.75)}),
    ("cpu-lam05", "cpu-lam05-lr2", {"train.lr": (1e-3, 2e-3)}),
    ("cpu-lam05", "cpu-lam05-deep", {"model.layers_per_block": (2, 3)}),
    ("cpu-lam05", "cpu-lam05-att14", {"model.attention_resolutions": ([], [14])}),  # config_diff compares the JSON form
    ("cpu-lam05-x6", "cpu-lam05-att14-x6", {"model.attention_resolutions": ([], [14])}),
])
def test_single_lever_profiles_differ_from_their_base_only_by_their_lever(base, profile, lever):
    # the book compares each with its base at equal steps and seed: nothing else may differ
    diff = config_diff(make_config("bloodmnist", base), make_config("bloodmnist", profile))
    assert diff == {**lever, "profile": (base, profile)}
