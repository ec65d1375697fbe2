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


CORNERS = (0, 3, 12, 15, 48, 51, 60, 63)  # palette indices of the colour cube's corners (levels 0 and 225 only)


def spread_palette_indices(num_classes: int) -> torch.Tensor:
    """Palette indices as far apart as the palette allows, ascending (class 0 stays black).

    Up to 8 classes take the subset of cube corners with the largest smallest pairwise distance (then the
    largest total distance, then the smallest indices): opposite corners for 2 (the paper's code), a
    tetrahedron for 3 and 4, corners one cube edge apart for 5 to 8. Beyond 8, palette colours are added
    one at a time, each the farthest from those already chosen. The paper's evenly indexed code puts
    RetinaMNIST's grades 1 to 4 a quarter of an edge apart on one line, where the average of two grades'
    colours is a third grade's.
    """
    from itertools import combinations

    _check_k(num_classes)
    colours = palette().double()
    dist = torch.cdist(colours, colours)
    if num_classes <= len(CORNERS):
        def rank(subset):
            pairs = [dist[a, b].item() for a, b in combinations(subset, 2)]
            return (-min(pairs), -sum(pairs), subset)

        return torch.tensor(min(combinations(CORNERS, num_classes), key=rank))
    chosen = list(CORNERS)
    while len(chosen) < num_classes:
        nearest = dist[:, chosen].min(dim=1).values
        chosen.append(int(nearest.argmax()))  # ties: the smallest index; chosen colours have distance 0
    return torch.tensor(sorted(chosen))


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

    indices = staticmethod(class_palette_indices)

    def __init__(self, num_classes: int, beta: float = 4.0):
        super().__init__(num_classes, beta)
        self.prototypes = palette()[self.indices(num_classes)].double().div(255).mul(2).sub(1).float()
        self.noise_halfwidth = self.beta / 255

    def distances(self, y_hat: torch.Tensor) -> torch.Tensor:
        proto = self.prototypes_on(y_hat.device, y_hat.dtype)
        diff = y_hat[:, None] - proto[None, :, :, None, None]  # (B, K, 3, H, W)
        return diff.square().sum(dim=2).sqrt().mean(dim=(-2, -1))


class SpreadRGBCode(RGBCode):
    """The RGB code with the class colours spread as far apart as the palette allows
    (:func:`spread_palette_indices`); identical to MedSymmFlow's for two classes."""

    indices = staticmethod(spread_palette_indices)


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


CODES = {"rgb": RGBCode, "rgb-spread": SpreadRGBCode, "gray": GrayCode}


def make_code(kind: str, num_classes: int, beta: float = 4.0) -> ClassCode:
    """Build a code by name: ``"rgb"``, ``"rgb-spread"`` or ``"gray"``."""
    if kind not in CODES:
        raise ValueError(f"unknown class code {kind!r}; choose one of {sorted(CODES)}")
    return CODES[kind](num_classes, beta)


def _check_k(num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"a class code needs at least 2 classes, got {num_classes}")
    if num_classes > 64:
        raise ValueError(f"the RGB palette has 64 colours; {num_classes} classes do not fit")
