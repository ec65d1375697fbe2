import numpy as np
import pytest

from msflow import metrics


def test_auc_distance_by_hand():
    # binary: class 0 distances; positives of class 0 are samples 0, 1
    d = np.array([[0.1, 0.9], [0.5, 0.4], [0.3, 0.2], [0.8, 0.1]])
    y = np.array([0, 0, 1, 1])
    # class 0, score -d0 = [-.1, -.5, -.3, -.8]: positives {-.1, -.5} vs negatives {-.3, -.8}: pairs won 1+1, 0+1 -> 3/4
    # class 1, score -d1 = [-.9, -.4, -.2, -.1]: positives {-.2, -.1} vs negatives {-.9, -.4}: 4/4
    assert metrics.auc_distance(d, y) == pytest.approx((0.75 + 1.0) / 2)


def test_auc_standard_matches_medmnist_evaluator():
    from medmnist.evaluator import getAUC

    rng = np.random.default_rng(0)
    for task, k in (("binary-class", 2), ("multi-class", 8), ("ordinal-regression", 5)):
        y = rng.integers(0, k, 300)
        p = rng.dirichlet(np.ones(k), 300)
        p[np.arange(300), y] += 0.3
        p /= p.sum(1, keepdims=True)
        assert metrics.auc_standard(p, y, task) == pytest.approx(getAUC(y, p, task))


def test_binary_standard_auc_is_temperature_free():
    rng = np.random.default_rng(1)
    d, y = rng.random((200, 2)), rng.integers(0, 2, 200)
    a = metrics.auc_standard(metrics.softmax_distances(d, 0.1), y, "binary-class")
    b = metrics.auc_standard(metrics.softmax_distances(d, 3.0), y, "binary-class")
    assert a == pytest.approx(b)


def test_accuracy_rejection_by_hand():
    correct = np.array([1, 0, 1, 1, 0, 1, 1, 1, 1, 1], bool)
    unc = np.array([0.1, 0.9, 0.2, 0.3, 0.8, 0.4, 0.5, 0.6, 0.05, 0.15])
    arc = metrics.accuracy_rejection(correct, unc, np.array([0.0, 0.1, 0.2, 0.5, 0.95]))
    # 0: 8/10; 10 %: drop the 0.9 error -> 8/9; 20 %: drop both errors -> 8/8; 50 %: 5/5; 95 %: floor(9.5) = 9 -> 1/1
    assert arc.tolist() == pytest.approx([0.8, 8 / 9, 1.0, 1.0, 1.0])
    assert metrics.REJECTION_FRACTIONS.tolist() == pytest.approx([i / 20 for i in range(20)])


def test_aurc_perfect_and_worst_ranking():
    correct = np.array([1, 1, 1, 0, 0], bool)
    perfect = metrics.aurc(correct, np.array([0.1, 0.2, 0.3, 0.8, 0.9]))
    # risks at coverage 1..5: 0, 0, 0, 1/4, 2/5
    assert perfect.aurc == pytest.approx((0.25 + 0.4) / 5)
    assert perfect.excess == pytest.approx(0.0)
    worst = metrics.aurc(correct, np.array([0.9, 0.8, 0.7, 0.1, 0.2]))
    # risks: 1, 1, 2/3, 2/4, 2/5
    assert worst.aurc == pytest.approx((1 + 1 + 2 / 3 + 0.5 + 0.4) / 5)
    assert worst.excess > 0


def test_random_ranking_matches_closed_form():
    # For a random order, the expected selective risk at every coverage is the error rate.
    rng = np.random.default_rng(0)
    correct = rng.random(400) < 0.7
    values = [metrics.aurc(correct, rng.random(400)).aurc for _ in range(300)]
    assert np.mean(values) == pytest.approx(1 - correct.mean(), abs=0.005)


def test_ece_of_calibrated_and_overconfident_sets():
    rng = np.random.default_rng(0)
    n = 200_000
    conf = rng.uniform(0.5, 1.0, n)
    labels = np.where(rng.random(n) < conf, 0, 1)  # class 0 is right with probability conf
    probs = np.stack([conf, 1 - conf], 1)
    cal = metrics.calibration(probs, labels, bins=15)
    assert cal.ece < 0.005
    assert cal.bin_count.sum() == n
    over = np.stack([np.full(n, 0.99), np.full(n, 0.01)], 1)
    labels = np.where(rng.random(n) < 0.75, 0, 1)
    assert metrics.calibration(over, labels).ece == pytest.approx(0.24, abs=0.01)


def test_nll_brier_by_hand():
    p = np.array([[0.8, 0.2], [0.4, 0.6]])
    y = np.array([0, 0])
    assert metrics.nll(p, y) == pytest.approx(-(np.log(0.8) + np.log(0.4)) / 2)
    assert metrics.brier(p, y) == pytest.approx(((0.2**2 + 0.2**2) + (0.6**2 + 0.6**2)) / 2)


def test_fit_temperature_recovers_the_truth():
    rng = np.random.default_rng(0)
    d = rng.random((20000, 4)) * 3
    p = metrics.softmax_distances(d, 0.5)
    y = np.array([rng.choice(4, p=row) for row in p])
    assert metrics.fit_temperature(d, y) == pytest.approx(0.5, rel=0.05)
    assert metrics.fit_temperature(-d, y, distances=False) == pytest.approx(0.5, rel=0.05)


def test_error_detection_and_confusion():
    correct = np.array([1, 1, 0, 0], bool)
    assert metrics.error_detection_auroc(correct, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert np.isnan(metrics.error_detection_auroc(np.ones(3, bool), np.zeros(3)))
    m = metrics.confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    assert m.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    # recall per class: class 2 has two images, one right; class 3 has none
    assert metrics.per_class_recall(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 4) == [1.0, 1.0, 0.5, None]
    assert metrics.recall_from_confusion([[3, 1], [0, 0]]) == [0.75, None]
    with pytest.raises(ValueError, match="square"):
        metrics.recall_from_confusion([[1, 2, 3]])


def test_softmax_by_hand_over_the_class_axis():
    z = np.array([[0.0, np.log(3.0)], [1000.0, 1000.0]])  # 1 : 3, and a large but equal pair (stability)
    assert metrics.softmax(z) == pytest.approx(np.array([[0.25, 0.75], [0.5, 0.5]]))
    # MC samples (S, N, K): each sample's rows are normalised over the classes, not across images or samples
    stacked = np.stack([z, z[::-1]])
    p = metrics.softmax(stacked)
    assert p.shape == (2, 2, 2) and np.allclose(p.sum(-1), 1)
    assert p[1] == pytest.approx(np.array([[0.5, 0.5], [0.25, 0.75]]))


def test_bootstrap_se_approaches_the_binomial_standard_error():
    rng = np.random.default_rng(3)
    n, p = 2000, 0.8
    labels = rng.integers(0, 3, n)
    right = rng.random(n) < p
    d = rng.random((n, 3)) + 1.0
    d[np.arange(n), np.where(right, labels, (labels + 1) % 3)] = 0.0  # the nearest class is right with probability p
    se = metrics.bootstrap_se(d, labels, resamples=400)
    acc = metrics.accuracy(d.argmin(1), labels)
    assert abs(se["acc"] - np.sqrt(acc * (1 - acc) / n)) < 0.1 * np.sqrt(acc * (1 - acc) / n)
    assert 0 < se["auc_paper"] < 0.02
    assert metrics.bootstrap_se(d, labels, resamples=50, seed=1) == metrics.bootstrap_se(d, labels, resamples=50, seed=1)
