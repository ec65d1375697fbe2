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
    assert paper.get_color() == "#000000" and paper.get_linestyle() == "--" and paper.get_marker() == "s"
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


def test_a_recipe_has_one_colour_everywhere_its_seeds_share_it_and_legends_sit_outside():
    frac = np.linspace(0, 0.9, 10)
    a = plotting.plot_accuracy_rejection({"ours, cpu-ens": (frac, np.full(10, 0.8), None),
                                          "ResNet-18 (28)": (frac, np.full(10, 0.7), None)})
    history = [{"images": 64, "train_seconds": 60.0, "val_acc": 0.5}, {"images": 128, "train_seconds": 120.0, "val_acc": 0.6}]
    plotting.register_colours({"cpu-wide": "#56B4E9"})  # a study's own recipe
    b = plotting.plot_time_to_accuracy({"cpu": history, "cpu-seed1": history, "cpu-wide": history, "mystery": history})
    colour = {line.get_label(): matplotlib.colors.to_hex(line.get_color()) for ax in (a, b) for line in ax.get_lines()}
    assert colour["ours, cpu-ens"] == colour["cpu"] == colour["cpu-seed1"] == plotting.RECIPE_COLOURS["cpu"].lower()
    assert colour["cpu-wide"] == "#56b4e9"
    assert len({colour["cpu"], colour["cpu-wide"], colour["mystery"]}) == 3
    lines = {line.get_label(): line for line in b.get_lines()}
    assert lines["cpu-seed1"].get_linestyle() == ":" and lines["cpu"].get_linestyle() == "-"
    fig = b.figure
    fig.canvas.draw()
    legend = b.get_legend().get_window_extent()
    assert legend.x0 >= b.get_window_extent().x1  # right of the axes: it covers no curve
    assert matplotlib.rcParams["legend.fontsize"] >= 9 and matplotlib.rcParams["savefig.dpi"] >= 200


def test_time_to_accuracy_panels_put_each_group_in_its_own_panel():
    history = [{"images": 64, "val_acc": 0.5}, {"images": 128, "val_acc": 0.7}]
    fig = plotting.plot_time_to_accuracy_panels({"loss weight": {"cpu": history, "cpu-lam05": history},
                                                 "width": {"cpu": history, "cpu-w24": history, "cpu-w24-seed1": history}})
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["loss weight", "width"]
    assert [len(ax.get_lines()) for ax in shown] == [2, 3]
    assert np.allclose(shown[1].get_lines()[1].get_ydata(), [50, 70])


def test_seeds_read_together_keep_their_recipe_colour_but_not_its_line():
    frac = np.linspace(0, 0.9, 10)
    ax = plotting.plot_accuracy_rejection({"ours, gpu (4 seeds together)": (frac, np.full(10, 0.9), None),
                                           "ours, gpu (one network)": (frac, np.full(10, 0.8), None)})
    together, one = ax.get_lines()
    assert together.get_color() == one.get_color() == plotting.RECIPE_COLOURS["gpu"]
    assert together.get_linewidth() > one.get_linewidth() and together.get_marker() == "D" and one.get_marker() == "o"


def test_image_rows_label_each_row_and_head_each_group():
    rows = {"basophil": np.full((4, 5, 5, 3), 10, np.uint8), "platelet": np.full((3, 5, 5, 3), 200, np.uint8)}
    fig = plotting.show_image_rows(rows, groups=[("real", 2), ("generated", 2)], title="two groups")
    images = [ax for ax in fig.axes if ax.get_images()]
    assert len(images) == 7  # every image, no empty axes
    assert [ax.get_ylabel() for ax in images if ax.get_ylabel()] == ["basophil", "platelet"]
    heads = [t.get_text() for ax in fig.axes if not ax.get_images() for t in ax.texts]
    assert heads == ["real", "generated"]
    wide = plotting.show_image_rows({"a": np.zeros((40, 5, 5, 1), np.uint8)}, size=1.0)
    assert abs(wide.get_size_inches()[0] - plotting.FIGURE_WIDTH) < 1e-6  # 40 images shrink to the page's width
    blocks = plotting.show_image_blocks({"A": rows, "B": rows}, size=2.0)
    assert abs(blocks.get_size_inches()[0] - plotting.FIGURE_WIDTH) < 1e-6
    path = plotting.plot_trajectory(np.zeros((30, 2, 5, 5, 1), np.uint8), np.linspace(0, 1, 30), row_labels=["a", "b"])
    assert path.get_size_inches()[0] <= plotting.FIGURE_WIDTH + 1e-6
    titled = plotting.show_image_rows({"most certain": rows["basophil"][:2]}, titles={"most certain": ["a -> a", "b -> c"]})
    assert [ax.get_title() for ax in titled.axes] == ["a -> a", "b -> c"]
    try:
        plotting.show_image_rows(rows, groups=[("real", 3)])
    except ValueError as e:
        assert "longest row has 4" in str(e)
    else:
        raise AssertionError("groups that do not count the columns must be refused")


def test_image_blocks_pack_datasets_into_balanced_columns():
    one = np.zeros((2, 5, 5, 1), np.uint8)
    blocks = {"A": {f"a{i}": one for i in range(2)}, "B": {f"b{i}": one for i in range(8)}, "C": {f"c{i}": one for i in range(5)}}
    fig = plotting.show_image_blocks(blocks, ncols=2)
    columns = fig.subfigs
    assert len(columns) == 2
    titles = [[part._suptitle.get_text() for part in col.subfigs if part._suptitle] for col in columns]
    assert sorted(titles) == [["A", "C"], ["B"]]  # 8 rows beside 2 + 5, each column in the given order
    assert sum(len(ax.get_images()) for ax in fig.get_axes()) == 2 * 15


def test_confusion_shows_counts_on_row_shares_without_a_grid_across_the_cells():
    ax = plotting.plot_confusion(np.array([[3, 1], [0, 4]]), ["a", "b"])
    assert [t.get_text() for t in ax.texts] == ["3", "1", "0", "4"]
    assert np.allclose(ax.collections[0].get_array().ravel(), [0.75, 0.25, 0.0, 1.0])
    assert not any(line.get_visible() for line in ax.get_xgridlines() + ax.get_ygridlines())
