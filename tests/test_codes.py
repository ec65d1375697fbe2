from itertools import combinations

import pytest
import torch

from msflow.codes import GrayCode, RGBCode, SpreadRGBCode, class_palette_indices, make_code, palette, spread_palette_indices


def test_palette_order_and_levels():
    p = palette()
    assert p.shape == (64, 3)
    assert p[0].tolist() == [0, 0, 0]
    assert p[1].tolist() == [0, 0, 75]  # B innermost
    assert p[4].tolist() == [0, 75, 0]
    assert p[16].tolist() == [75, 0, 0]  # R outermost
    assert p[63].tolist() == [225, 225, 225]
    assert len({tuple(c) for c in p.tolist()}) == 64


@pytest.mark.parametrize(
    "k, expected",
    [
        (2, [0, 63]),
        (5, [0, 15, 31, 47, 63]),
        (7, [0, 10, 21, 31, 42, 52, 63]),
        (8, [0, 9, 18, 27, 36, 45, 54, 63]),
    ],
)
def test_class_palette_indices(k, expected):
    assert class_palette_indices(k).tolist() == expected


EDGE = 225 / 255 * 2  # one edge of the colour cube in [-1, 1] units


def _smallest_gap(prototypes: torch.Tensor) -> float:
    return min((a - b).norm().item() for a, b in combinations(prototypes, 2))


@pytest.mark.parametrize(
    "k, expected, gap",
    [
        (2, [0, 63], 3**0.5 * EDGE),  # opposite corners: the paper's code
        (3, [0, 15, 51], 2**0.5 * EDGE),  # a face diagonal apart
        (4, [0, 15, 51, 60], 2**0.5 * EDGE),  # a regular tetrahedron
        (5, [0, 3, 12, 48, 63], EDGE),  # RetinaMNIST: three times the paper's smallest gap
        (8, [0, 3, 12, 15, 48, 51, 60, 63], EDGE),  # BloodMNIST: every corner
    ],
)
def test_spread_code_known_values(k, expected, gap):
    assert spread_palette_indices(k).tolist() == expected
    code = SpreadRGBCode(k)
    assert _smallest_gap(code.prototypes) == pytest.approx(gap, rel=1e-6)
    assert _smallest_gap(code.prototypes) >= _smallest_gap(RGBCode(k).prototypes) - 1e-6


def test_spread_code_no_subset_of_corners_does_better():
    corners = palette()[[0, 3, 12, 15, 48, 51, 60, 63]].double() / 255 * 2 - 1
    for k in (3, 4, 5):
        best = max(_smallest_gap(corners[list(s)]) for s in combinations(range(8), k))
        assert _smallest_gap(SpreadRGBCode(k).prototypes.double()) == pytest.approx(best)
    # beyond the corners: distinct colours, all eight corners kept, then the farthest colour from them (the centre-most)
    nine = spread_palette_indices(9).tolist()
    assert len(set(nine)) == 9 and {0, 3, 12, 15, 48, 51, 60, 63} < set(nine) and 21 in nine


def test_class_colours_known_values():
    assert RGBCode(2).prototypes.flatten().tolist() == pytest.approx([-1, -1, -1] + [225 / 255 * 2 - 1] * 3)
    # Blood (K = 8): class 1 is palette 9 = (0, 150, 75); class 3 is 27 = (75, 150, 225).
    c = RGBCode(8).prototypes
    assert c[1].tolist() == pytest.approx([-1, 150 / 255 * 2 - 1, 75 / 255 * 2 - 1])
    assert c[3].tolist() == pytest.approx([75 / 255 * 2 - 1, 150 / 255 * 2 - 1, 225 / 255 * 2 - 1])
    # Retina (K = 5): class 2 is palette 31 = (75, 225, 225).
    assert RGBCode(5).prototypes[2].tolist() == pytest.approx([75 / 255 * 2 - 1, 225 / 255 * 2 - 1, 225 / 255 * 2 - 1])


def test_encode_shape_and_noise_bounds():
    code = RGBCode(8, beta=4)
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 3, 7])
    y = code.encode(labels, 16, generator=g)
    assert y.shape == (3, 3, 16, 16)
    clean = code.encode(labels, 16, noise=False)
    dev = (y - clean).abs()
    assert dev.max() <= 4 / 255 + 1e-7
    assert dev.max() > 3 / 255  # the noise really is there and fills its range
    assert torch.allclose(clean[1, :, 5, 7], code.prototypes[3])


@pytest.mark.parametrize("k", [2, 5, 7, 8])
@pytest.mark.parametrize("kind", ["rgb", "rgb-spread", "gray"])
def test_round_trip(kind, k):
    code = make_code(kind, k)
    labels = torch.arange(k).repeat(3)
    y = code.encode(labels, 8, generator=torch.Generator().manual_seed(1))
    dec = code.decode(y)
    assert dec.pred.tolist() == labels.tolist()
    assert dec.distances.shape == (3 * k, k)
    assert torch.all(dec.uncertainty <= code.noise_halfwidth * (3**0.5) + 1e-6)


def test_rgb_distances_by_hand():
    code = RGBCode(2)
    # A 1 x 2 map: one pixel at class 0's colour, one at class 1's.
    y = torch.stack([code.prototypes[0], code.prototypes[1]], dim=1)[None, :, None, :]  # (1, 3, 1, 2)
    gap = (code.prototypes[1] - code.prototypes[0]).norm().item()  # sqrt(3) * 450 / 255
    d = code.distances(y)
    assert d[0].tolist() == pytest.approx([gap / 2, gap / 2])
    assert gap == pytest.approx(3**0.5 * 450 / 255)


def test_gray_code_values_and_rounding():
    code = GrayCode(5, beta=4)
    assert code.prototypes[:, 0].tolist() == pytest.approx([-2, -1, 0, 1, 2])
    assert code.noise_halfwidth == pytest.approx(0.25)
    # a map whose mean is 0.6 rescales to (0.6 / 2 + 1) * 4 / 2 = 2.6 -> class 3, at distance 0.4
    y = torch.full((1, 1, 4, 4), 0.6)
    dec = code.decode(y)
    assert dec.pred.item() == 3
    assert dec.uncertainty.item() == pytest.approx(0.4)
    assert code.decode(torch.full((1, 1, 4, 4), 0.4)).pred.item() == 2  # 2.4 rounds down


def test_bad_class_counts():
    with pytest.raises(ValueError, match="at least 2"):
        RGBCode(1)
    with pytest.raises(ValueError, match="64 colours"):
        RGBCode(65)
    with pytest.raises(ValueError, match="unknown class code"):
        make_code("hsv", 3)


def test_prototypes_on_a_device_are_copied_once():
    code = RGBCode(4)
    a, b = code.prototypes_on("cpu"), code.prototypes_on("cpu")
    assert a is b and torch.equal(a, code.prototypes)
    half = code.prototypes_on("cpu", torch.float64)
    assert half.dtype == torch.float64 and torch.allclose(half.float(), code.prototypes)
    labels = torch.tensor([0, 3])
    assert torch.equal(code.encode(labels, 2, noise=False)[:, :, 0, 0], code.prototypes[labels])
