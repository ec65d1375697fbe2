"""The velocity network ``v([x_t ; y_t], t)``: one diffusers UNet over image and label channels.

The class enters only through the label channels ``y``; there is no class embedding. The flow's time
``t`` lives in [0, 1]; diffusers' sinusoidal embedding expects a diffusion timestep of about 0..1000,
so ``t`` is rescaled here, once, and nowhere else.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch
from diffusers import UNet2DModel
from torch import nn

from msflow.config import ModelConfig, RunConfig
from msflow.data import DatasetInfo, get_info, to_model_input
from msflow.masks import ClassCode, make_code

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
