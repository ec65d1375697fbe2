"""The symmetrical flow: interpolants, target velocities and the training loss (method.md section 3).

Time runs in opposite directions on the two sides, and this is the only place that says so:

* image side ``x``: noise ``xi_x`` at ``t = 0``, data ``x`` at ``t = 1``;
* label side ``y``: clean class map ``y`` at ``t = 0``, noise ``xi_y`` at ``t = 1``.

So one ODE ``dZ/dt = v(Z, t)`` over ``Z = [x ; y]`` generates when integrated forward from
``[xi_x ; y_k]`` at ``t = 0`` and classifies when integrated backward from ``[x ; xi_y]`` at ``t = 1``.
With ``s = sigma_min``::

    x_t = (1 - (1 - s) t) xi_x + t x        u_x = x - (1 - s) xi_x
    y_t = (1 - (1 - s) t) y + t xi_y        u_y = xi_y - (1 - s) y

and ``L = lam * mean|v_x - u_x|^2 + (1 - lam) * mean|v_y - u_y|^2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def image_path(x: torch.Tensor, xi_x: torch.Tensor, t: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """``x_t``: noise at ``t = 0``, data at ``t = 1``. ``t`` has shape ``(B,)``."""
    t = _bcast(t, x)
    return (1 - (1 - sigma_min) * t) * xi_x + t * x


def label_path(y: torch.Tensor, xi_y: torch.Tensor, t: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """``y_t``: class map at ``t = 0``, noise at ``t = 1``. ``t`` has shape ``(B,)``."""
    t = _bcast(t, y)
    return (1 - (1 - sigma_min) * t) * y + t * xi_y


def image_target(x: torch.Tensor, xi_x: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """``u_x = d x_t / dt``."""
    return x - (1 - sigma_min) * xi_x


def label_target(y: torch.Tensor, xi_y: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """``u_y = d y_t / dt``."""
    return xi_y - (1 - sigma_min) * y


def sample_t(
    n: int, t_one_frac: float = 0.0, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Training times: ``U(0, 1)``, with a fraction ``t_one_frac`` set to exactly 1.

    Both draws are always made, so the random stream does not depend on ``t_one_frac``.
    """
    t = torch.rand(n, generator=generator, device=device)
    at_one = torch.rand(n, generator=generator, device=device) < t_one_frac
    return torch.where(at_one, torch.ones_like(t), t)


@dataclass(frozen=True)
class FlowLoss:
    """One batch's loss and its two parts (``loss = lam * image + (1 - lam) * label``)."""

    loss: torch.Tensor
    image: torch.Tensor
    label: torch.Tensor


def flow_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    xi_x: torch.Tensor,
    xi_y: torch.Tensor,
    sigma_min: float = 1e-4,
    lam: float = 0.7,
) -> FlowLoss:
    """Regress the network's velocity on both targets at times ``t``.

    Args:
        model: maps ``([x_t ; y_t], t)`` to ``[v_x ; v_y]``.
        x: ``(B, C_x, H, W)`` images in [-1, 1].
        y: ``(B, C_y, H, W)`` class maps (with dequantisation noise).
        t: ``(B,)`` times in [0, 1], shared by both sides of an example.
        xi_x, xi_y: standard normal noises shaped like ``x`` and ``y``.
        sigma_min: minimum noise scale.
        lam: weight of the image term.
    """
    z_t = torch.cat([image_path(x, xi_x, t, sigma_min), label_path(y, xi_y, t, sigma_min)], dim=1)
    v = model(z_t, t).float()
    v_x, v_y = v[:, : x.shape[1]], v[:, x.shape[1] :]
    image = (v_x - image_target(x, xi_x, sigma_min)).square().mean()
    label = (v_y - label_target(y, xi_y, sigma_min)).square().mean()
    return FlowLoss(loss=lam * image + (1 - lam) * label, image=image.detach(), label=label.detach())


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)
