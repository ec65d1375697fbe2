"""Run configuration: frozen dataclasses whose defaults are the paper's recipe, and a few named recipes.

Every field default is the reference setting of method.md section 7; every deviation is a named field
whose default reproduces the reference. A *recipe* is a named set of overrides on top of those
defaults, written as ``"section.field": value``. The resolved :class:`RunConfig` is stored in every
checkpoint and results file, so a run can always be rebuilt and compared.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

CODE_NAMES = ("rgb", "rgb-spread", "gray")
"""The class codes of ``msflow.codes.CODES`` (a test keeps the two lists equal)."""
SOLVER_NAMES = ("euler", "midpoint", "heun", "rk4")
"""The ODE solvers of ``msflow.sampler.SOLVERS``."""
VIEW_NAMES = ("none", "flips", "dihedral")
"""The readout views of ``msflow.sampler.VIEWS``."""
SPEED_FIELDS = ("train.compile", "train.channels_last")
"""The fields that change how fast a run trains but not what it computes, up to float rounding; a run resumes with
other values of them."""


def _check(section: Any, name: str, ok: bool, allowed: str) -> None:
    """Raise a ValueError naming the field, its value and what is allowed, unless ``ok``."""
    if not ok:
        raise ValueError(f"{_dotted(type(section), name)} = {getattr(section, name)!r} is not allowed: it must be {allowed}")


def _dotted(cls: type, name: str) -> str:
    """``TrainConfig, "lr"`` -> ``"train.lr"``, as overrides name a field."""
    prefix = {"DataConfig": "data", "ModelConfig": "model", "FlowConfig": "flow", "TrainConfig": "train",
              "EvalConfig": "eval", "LatentConfig": "latent"}.get(cls.__name__)
    return f"{prefix}.{name}" if prefix else name


@dataclass(frozen=True)
class DataConfig:
    """Which data the run sees and at what resolution.

    Attributes:
        dataset: MedMNIST flag, e.g. ``"pneumoniamnist"`` (see :mod:`msflow.data`).
        size: MedMNIST file size (28, 64, 128 or 224).
        resolution: side of the square the network sees; the reference upsamples 28 to 32.
        augment: random horizontal and vertical flips; ``None`` follows the reference (flips for
            Blood, Derma and Retina, none for Pneumonia).
    """

    dataset: str = "bloodmnist"
    size: int = 28
    resolution: int = 32
    augment: bool | None = None

    def __post_init__(self) -> None:
        _check(self, "size", self.size in (28, 64, 128, 224), "one of 28, 64, 128, 224 (the MedMNIST file sizes)")
        _check(self, "resolution", self.resolution > 0, "a positive side in pixels")


@dataclass(frozen=True)
class ModelConfig:
    """The velocity network (a diffusers ``UNet2DModel``, ADM style).

    Attributes:
        base_channels: channels of the first level (64 for the reference "28" models).
        channel_mult: per-level multipliers of ``base_channels``.
        layers_per_block: residual blocks per level on the way down.
        attention_resolutions: feature-map sides that get self-attention (besides the middle).
        attention_head_dim: channels per attention head.
        norm_num_groups: GroupNorm groups; must divide every level's channel count.
        dropout: dropout in the residual blocks.
    """

    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    layers_per_block: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    attention_head_dim: int = 64
    norm_num_groups: int = 32
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check(self, "base_channels", self.base_channels > 0, "a positive number of channels")
        _check(self, "channel_mult", len(self.channel_mult) > 0 and min(self.channel_mult) > 0,
               "one or more positive multipliers, e.g. 1,2,2,2")
        _check(self, "layers_per_block", self.layers_per_block > 0, "at least 1")
        _check(self, "attention_resolutions", all(r > 0 for r in self.attention_resolutions), "positive sides, or none")
        _check(self, "attention_head_dim", self.attention_head_dim > 0, "a positive number of channels")
        _check(self, "norm_num_groups", self.norm_num_groups > 0, "at least 1")
        _check(self, "dropout", 0 <= self.dropout < 1, "in [0, 1)")


@dataclass(frozen=True)
class FlowConfig:
    """The symmetrical flow and its loss (method.md sections 2 and 3).

    Attributes:
        code: class code on the label side, ``"rgb"`` (MedSymmFlow), ``"rgb-spread"`` (its colours spread as far
            apart as the palette allows) or ``"gray"`` (SymmFlow).
        beta: dequantisation strength of the class code.
        sigma_min: minimum noise scale of both interpolants.
        lam: weight of the image loss; the label loss gets ``1 - lam``.
        t_one_frac: fraction of training times set to exactly ``t = 1``, where one-step
            classification reads the network. 0 is the reference (``t ~ U(0, 1)``).
    """

    code: str = "rgb"
    beta: float = 4.0
    sigma_min: float = 1e-4
    lam: float = 0.7
    t_one_frac: float = 0.0

    def __post_init__(self) -> None:
        _check(self, "code", self.code in CODE_NAMES, f"one of {', '.join(CODE_NAMES)}")
        _check(self, "beta", self.beta > 0, "positive")
        _check(self, "sigma_min", 0 <= self.sigma_min < 1, "in [0, 1)")
        _check(self, "lam", 0 <= self.lam <= 1, "in [0, 1] (the image loss's weight; the label loss gets 1 - lam)")
        _check(self, "t_one_frac", 0 <= self.t_one_frac <= 1, "in [0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation.

    Attributes:
        batch_size: images per step.
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        epochs: training length in epochs (``ceil(n_train / batch_size)`` steps each).
        max_steps: if positive, the training length in steps, overriding ``epochs``.
        warmup_frac: fraction of the steps spent in the cosine warm-up.
        ema_decay: per-step EMA decay of the weights that are evaluated and saved.
        ema_warmup: ramp the EMA decay as ``min(decay, (1 + n) / (10 + n))`` so that early
            weights do not linger; off in the reference.
        grad_clip: clip the global gradient norm to this value; 0 disables (reference).
        bf16: bfloat16 autocast on CUDA.
        cpu_bf16: bfloat16 autocast in training on the CPU too (off in the reference, and in every CPU run
            recorded before it existed; ``bf16`` alone leaves CPU training in fp32).
        compile: ``torch.compile`` the network for training. Off by default: on two CPU cores, trained by two
            processes (the fastest way there), none of the ``paper``, ``gpu`` and ``cpu`` networks trained faster
            compiled (``benchmarks/throughput.py`` measures it on your device; ``benchmarks/records/`` holds what it
            measured).
        channels_last: keep the network's weights, and so its activations, in channels-last memory order. Off by
            default: on two CPU cores it trained every one of those networks more slowly (measured as ``compile``).
        eval_every: steps between validation evaluations (0: at the end only).
        val_samples: validation images per evaluation (0: the whole split).
        select: validation metric that picks the saved "best" weights: ``"acc"`` or ``"auc"``.
        checkpoint_every: steps between resumable checkpoints.
    """

    batch_size: int = 64
    lr: float = 4e-4
    weight_decay: float = 0.0
    epochs: float = 1000.0
    max_steps: int = 0
    warmup_frac: float = 0.1
    ema_decay: float = 0.7
    ema_warmup: bool = False
    grad_clip: float = 0.0
    bf16: bool = True
    cpu_bf16: bool = False
    compile: bool = False
    channels_last: bool = False
    eval_every: int = 0
    val_samples: int = 0
    select: str = "acc"
    checkpoint_every: int = 1000

    def __post_init__(self) -> None:
        _check(self, "batch_size", self.batch_size > 0, "at least 1")
        _check(self, "lr", self.lr > 0, "positive")
        _check(self, "weight_decay", self.weight_decay >= 0, "0 or more")
        _check(self, "epochs", self.epochs > 0, "positive")
        _check(self, "max_steps", self.max_steps >= 0, "0 (train for epochs) or a positive number of steps")
        _check(self, "warmup_frac", 0 <= self.warmup_frac < 1, "in [0, 1)")
        _check(self, "ema_decay", 0 <= self.ema_decay < 1, "in [0, 1)")
        _check(self, "grad_clip", self.grad_clip >= 0, "0 (off) or a positive norm")
        _check(self, "eval_every", self.eval_every >= 0, "0 (at the end only) or a positive number of steps")
        _check(self, "val_samples", self.val_samples >= 0, "0 (the whole split) or a positive number of images")
        _check(self, "select", self.select in ("acc", "auc"), "acc or auc")
        _check(self, "checkpoint_every", self.checkpoint_every > 0, "a positive number of steps")

    def total_steps(self, n_train: int) -> int:
        """Number of optimisation steps for a training split of ``n_train`` images."""
        if self.max_steps > 0:
            return self.max_steps
        return max(1, math.ceil(self.epochs * math.ceil(n_train / self.batch_size)))


@dataclass(frozen=True)
class EvalConfig:
    """How the model is read out.

    Attributes:
        repeats: stochastic evaluations whose mean and std are reported (the paper uses 5).
        steps: ODE steps for classification (the reference uses 1).
        solver: ODE solver for classification (see :data:`msflow.sampler.SOLVERS`).
        gen_steps: ODE steps for generation (the reference uses 25).
        gen_solver: ODE solver for generation.
        batch_size: images per forward pass at evaluation.
        views: transformed copies of each image whose predicted maps are averaged (see
            :data:`msflow.sampler.VIEWS`); ``"none"`` is the reference's single readout.
    """

    repeats: int = 5
    steps: int = 1
    solver: str = "euler"
    gen_steps: int = 25
    gen_solver: str = "euler"
    batch_size: int = 500
    views: str = "none"

    def __post_init__(self) -> None:
        _check(self, "repeats", self.repeats > 0, "at least 1")
        _check(self, "steps", self.steps > 0, "at least 1")
        _check(self, "solver", self.solver in SOLVER_NAMES, f"one of {', '.join(SOLVER_NAMES)}")
        _check(self, "gen_steps", self.gen_steps > 0, "at least 1")
        _check(self, "gen_solver", self.gen_solver in SOLVER_NAMES, f"one of {', '.join(SOLVER_NAMES)}")
        _check(self, "batch_size", self.batch_size > 0, "at least 1")
        _check(self, "views", self.views in VIEW_NAMES, f"one of {', '.join(VIEW_NAMES)}")


@dataclass(frozen=True)
class LatentConfig:
    """The latent variant (LatMSF, method.md section 6); off for the pixel models.

    Attributes:
        enabled: train and read out the flow in the latent space of a frozen VAE.
        vae: hub id or local folder of a diffusers AutoencoderKL; ``"tiny"`` and ``"sd-random"`` are
            weight-free stand-ins for tests and cost measurements (see :mod:`msflow.latent`).
        scaling: latent scaling factor (0.18215 for the Stable Diffusion VAE).
        image_size: side the images are resized to before encoding (224 -> 256 in the reference).
    """

    enabled: bool = False
    vae: str = "stabilityai/sd-vae-ft-mse"
    scaling: float = 0.18215
    image_size: int = 256

    def __post_init__(self) -> None:
        _check(self, "scaling", self.scaling > 0, "positive")
        _check(self, "image_size", self.image_size > 0, "a positive side in pixels")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; stored with every checkpoint and results file.

    Attributes:
        recipe: the recipe the run started from (a key of ``RECIPES``); runs recorded before the study's experiments
            became data files carry the name of their experiment here.
        seed: seed of every random draw in the run.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    recipe: str = "paper"
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self, "seed", self.seed >= 0, "a non-negative integer")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable nested dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error.

        Records written before recipes had their name call the field ``profile``: it is read as ``recipe``.
        """
        if "profile" in d and "recipe" not in d:
            d = {("recipe" if k == "profile" else k): v for k, v in d.items()}
        return _build(cls, d, "")


# Recipes: named overrides of the paper's defaults, a handful a user would pick. An experiment of the study is not a
# recipe: it is an entry of a data file (a recipe or another run, plus overrides and a seed) outside this library.

# Seconds on a laptop CPU: a tiny network on 16 x 16 inputs. For tests, CI and notebook smoke runs.
_SMOKE: dict[str, Any] = {
    "data.resolution": 16,
    "model.base_channels": 8,
    "model.channel_mult": (1, 2),
    "model.layers_per_block": 1,
    "model.attention_resolutions": (),
    "model.attention_head_dim": 8,
    "model.norm_num_groups": 4,
    "train.batch_size": 16,
    "train.max_steps": 30,
    "train.lr": 2e-3,
    "train.ema_decay": 0.9,
    "train.eval_every": 15,
    "train.checkpoint_every": 10,
    "eval.repeats": 2,
    "eval.gen_steps": 4,
    "eval.batch_size": 64,
}

# The deviations from the reference that pay off at short horizons: a larger peak learning rate with a short warm-up,
# EMA with warm-up, clipped gradients and half of the training times at t = 1, where one-step classification reads.
_BUDGET: dict[str, Any] = {
    "flow.t_one_frac": 0.5,
    "train.lr": 1e-3,
    "train.warmup_frac": 0.05,
    "train.ema_warmup": True,
    "train.grad_clip": 1.0,
}

# LatMSF as the reference runs it: 224 px through the SD VAE, latents 4 x 32 x 32, 128 base channels.
_LATENT: dict[str, Any] = {
    "latent.enabled": True,
    "data.size": 224,
    "data.resolution": 32,
    "model.base_channels": 128,
}

RECIPES: dict[str, dict[str, Any]] = {
    # The reference recipe of method.md section 7, at 32 x 32 (all defaults): 1000 epochs, hours on a GPU.
    "paper": {},
    # A real run on two CPU cores in about a quarter of an hour: a 0.9 M-parameter UNet (16-32-64 channels) at the
    # native 28 px, 1500 steps of batch 64, with the budget deviations.
    "cpu": {
        "data.resolution": 28,
        "model.base_channels": 16,
        "model.channel_mult": (1, 2, 4),
        "model.layers_per_block": 2,
        "model.attention_resolutions": (),
        "model.attention_head_dim": 32,
        "model.norm_num_groups": 16,
        **_BUDGET,
        "train.ema_decay": 0.995,
        "train.max_steps": 1500,
        "train.eval_every": 250,
        "train.checkpoint_every": 250,
    },
    # One GPU: the reference network at half width (32-64 channels, 2.2 M parameters; 4.5 MB in fp16) at 32 px in
    # bf16, batch 256 for 6000 steps, with the budget deviations.
    "gpu": {
        "model.base_channels": 32,
        **_BUDGET,
        "train.batch_size": 256,
        "train.max_steps": 6000,
        "train.ema_decay": 0.999,
        "train.eval_every": 500,
        "train.checkpoint_every": 1000,
        "eval.batch_size": 2000,
    },
    # Seconds on a CPU: for tests, CI and the notebooks' smoke mode.
    "smoke": _SMOKE,
    # LatMSF with the reference recipe: the only command the authors published.
    "latent-paper": _LATENT,
    # LatMSF on one GPU's budget.
    "latent-gpu": {**_LATENT, **_BUDGET, "train.batch_size": 256, "train.max_steps": 6000, "train.ema_decay": 0.999,
                   "train.eval_every": 500, "train.checkpoint_every": 1000, "eval.batch_size": 500},
    # Seconds on a CPU: the latent path end to end with a tiny random VAE on 64 px (synthetic) data.
    "latent-smoke": {**_SMOKE, "latent.enabled": True, "latent.vae": "tiny", "latent.image_size": 32, "data.size": 64},
}


def make_config(
    dataset: str,
    recipe: str = "paper",
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> RunConfig:
    """Resolve a run's configuration from a dataset, a recipe and extra overrides.

    Args:
        dataset: MedMNIST flag or alias (validated by :func:`msflow.data.get_info`).
        recipe: a key of ``RECIPES``.
        overrides: ``{"section.field": value}`` applied after the recipe; values may be strings
            (``"1e-3"``, ``"true"``, ``"16,32"``) as they come from a command line.
        seed: seed of every random draw in the run.

    Returns:
        The frozen, fully resolved configuration.
    """
    from msflow.data import get_info  # deferred: data imports medmnist

    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    cfg = RunConfig(data=DataConfig(dataset=get_info(dataset).flag), recipe=recipe, seed=seed)
    return apply_overrides(cfg, {**RECIPES[recipe], **(overrides or {})})


def apply_overrides(cfg: RunConfig, overrides: Mapping[str, Any]) -> RunConfig:
    """Return ``cfg`` with ``{"section.field": value}`` overrides applied (values coerced to type)."""
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if not name:
            top[section] = _coerce(RunConfig, section, value)
            continue
        if section not in _SECTIONS:
            raise ValueError(f"unknown config section {section!r} in {key!r}; sections: {sorted(_SECTIONS)}")
        sections.setdefault(section, {})[name] = _coerce(_SECTIONS[section], name, value)
    replaced = {s: dataclasses.replace(getattr(cfg, s), **kw) for s, kw in sections.items()}
    return dataclasses.replace(cfg, **replaced, **top)


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """Parse command-line ``section.field=value`` items into a dict."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not of the form section.field=value")
        out[key.strip()] = value.strip()
    return out


def config_diff(a: RunConfig, b: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Fields that differ between two configs, as ``{"section.field": (a_value, b_value)}``."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "flow": FlowConfig, "train": TrainConfig, "eval": EvalConfig,
             "latent": LatentConfig}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def _field_type(cls: type, name: str) -> Any:
    hints = typing.get_type_hints(cls)
    if name not in hints:
        names = [f.name for f in dataclasses.fields(cls)]
        raise ValueError(f"{cls.__name__} has no field {name!r} (an override names it {_dotted(cls, name)}); fields: {names}")
    return hints[name]


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Convert ``value`` (possibly a command-line string) to the declared type of ``cls.name``."""
    tp = _field_type(cls, name)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        tp = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        return tuple(int(v) for v in value)
    if tp is bool:
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"{_dotted(cls, name)} expects true or false, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    if tp is int:
        number = _number(cls, name, value, "an integer")
        if not float(number).is_integer():
            raise ValueError(f"{_dotted(cls, name)} expects an integer, got {value!r}")
        return int(number)
    if tp is float:
        return float(_number(cls, name, value, "a number"))
    if tp is str:
        return str(value)
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return _build(tp, value, f"{name}.")
    return value


def _number(cls: type, name: str, value: Any, what: str) -> float | int:
    """``value`` as a number: a command-line string is parsed, a boolean is refused (True is not 1 step)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{_dotted(cls, name)} expects {what}, got {value!r}")
    if isinstance(value, str):
        try:
            return float(value) if any(c in value.lower() for c in ".en") else int(value)
        except ValueError:
            raise ValueError(f"{_dotted(cls, name)} expects {what}, got {value!r}") from None
    return value


def _build(cls: type, d: Mapping[str, Any], prefix: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown config fields {sorted(prefix + u for u in unknown)}; this msflow knows {sorted(known)}")
    return cls(**{k: _coerce(cls, k, v) for k, v in d.items()})
