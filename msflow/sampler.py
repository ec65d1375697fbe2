"""Integrate the joint ODE ``dZ/dt = v(Z, t)``: forward to generate, backward to classify.

Solvers are plain functions over an explicit time grid, with no hidden state: any number of steps,
either direction. Generation starts at ``t = 0`` from ``[xi_x ; y_k]`` and keeps the image channels at
``t = 1``; classification starts at ``t = 1`` from ``[x ; xi_y]`` and keeps the label channels at
``t = 0`` (the time directions are stated in :mod:`msflow.flow`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from msflow.codes import ClassCode

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``v(z, t)`` with ``z`` of shape ``(B, C, H, W)`` and ``t`` of shape ``(B,)``."""


def _euler(v: Velocity, z: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    return z + (t1 - t0) * v(z, _full(z, t0))


def _midpoint(v: Velocity, z: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    h = t1 - t0
    z_mid = z + 0.5 * h * v(z, _full(z, t0))
    return z + h * v(z_mid, _full(z, t0 + 0.5 * h))


def _heun(v: Velocity, z: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    h = t1 - t0
    k1 = v(z, _full(z, t0))
    k2 = v(z + h * k1, _full(z, t1))
    return z + 0.5 * h * (k1 + k2)


def _rk4(v: Velocity, z: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    h = t1 - t0
    k1 = v(z, _full(z, t0))
    k2 = v(z + 0.5 * h * k1, _full(z, t0 + 0.5 * h))
    k3 = v(z + 0.5 * h * k2, _full(z, t0 + 0.5 * h))
    k4 = v(z + h * k3, _full(z, t1))
    return z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


SOLVERS: dict[str, tuple[Callable, int]] = {
    "euler": (_euler, 1),
    "midpoint": (_midpoint, 2),
    "heun": (_heun, 2),
    "rk4": (_rk4, 4),
}
"""Solver name to (one-step function, network evaluations per step)."""


def time_grid(steps: int, start: float, end: float) -> torch.Tensor:
    """``steps + 1`` evenly spaced times from ``start`` to ``end`` (either direction)."""
    if steps < 1:
        raise ValueError(f"the number of ODE steps must be at least 1, got {steps}")
    return torch.linspace(start, end, steps + 1, dtype=torch.float64)


@dataclass(frozen=True)
class Solution:
    """The result of an integration.

    Attributes:
        z: final state.
        times: the grid that was followed, ``(steps + 1,)``.
        trajectory: ``(steps + 1, *z.shape)`` states on the grid, or ``None`` if not kept.
        nfe: network evaluations spent.
    """

    z: torch.Tensor
    times: torch.Tensor
    trajectory: torch.Tensor | None
    nfe: int


def integrate(v: Velocity, z: torch.Tensor, times: torch.Tensor, solver: str = "euler", keep_trajectory: bool = False) -> Solution:
    """Integrate ``dz/dt = v(z, t)`` along ``times`` with a fixed-step solver."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)}")
    step, cost = SOLVERS[solver]
    grid = [float(t) for t in times]
    states = [z] if keep_trajectory else None
    for t0, t1 in zip(grid[:-1], grid[1:]):
        z = step(v, z, t0, t1)
        if states is not None:
            states.append(z)
    trajectory = torch.stack(states) if states is not None else None
    return Solution(z=z, times=times, trajectory=trajectory, nfe=cost * (len(grid) - 1))


def _rot90(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.rot90(x, k, dims=(-2, -1))


_IDENTITY = lambda x: x  # noqa: E731
_FLIP_W = lambda x: x.flip(-1)  # noqa: E731
_FLIP_H = lambda x: x.flip(-2)  # noqa: E731
_FLIP_HW = lambda x: x.flip(-2, -1)  # noqa: E731
_TRANSPOSE = lambda x: x.transpose(-2, -1)  # noqa: E731
_ANTI_TRANSPOSE = lambda x: x.flip(-2, -1).transpose(-2, -1)  # noqa: E731

VIEWS: dict[str, tuple[tuple[Callable, Callable], ...]] = {
    "none": ((_IDENTITY, _IDENTITY),),
    "flips": ((_IDENTITY, _IDENTITY), (_FLIP_W, _FLIP_W), (_FLIP_H, _FLIP_H), (_FLIP_HW, _FLIP_HW)),
    "dihedral": ((_IDENTITY, _IDENTITY), (_FLIP_W, _FLIP_W), (_FLIP_H, _FLIP_H), (_FLIP_HW, _FLIP_HW),
                 (_TRANSPOSE, _TRANSPOSE), (_ANTI_TRANSPOSE, _ANTI_TRANSPOSE), (_rot90(1), _rot90(-1)), (_rot90(-1), _rot90(1))),
}
"""Readout view name to its ``(transform, inverse)`` pairs, applied to the images and undone on the predicted maps.

``"none"`` is the reference (the image as it is); ``"flips"`` adds its horizontal, vertical and double flips, the
transforms the reference trains Blood, Derma and Retina with; ``"dihedral"`` adds the transposes and quarter turns.
"""


def view_pairs(views: str) -> tuple[tuple[Callable, Callable], ...]:
    """The ``(transform, inverse)`` pairs of the readout views named ``views`` (a key of :data:`VIEWS`)."""
    if views not in VIEWS:
        raise ValueError(f"unknown readout views {views!r}; choose one of {sorted(VIEWS)}")
    return VIEWS[views]


@dataclass(frozen=True)
class Classification:
    """Backward integration from images to label maps, decoded.

    Attributes:
        y_hat: ``(B, C_y, H, W)`` predicted label maps at ``t = 0``.
        distances: ``(B, K)`` distance of each map to each class prototype.
        pred: ``(B,)`` predicted class.
        uncertainty: ``(B,)`` distance to the nearest prototype.
        trajectory: ``(steps + 1, B, C_y, H, W)`` label channels from ``t = 1`` to 0, or ``None``.
        nfe: network evaluations per image.
    """

    y_hat: torch.Tensor
    distances: torch.Tensor
    pred: torch.Tensor
    uncertainty: torch.Tensor
    trajectory: torch.Tensor | None
    nfe: int


@dataclass(frozen=True)
class Generation:
    """Forward integration from class maps to images.

    Attributes:
        images: ``(B, C_x, H, W)`` generated images in (about) [-1, 1].
        labels: ``(B,)`` requested classes.
        trajectory: ``(steps + 1, B, C_x, H, W)`` image channels from ``t = 0`` to 1, or ``None``.
        nfe: network evaluations per image.
    """

    images: torch.Tensor
    labels: torch.Tensor
    trajectory: torch.Tensor | None
    nfe: int


def label_noise(n: int, code: ClassCode, size: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The Gaussian label maps (of spatial ``size``) that :func:`classify` starts ``n`` images from. Drawing them without
    classifying advances ``generator`` as classifying would, so that a process can skip another's batches
    (:func:`msflow.evaluate.predict`)."""
    return torch.randn(n, code.channels, *size, generator=generator, device=device, dtype=dtype)


@torch.no_grad()
def classify(
    v: Velocity,
    code: ClassCode,
    x: torch.Tensor,
    steps: int = 1,
    solver: str = "euler",
    generator: torch.Generator | None = None,
    keep_trajectory: bool = False,
    views: str = "none",
) -> Classification:
    """Read labels off images: integrate from ``[x ; xi_y]`` at ``t = 1`` back to ``t = 0``.

    With one Euler step this is ``y_hat = xi_y - v_y([x ; xi_y], 1)``, the reference's classifier.
    With ``views`` other than ``"none"`` (see :data:`VIEWS`), each transformed copy of ``x`` is read out with its own
    noise, in one batch, and the predicted maps, transformed back, are averaged before decoding.
    """
    pairs = view_pairs(views)
    if len(pairs) > 1:
        if keep_trajectory:
            raise ValueError("a trajectory is kept for the single-view readout only; use views='none'")
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"readout views need square inputs, got {tuple(x.shape[-2:])}")
        x = torch.cat([t(x) for t, _ in pairs])
    xi_y = label_noise(x.shape[0], code, x.shape[2:], generator, x.device, x.dtype)
    sol = integrate(v, torch.cat([x, xi_y], dim=1), time_grid(steps, 1.0, 0.0), solver, keep_trajectory)
    c_x = x.shape[1]
    y_hat = sol.z[:, c_x:].float()
    if len(pairs) > 1:
        y_hat = torch.stack([inv(y) for (_, inv), y in zip(pairs, y_hat.chunk(len(pairs)))]).mean(0)
    dec = code.decode(y_hat)
    traj = sol.trajectory[:, :, c_x:] if sol.trajectory is not None else None
    return Classification(y_hat, dec.distances, dec.pred, dec.uncertainty, traj, sol.nfe * len(pairs))


@torch.no_grad()
def generate(
    v: Velocity,
    code: ClassCode,
    labels: torch.Tensor,
    image_channels: int,
    resolution: int,
    steps: int = 25,
    solver: str = "euler",
    generator: torch.Generator | None = None,
    keep_trajectory: bool = False,
) -> Generation:
    """Draw images of the given classes: integrate from ``[xi_x ; y_k]`` at ``t = 0`` to ``t = 1``."""
    shape = (labels.shape[0], image_channels, resolution, resolution)
    xi_x = torch.randn(shape, generator=generator, device=labels.device)
    y = code.encode(labels, resolution, noise=True, generator=generator)
    sol = integrate(v, torch.cat([xi_x, y], dim=1), time_grid(steps, 0.0, 1.0), solver, keep_trajectory)
    traj = sol.trajectory[:, :, :image_channels] if sol.trajectory is not None else None
    return Generation(sol.z[:, :image_channels].float(), labels, traj, sol.nfe)


def _full(z: torch.Tensor, t: float) -> torch.Tensor:
    return torch.full((z.shape[0],), t, device=z.device, dtype=z.dtype)
