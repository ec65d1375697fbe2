"""The velocity network ``v([x_t ; y_t], t)``: one diffusers UNet over image and label channels.

The class enters only through the label channels ``y``; there is no class embedding. The flow's time
``t`` lives in [0, 1]; diffusers' sinusoidal embedding expects a diffusion timestep of about 0..1000,
so ``t`` is rescaled here, once, and nowhere else.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from diffusers import UNet2DModel
from torch import nn

from msflow.codes import ClassCode, make_code
from msflow.config import SPEED_FIELDS, ModelConfig, RunConfig, config_diff
from msflow.data import DatasetInfo, get_info, to_model_input
from msflow.files import torch_save

TIME_SCALE = 1000.0


class VelocityNet(nn.Module):
    """Velocity field over the channel concatenation of an image and its label map.

    Args:
        cfg: network size.
        image_channels: ``C_x`` (1 or 3, or 4 for VAE latents).
        label_channels: ``C_y`` (3 for the RGB code, 1 for gray, 4 for latents).
        resolution: input side; must be divisible by ``2 ** (levels - 1)``.
    """

    def __init__(self, cfg: ModelConfig, image_channels: int, label_channels: int, resolution: int):
        super().__init__()
        levels = len(cfg.channel_mult)
        if resolution % (2 ** (levels - 1)):
            raise ValueError(
                f"resolution {resolution} cannot be halved {levels - 1} times; use a resolution divisible "
                f"by {2 ** (levels - 1)} or fewer levels in model.channel_mult"
            )
        channels = tuple(cfg.base_channels * m for m in cfg.channel_mult)
        if any(c % cfg.norm_num_groups for c in channels):
            raise ValueError(f"model.norm_num_groups={cfg.norm_num_groups} must divide every level's channels {channels}")
        sides = [resolution // 2**i for i in range(levels)]
        if missing := sorted(set(cfg.attention_resolutions) - set(sides)):
            raise ValueError(
                f"model.attention_resolutions {missing} matches no feature-map side of a {resolution} px input "
                f"(its levels are {sides} px); name sides from that list, or () for attention in the middle block only"
            )
        down = tuple(
            "AttnDownBlock2D" if side in cfg.attention_resolutions else "DownBlock2D" for side in sides
        )
        up = tuple(b.replace("Down", "Up") for b in reversed(down))
        self.image_channels = image_channels
        self.label_channels = label_channels
        self.resolution = resolution
        self.unet = UNet2DModel(
            sample_size=resolution,
            in_channels=image_channels + label_channels,
            out_channels=image_channels + label_channels,
            block_out_channels=channels,
            down_block_types=down,
            up_block_types=up,
            layers_per_block=cfg.layers_per_block,
            attention_head_dim=cfg.attention_head_dim,
            norm_num_groups=cfg.norm_num_groups,
            dropout=cfg.dropout,
        )

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Velocity at ``z = [x ; y]``.

        Args:
            z: ``(B, C_x + C_y, H, W)``.
            t: ``(B,)`` times in [0, 1].

        Returns:
            ``(B, C_x + C_y, H, W)``: ``[v_x ; v_y]``.
        """
        return self.unet(z, t * TIME_SCALE).sample

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@dataclass(frozen=True)
class Components:
    """What a run's config builds.

    Attributes:
        model: the velocity network.
        code: the class code on the label side (RGB, gray, or RGB carried in VAE latents).
        info: the dataset's metadata.
        prepare: uint8 images ``(B, C, H, W)`` (on the model's device) to the network's image input.
        to_image: the network's image channels back to images in [-1, 1] with the dataset's channels.
        codec: the frozen VAE of a latent run, else ``None``.
    """

    model: VelocityNet
    code: ClassCode
    info: DatasetInfo
    prepare: Callable[[torch.Tensor], torch.Tensor]
    to_image: Callable[[torch.Tensor], torch.Tensor]
    codec: Any = None


def build(cfg: RunConfig, device: torch.device | str = "cpu") -> Components:
    """Build a freshly initialised network (seeded by ``cfg.seed``) and the class code for a run.

    For a latent run this loads the frozen VAE onto ``device`` (see :mod:`msflow.latent`).
    """
    info = get_info(cfg.data.dataset)
    res = cfg.data.resolution
    if cfg.latent.enabled:
        from msflow.latent import LatentCode, LatentCodec, load_vae

        codec = LatentCodec(load_vae(cfg.latent.vae, device), cfg.latent, info.channels)
        if codec.resolution != res:
            raise ValueError(f"latent.image_size {cfg.latent.image_size} gives {codec.resolution} x {codec.resolution} latents; "
                             f"set data.resolution={codec.resolution}")
        code: ClassCode = LatentCode(codec, info.num_classes, cfg.flow.beta)
        image_channels, prepare, to_image = codec.latent_channels, codec.encode, codec.to_image
    else:
        codec = None
        code = make_code(cfg.flow.code, info.num_classes, cfg.flow.beta)
        image_channels, prepare, to_image = info.channels, functools.partial(to_model_input, resolution=res), _identity
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = VelocityNet(cfg.model, image_channels, code.channels, res)
    return Components(model, code, info, prepare, to_image, codec)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


# Checkpoints: the weights with the config that built them, so that a checkpoint rebuilds its own network.

CHECKPOINT_FORMAT = "msflow-weights/1"


class ConfigMismatchError(ValueError):
    """A checkpoint or run folder was made with another configuration than the one asked for."""


def save_weights(
    path: str | os.PathLike,
    model: torch.nn.Module,
    cfg: RunConfig,
    meta: dict[str, Any] | None = None,
    half: bool = False,
) -> None:
    """Save a model's weights with its config and provenance.

    Args:
        half: store fp16 weights (half the size; for checkpoints that are committed and published).
    """
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone() for k, v in model.state_dict().items()}
    torch_save({"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "meta": meta or {}, "weights": state}, path)


@dataclass(frozen=True)
class LoadedModel:
    """A model rebuilt from a checkpoint.

    Attributes:
        components: model (in eval mode, on the requested device), class code and dataset info.
        config: the configuration it was trained with.
        meta: what was saved beside the weights (step, validation metrics, provenance).
    """

    components: Components
    config: RunConfig
    meta: dict[str, Any]


def load_weights(path: str | os.PathLike, device: torch.device | str = "cpu", expect: RunConfig | None = None) -> LoadedModel:
    """Rebuild a model from :func:`save_weights` output.

    Args:
        expect: if given, the checkpoint's config must match it in data, model, flow and latent (the fields
            that decide what the weights mean); otherwise :class:`ConfigMismatchError` lists the
            differences.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train the run first (msflow train) or check the path")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise ValueError(f"{path} is not a readable msflow checkpoint ({err}); delete it and train or download it again") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an msflow weights file (format {ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt)!r}, expected {CHECKPOINT_FORMAT})")
    cfg = RunConfig.from_dict(ckpt["config"])
    if expect is not None:
        check_compatible(cfg, expect, what=str(path))
    comps = build(cfg, device)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["weights"].items()}
    comps.model.load_state_dict(weights)
    comps.model.to(device).eval()
    return LoadedModel(comps, cfg, ckpt.get("meta", {}))


def check_compatible(found: RunConfig, expected: RunConfig, what: str, sections: tuple[str, ...] = ("data", "model", "flow", "latent")) -> None:
    """Raise :class:`ConfigMismatchError` if the configs differ in ``sections`` (beyond the :data:`~msflow.config.SPEED_FIELDS`)."""
    diff = {k: v for k, v in config_diff(found, expected).items() if k.split(".")[0] in sections and k not in SPEED_FIELDS}
    if diff:
        lines = "; ".join(f"{k}: {a!r} there, {b!r} asked" for k, (a, b) in diff.items())
        raise ConfigMismatchError(
            f"{what} was made with another configuration ({lines}). Use a new output folder, "
            f"pass the matching recipe/overrides, or start afresh with --force."
        )
