import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from msflow import plotting  # noqa: E402


def test_accuracy_rejection_keeps_every_curve_apart():
    frac = np.linspace(0, 0.9, 10)
    curves = {f"MedSymmFlow score {i}": (frac, np.full(10, 0.5 + i / 100), None) for i in range(9)}
    curves |= {"ResNet-18 a": (frac, np.full(10, 0.7), None), "ResNet-18 b": (frac, np.full(10, 0.71), np.full(10, 0.01)),
               "paper, MedSymmFlow (28)": (frac[:6], np.full(6, 0.8), None)}
    ax = plotting.plot_accuracy_rejection(curves)
    lines = {line.get_label(): line for line in ax.get_lines()}
    ours = [matplotlib.colors.to_hex(lines[k].get_color()) for k in curves if not k.startswith("paper")]
    assert len(set(ours)) == len(ours) == 11  # eleven curves, eleven colours
    paper = lines["paper, MedSymmFlow (28)"]
    assert paper.get_color() == "k" and paper.get_linestyle() == "--" and paper.get_marker() == "s"
    assert lines["ResNet-18 a"].get_linestyle() == "--" and lines["MedSymmFlow score 0"].get_linestyle() == "-"
    assert np.allclose(lines["MedSymmFlow score 3"].get_ydata(), 53.0)  # in percent


def test_class_recall_draws_one_line_per_class_in_percent():
    history = [{"images": 64, "val_acc": 0.5}]  # recorded before per-class recall: skipped
    history += [{"images": 128 * i, "val_recall": [0.1 * i, None, 1.0]} for i in (1, 2)]
    ax = plotting.plot_class_recall(history, ["a", "b", "c"])
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["a", "b", "c"]
    assert np.allclose(lines["a"].get_xdata(), [128, 256]) and np.allclose(lines["a"].get_ydata(), [10, 20])
    assert np.isnan(lines["b"].get_ydata()).all() and np.allclose(lines["c"].get_ydata(), 100)
    try:
        plotting.plot_class_recall(history[:1], ["a"])
    except ValueError as e:
        assert "retrain" in str(e)
    else:
        raise AssertionError("a history without per-class recall must be refused")
