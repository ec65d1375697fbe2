"""Class codes on the label side of the flow: the RGB code of MedSymmFlow and the grayscale code of SymmFlow.

A code turns a label into a constant ``H x W`` map (its *prototype* colour, plus fresh dequantisation
noise at training time) and turns a predicted map back into per-class distances, a prediction and an
uncertainty (method.md section 2). Values live in the image scale, [-1, 1] for RGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PALETTE_LEVELS = (0, 75, 150, 225)


def palette() -> torch.Tensor:
    """The 64-colour palette, ``(64, 3)`` in 0..255: R outermost, B innermost."""
    p = torch.arange(64)
    levels = torch.tensor(PALETTE_LEVELS)
    return torch.stack([levels[p // 16], levels[(p // 4) % 4], levels[p % 4]], dim=1)


def class_palette_indices(num_classes: int) -> torch.Tensor:
    """Palette index of each class, spread evenly: ``floor(63 k / (K - 1))``."""
    _check_k(num_classes)
    k = torch.arange(num_classes)
    return torch.div(63 * k, num_classes - 1, rounding_mode="floor")


@dataclass(frozen=True)
class Decoded:
    """A decoded label map.

    Attributes:
        distances: ``(B, K)`` distance of the map to each class prototype.
        pred: ``(B,)`` predicted class, the nearest prototype.
        uncertainty: ``(B,)`` distance to the nearest prototype (larger = less sure).
    """

    distances: torch.Tensor
    pred: torch.Tensor
    uncertainty: torch.Tensor


class ClassCode:
    """Common interface of the class codes.

    Attributes:
        num_classes: K.
        beta: dequantisation strength.
        channels: channels of the label map.
        prototypes: ``(K, channels)`` clean code value of each class.
        noise_halfwidth: half-width of the uniform dequantisation noise.
    """

    channels: int
    prototypes: torch.Tensor
    noise_halfwidth: float

    def __init__(self, num_classes: int, beta: float = 4.0):
        _check_k(num_classes)
        self.num_classes = num_classes
        self.beta = float(beta)
        self._on: dict[tuple, torch.Tensor] = {}

    def prototypes_on(self, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``prototypes`` on a device (and dtype), copied once: a host-to-device copy every training step would
        make the host wait for the GPU at every step."""
        key = (str(device), dtype)
        if key not in self._on:
            self._on[key] = self.prototypes.to(device, dtype or self.prototypes.dtype)
        return self._on[key]

    def encode(
        self,
        labels: torch.Tensor,
        size: int,
        noise: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Label maps ``(B, channels, size, size)``: prototype plus per-pixel uniform noise."""
        proto = self.prototypes_on(labels.device)[labels]  # (B, C)
        y = proto[:, :, None, None].expand(-1, -1, size, size)
        if not noise:
            return y.clone()
        u = torch.rand(y.shape, generator=generator, device=labels.device)
        return y + (2 * u - 1) * self.noise_halfwidth

    def distances(self, y_hat: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` distances of predicted maps ``(B, C, H, W)`` to the class prototypes."""
        raise NotImplementedError

    def to_rgb(self, y: torch.Tensor) -> torch.Tensor:
        """Label maps as images for display (the maps themselves, except for latent codes)."""
        return y

    def decode(self, y_hat: torch.Tensor) -> Decoded:
        """Nearest prototype and its distance."""
        d = self.distances(y_hat)
        u, pred = d.min(dim=1)
        return Decoded(distances=d, pred=pred, uncertainty=u)


class RGBCode(ClassCode):
    """MedSymmFlow's RGB code: class k gets palette colour ``floor(63 k / (K - 1))``.

    Distances are the mean over pixels of the Euclidean (RGB) distance to each class colour.
    """

    channels = 3

    def __init__(self, num_classes: int, beta: float = 4.0):
        super().__init__(num_classes, beta)
        self.prototypes = palette()[class_palette_indices(num_classes)].double().div(255).mul(2).sub(1).float()
        self.noise_halfwidth = self.beta / 255

    def distances(self, y_hat: torch.Tensor) -> torch.Tensor:
        proto = self.prototypes_on(y_hat.device, y_hat.dtype)
        diff = y_hat[:, None] - proto[None, :, :, None, None]  # (B, K, 3, H, W)
        return diff.square().sum(dim=2).sqrt().mean(dim=(-2, -1))


class GrayCode(ClassCode):
    """SymmFlow's one-channel code: class k holds ``(beta / 2) (2 k / (K - 1) - 1)``.

    SymmFlow decodes by averaging the map and rounding the rescaled mean to the nearest level, so the
    distance to class k is ``|mean(y_hat) - c_k|``; its argmin is exactly that rounding.
    """

    channels = 1

    def __init__(self, num_classes: int, beta: float = 4.0):
        super().__init__(num_classes, beta)
        k = torch.arange(num_classes, dtype=torch.float64)
        self.prototypes = ((self.beta / 2) * (2 * k / (num_classes - 1) - 1)).float()[:, None]
        self.noise_halfwidth = (self.beta / 4) / (num_classes - 1)

    def distances(self, y_hat: torch.Tensor) -> torch.Tensor:
        mean = y_hat.mean(dim=(1, 2, 3))
        return (mean[:, None] - self.prototypes_on(y_hat.device, y_hat.dtype)[None, :, 0]).abs()


CODES = {"rgb": RGBCode, "gray": GrayCode}


def make_code(kind: str, num_classes: int, beta: float = 4.0) -> ClassCode:
    """Build a code by name: ``"rgb"`` or ``"gray"``."""
    if kind not in CODES:
        raise ValueError(f"unknown class code {kind!r}; choose one of {sorted(CODES)}")
    return CODES[kind](num_classes, beta)


def _check_k(num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"a class code needs at least 2 classes, got {num_classes}")
    if num_classes > 64:
        raise ValueError(f"the RGB palette has 64 colours; {num_classes} classes do not fit")
