"""Latent MedSymmFlow (LatMSF): the same flow in the latent space of a frozen VAE (method.md section 6).

Images (224 px, resized to 256) and the RGB class-code images are encoded by the Stable Diffusion VAE
(``stabilityai/sd-vae-ft-mse``: 4 channels, factor 8, scaling 0.18215), so the network sees 4 + 4
channels at 32 x 32. Classification decodes the predicted label latent back to RGB and applies the
distance decoding of :class:`msflow.codes.RGBCode`; generation decodes the image latent.

The VAE dominates the cost of a step, so the image posteriors (mean, log-variance) of a split are
computed once and cached, and a latent is sampled from them at each step; the K class-code latents are
computed once. Flips are applied to the latents (the VAE is convolutional, so a flipped latent stands in
for the latent of a flipped image).

``latent.vae`` names the VAE: a hub id or a local folder (``from_pretrained``), or one of two weight-free
stand-ins that need no download: ``"tiny"`` (a small random AutoencoderKL, for tests and smoke runs)
and ``"sd-random"`` (the Stable Diffusion VAE's architecture with random weights, for cost measurements).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from msflow.config import LatentConfig
from msflow.data import Split
from msflow.codes import ClassCode, RGBCode
from msflow.files import torch_save

SD_VAE = "stabilityai/sd-vae-ft-mse"
STAND_INS = ("tiny", "sd-random")


class VAEUnavailableError(RuntimeError):
    """The VAE weights could not be loaded."""


def load_vae(name: str, device: torch.device | str = "cpu") -> AutoencoderKL:
    """The frozen VAE named by ``latent.vae`` (see the module docstring), in eval mode on ``device``."""
    if name == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                                up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4,
                                latent_channels=4, sample_size=64)
    elif name == "sd-random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=256)
    else:
        try:
            vae = AutoencoderKL.from_pretrained(name)
        except (OSError, ValueError, EnvironmentError) as err:
            raise VAEUnavailableError(
                f"the VAE {name!r} could not be loaded ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
                f"With internet it is downloaded from the Hugging Face hub. Offline, download it on a machine that has "
                f"internet (huggingface-cli download {SD_VAE} --local-dir DIR), copy DIR here and pass latent.vae=DIR "
                f"(or set HF_HOME to a cache that holds it)."
            ) from err
    return vae.to(device).eval().requires_grad_(False)


def vae_factor(vae: AutoencoderKL) -> int:
    """Spatial downsampling factor of the VAE (8 for Stable Diffusion's)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


class LatentCodec:
    """Images <-> scaled latents through a frozen VAE.

    Args:
        vae: the autoencoder.
        cfg: scaling factor and the side images are resized to before encoding.
        image_channels: the dataset's channels; grayscale images are repeated to RGB for the VAE and
            decoded images are averaged back to one channel.
    """

    def __init__(self, vae: AutoencoderKL, cfg: LatentConfig, image_channels: int):
        self.vae, self.scaling, self.image_size, self.image_channels = vae, cfg.scaling, cfg.image_size, image_channels
        self.latent_channels = vae.config.latent_channels
        self.resolution = cfg.image_size // vae_factor(vae)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def to_vae_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` to ``(B, 3, S, S)`` in [-1, 1] at the VAE's image size (bilinear)."""
        x = images.to(self.device).float().div(127.5).sub(1)
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False, antialias=x.shape[-1] > self.image_size)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    @torch.no_grad()
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance (unscaled) of the posterior of ``(B, 3, S, S)`` images in [-1, 1]."""
        dist = self.vae.encode(x).latent_dist
        return dist.mean, dist.logvar

    def sample(self, mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A scaled latent drawn from the posterior: ``(mean + std * eps) * scaling``."""
        eps = torch.randn(mean.shape, generator=generator, device=mean.device)
        return (mean.float() + torch.exp(0.5 * logvar.float()) * eps) * self.scaling

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images to scaled posterior-mean latents (the deterministic input used to classify)."""
        return self.posterior(self.to_vae_input(images))[0] * self.scaling

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents to RGB images in [-1, 1] at the VAE's image size."""
        return self.vae.decode(z.float() / self.scaling).sample.clamp(-1, 1)

    def to_image(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents to images with the dataset's channels."""
        rgb = self.decode(z)
        return rgb.mean(1, keepdim=True) if self.image_channels == 1 else rgb


class LatentCode(ClassCode):
    """The RGB class code, carried in latent space.

    Label maps are the scaled posterior means of the clean class-code images (computed once); a predicted
    label latent is decoded to RGB and measured against the class colours as :class:`msflow.codes.RGBCode` does.
    """

    def __init__(self, codec: LatentCodec, num_classes: int, beta: float = 4.0):
        super().__init__(num_classes, beta)
        self.codec, self.rgb = codec, RGBCode(num_classes, beta)
        self.channels = codec.latent_channels
        self.noise_halfwidth = 0.0
        images = self.rgb.encode(torch.arange(num_classes, device=codec.device), codec.image_size, noise=False)
        with torch.no_grad():
            self.prototypes = codec.posterior(images)[0] * codec.scaling  # (K, C, h, w)

    def encode(self, labels: torch.Tensor, size: int, noise: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        if size != self.prototypes.shape[-1]:
            raise ValueError(f"class latents are {self.prototypes.shape[-1]} x {self.prototypes.shape[-1]}, not {size}")
        return self.prototypes_on(labels.device)[labels].clone()

    def distances(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.rgb.distances(self.to_rgb(y_hat))

    def to_rgb(self, y: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(y)


@dataclass(frozen=True)
class PosteriorCache:
    """VAE posteriors of a whole split (unscaled), stored in float16.

    Attributes:
        mean, logvar: ``(N, C, h, w)``.
        key: what the cache was computed from (dataset file, split, VAE, image size).
    """

    mean: torch.Tensor
    logvar: torch.Tensor
    key: str

    def sample(self, codec: LatentCodec, idx: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled latents of the images ``idx``, freshly sampled from their posteriors."""
        dev = generator.device if generator is not None else codec.device
        return codec.sample(self.mean[idx.cpu()].to(dev), self.logvar[idx.cpu()].to(dev), generator)


def cache_dir() -> Path:
    """Where posterior caches live: ``$MSFLOW_CACHE``, else ``~/.cache/msflow``."""
    return Path(os.environ.get("MSFLOW_CACHE") or Path.home() / ".cache" / "msflow")


def cache_key(split: Split, cfg: LatentConfig) -> str:
    vae = hashlib.sha1(cfg.vae.encode()).hexdigest()[:8]
    return f"{split.info.flag}-{split.size}-{split.name}-{split.md5[:12]}-vae{vae}-{cfg.image_size}"


def posterior_cache(codec: LatentCodec, split: Split, cfg: LatentConfig, batch_size: int = 64,
                    folder: str | Path | None = None, progress: bool = True) -> PosteriorCache:
    """Load the split's posterior cache, computing and saving it first if needed (once per file, VAE and size)."""
    key = cache_key(split, cfg)
    path = Path(folder or cache_dir()) / f"{key}.pt"
    if path.exists():
        d = torch.load(path, map_location="cpu", weights_only=True)
        if d.get("key") == key and d["mean"].shape[0] == len(split):
            return PosteriorCache(d["mean"], d["logvar"], key)
    means, logvars = [], []
    for i in tqdm(range(0, len(split), batch_size), desc=f"encode {split.info.flag}/{split.name}", disable=not progress, leave=False):
        m, lv = codec.posterior(codec.to_vae_input(split.images[i : i + batch_size]))
        means.append(m.half().cpu())
        logvars.append(lv.half().cpu())
    cache = PosteriorCache(torch.cat(means), torch.cat(logvars), key)
    torch_save({"key": key, "mean": cache.mean, "logvar": cache.logvar}, path)
    return cache
