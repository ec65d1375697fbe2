import math

import pytest
import torch

from msflow.codes import RGBCode
from msflow.sampler import SOLVERS, VIEWS, classify, generate, integrate, time_grid


def _linear(a):
    return lambda z, t: a * z


def _time_dependent(z, t):
    # dz/dt = 2 t  ->  z(t) = z0 + t^2
    return 2 * t.reshape(-1, *([1] * (z.ndim - 1))) * torch.ones_like(z)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_linear_ode_converges_to_exp(solver):
    z0 = torch.ones(2, 1, 2, 2, dtype=torch.float64)
    exact = math.exp(-0.7)
    err = [abs(integrate(_linear(-0.7), z0, time_grid(n, 0.0, 1.0), solver).z[0, 0, 0, 0].item() - exact) for n in (4, 8)]
    order = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}[solver]
    assert err[1] < err[0]
    assert err[0] / err[1] == pytest.approx(2**order, rel=0.25)  # the solver's order of accuracy


def test_heun_beats_euler_at_equal_steps():
    z0 = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    for steps in (1, 2, 5, 25):
        grid = time_grid(steps, 0.0, 1.0)
        e = abs(integrate(_linear(1.3), z0, grid, "euler").z.item() - math.exp(1.3))
        h = abs(integrate(_linear(1.3), z0, grid, "heun").z.item() - math.exp(1.3))
        assert h < e


def test_backward_integration_and_time_dependence():
    z1 = torch.zeros(3, 1, 1, 1, dtype=torch.float64)
    # backward from t = 1 to 0 on dz/dt = 2t: z(0) = z(1) - 1; Heun is exact for a linear-in-t field
    assert integrate(_time_dependent, z1, time_grid(3, 1.0, 0.0), "heun").z.flatten().tolist() == pytest.approx([-1.0] * 3)
    # Euler backward with one step reads the field at t = 1 only: z(0) = z(1) - 2
    assert integrate(_time_dependent, z1, time_grid(1, 1.0, 0.0), "euler").z.flatten().tolist() == pytest.approx([-2.0] * 3)


def test_trajectory_and_nfe():
    z0 = torch.ones(2, 1, 3, 3)
    sol = integrate(_linear(1.0), z0, time_grid(5, 0.0, 1.0), "rk4", keep_trajectory=True)
    assert sol.trajectory.shape == (6, 2, 1, 3, 3)
    assert torch.equal(sol.trajectory[0], z0) and torch.equal(sol.trajectory[-1], sol.z)
    assert sol.nfe == 20
    assert integrate(_linear(1.0), z0, time_grid(5, 0.0, 1.0), "euler").trajectory is None
    with pytest.raises(ValueError, match="unknown solver"):
        integrate(_linear(1.0), z0, time_grid(1, 0, 1), "dopri5")
    with pytest.raises(ValueError, match="at least 1"):
        time_grid(0, 0, 1)


class _Recorder(torch.nn.Module):
    """A fixed nonlinear field that records the times it is called at."""

    def __init__(self):
        super().__init__()
        self.times = []

    def forward(self, z, t):
        self.times.append(t.clone())
        return torch.tanh(z) * (1 + t.reshape(-1, 1, 1, 1))


def test_one_step_classification_by_hand():
    code, v = RGBCode(3), _Recorder()
    x = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    c = classify(v, code, x, steps=1, solver="euler", generator=torch.Generator().manual_seed(5))
    xi_y = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(5))
    v_y = v(torch.cat([x, xi_y], 1), torch.ones(4))[:, 1:]
    y_hat = xi_y - v_y
    assert torch.allclose(c.y_hat, y_hat)
    assert torch.equal(v.times[0], torch.ones(4))  # read at t = 1
    assert torch.allclose(c.distances, code.distances(y_hat))
    assert torch.equal(c.pred, code.distances(y_hat).argmin(1))
    assert torch.allclose(c.uncertainty, code.distances(y_hat).min(1).values)
    assert c.nfe == 1 and c.trajectory is None


def test_generate_starts_from_code_and_noise():
    code, v = RGBCode(2), _Recorder()
    labels = torch.tensor([0, 1, 1])
    out = generate(v, code, labels, image_channels=3, resolution=4, steps=4, solver="heun",
                   generator=torch.Generator().manual_seed(0), keep_trajectory=True)
    assert out.images.shape == (3, 3, 4, 4)
    assert out.trajectory.shape == (5, 3, 3, 4, 4)
    assert out.nfe == 8
    assert v.times[0].tolist() == [0.0] * 3 and v.times[-1].tolist() == [1.0] * 3  # forward in time
    g = torch.Generator().manual_seed(0)
    xi_x = torch.randn(3, 3, 4, 4, generator=g)
    assert torch.equal(out.trajectory[0], xi_x)


def test_every_readout_view_is_undone_by_its_inverse_and_the_views_are_distinct():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)  # no symmetry: every view differs
    for name, pairs in VIEWS.items():
        seen = []
        for t, inv in pairs:
            assert torch.equal(inv(t(x)), x), name
            assert not any(torch.equal(t(x), s) for s in seen), name
            seen.append(t(x))
    assert [len(VIEWS[v]) for v in ("none", "flips", "dihedral")] == [1, 4, 8]
    # the flips are those of the training augmentation: horizontal, vertical and both
    flips = [t(x) for t, _ in VIEWS["flips"]]
    assert torch.equal(flips[1], x.flip(-1)) and torch.equal(flips[2], x.flip(-2)) and torch.equal(flips[3], x.flip(-1).flip(-2))


def test_flip_readout_averages_the_maps_read_off_each_view_by_hand():
    code, v = RGBCode(3), _Recorder()
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    c = classify(v, code, x, steps=1, solver="euler", generator=torch.Generator().manual_seed(7), views="flips")
    views = [x, x.flip(-1), x.flip(-2), x.flip(-2, -1)]
    xi = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(7))  # one batch: all views, fresh noise each
    z = torch.cat([torch.cat(views), xi], 1)
    y = xi - v(z, torch.ones(8))[:, 1:]
    maps = [y[0:2], y[2:4].flip(-1), y[4:6].flip(-2), y[6:8].flip(-2, -1)]
    y_hat = torch.stack(maps).mean(0)
    assert torch.allclose(c.y_hat, y_hat, atol=1e-6)
    assert torch.allclose(c.distances, code.distances(y_hat), atol=1e-6)
    assert c.nfe == 4 and c.y_hat.shape == (2, 3, 4, 4)


def test_views_that_leave_the_image_alone_average_away_the_noise():
    """A field that reads the label off the image exactly gives the same prediction from every view, so averaging
    maps leaves the prediction and shrinks the distance to the true colour."""
    code = RGBCode(4)
    proto = code.prototypes

    class Oracle(torch.nn.Module):  # v_y = xi - (colour of the class written in the image), plus image noise
        def forward(self, z, t):
            k = z[:, :1].mean(dim=(1, 2, 3)).round().long().clamp(0, 3)
            target = proto[k][:, :, None, None].expand(-1, -1, *z.shape[2:])
            return torch.cat([torch.zeros_like(z[:, :1]), z[:, 1:] - target + 0.3 * torch.randn_like(target)], 1)

    labels = torch.tensor([0, 1, 2, 3])
    x = labels.float()[:, None, None, None].expand(-1, 1, 6, 6).clone()
    torch.manual_seed(0)
    one = classify(Oracle(), code, x, views="none")
    eight = classify(Oracle(), code, x, views="dihedral")
    assert torch.equal(one.pred, labels) and torch.equal(eight.pred, labels)
    assert (eight.uncertainty < one.uncertainty).all() and eight.nfe == 8


def test_readout_views_errors_say_what_to_do():
    code, v = RGBCode(2), _Recorder()
    with pytest.raises(ValueError, match="unknown readout views 'rotate'; choose one of"):
        classify(v, code, torch.zeros(1, 1, 4, 4), views="rotate")
    with pytest.raises(ValueError, match="single-view readout only; use views='none'"):
        classify(v, code, torch.zeros(1, 1, 4, 4), views="flips", keep_trajectory=True)
    with pytest.raises(ValueError, match="square inputs"):
        classify(v, code, torch.zeros(1, 1, 4, 6), views="dihedral")
