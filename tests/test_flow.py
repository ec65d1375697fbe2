import pytest
import torch

from msflow.flow import flow_loss, image_path, image_target, label_path, label_target, sample_t

S = 1e-4


def _tensors(seed=0, shape=(4, 3, 5, 5)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(4)]


def test_endpoints():
    x, xi_x, y, xi_y = _tensors()
    zeros, ones = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    assert torch.allclose(image_path(x, xi_x, zeros, S), xi_x)  # image side: noise at t = 0
    assert torch.allclose(image_path(x, xi_x, ones, S), x + S * xi_x)  # data at t = 1
    assert torch.allclose(label_path(y, xi_y, zeros, S), y)  # label side: code at t = 0
    assert torch.allclose(label_path(y, xi_y, ones, S), xi_y + S * y)  # noise at t = 1
    assert torch.equal(image_path(x, xi_x, ones, 0.0), x)
    assert torch.equal(label_path(y, xi_y, ones, 0.0), xi_y)


@pytest.mark.parametrize("sigma_min", [0.0, 1e-4, 0.1])
def test_targets_are_time_derivatives(sigma_min):
    x, xi_x, y, xi_y = _tensors(1)
    t = torch.rand(4, dtype=torch.float64)
    h = 1e-6
    fd_x = (image_path(x, xi_x, t + h, sigma_min) - image_path(x, xi_x, t - h, sigma_min)) / (2 * h)
    fd_y = (label_path(y, xi_y, t + h, sigma_min) - label_path(y, xi_y, t - h, sigma_min)) / (2 * h)
    assert torch.allclose(fd_x, image_target(x, xi_x, sigma_min), atol=1e-7)
    assert torch.allclose(fd_y, label_target(y, xi_y, sigma_min), atol=1e-7)
    assert torch.allclose(image_target(x, xi_x, sigma_min), x - (1 - sigma_min) * xi_x)
    assert torch.allclose(label_target(y, xi_y, sigma_min), xi_y - (1 - sigma_min) * y)


class _Oracle(torch.nn.Module):
    """Returns the exact targets (plus an offset on one side) for a fixed batch."""

    def __init__(self, u_x, u_y, dx=0.0, dy=0.0):
        super().__init__()
        self.u = torch.cat([u_x + dx, u_y + dy], dim=1)

    def forward(self, z, t):
        return self.u


def test_loss_known_values():
    x, xi_x, _, _ = _tensors(2, (2, 1, 4, 4))
    y, xi_y = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    t = torch.rand(2, dtype=torch.float64)
    u_x, u_y = image_target(x, xi_x, S), label_target(y, xi_y, S)
    assert flow_loss(_Oracle(u_x, u_y), x, y, t, xi_x, xi_y, S, 0.7).loss.item() == pytest.approx(0.0, abs=1e-12)
    # offsets of 1 on the image side and 2 on the label side: lam * 1 + (1 - lam) * 4
    out = flow_loss(_Oracle(u_x, u_y, 1.0, 2.0), x, y, t, xi_x, xi_y, S, 0.7)
    assert out.image.item() == pytest.approx(1.0)
    assert out.label.item() == pytest.approx(4.0)
    assert out.loss.item() == pytest.approx(0.7 + 0.3 * 4)


def test_sample_t_mass_at_one():
    g = torch.Generator().manual_seed(0)
    t = sample_t(20000, 0.5, g)
    assert (t == 1).float().mean().item() == pytest.approx(0.5, abs=0.02)
    rest = t[t < 1]
    assert rest.min() >= 0 and rest.mean().item() == pytest.approx(0.5, abs=0.02)
    u = sample_t(10000, 0.0, torch.Generator().manual_seed(0))
    assert (u == 1).sum() == 0


def test_sample_t_fraction_changes_only_which_times_are_one():
    """cpu-lam05-t075 against cpu-lam05: with one seed, a larger fraction sets more times to 1 and leaves the others,
    and the generator's state after the draw, as they were (so the two runs see the same batches and noise)."""
    g_half, g_more = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    half, more = sample_t(20000, 0.5, g_half), sample_t(20000, 0.75, g_more)
    assert (more == 1).float().mean().item() == pytest.approx(0.75, abs=0.02)
    assert torch.all(more[half == 1] == 1)
    kept = more < 1
    assert torch.equal(more[kept], half[kept])
    assert torch.equal(torch.rand(4, generator=g_half), torch.rand(4, generator=g_more))
