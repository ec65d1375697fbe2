"""The explorer's figures carry their description: an HTML widget holding a PNG with alt text."""

import base64
import re

import ipywidgets as w
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from msflow_study import widgets  # noqa: E402


def test_a_panel_figure_is_a_png_with_its_alt_text():
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    out = w.HTML()
    widgets._show(out, fig, 'class 1: "pneumonia" & more')
    alt = re.search(r'alt="([^"]*)"', out.value).group(1)
    assert alt == "class 1: &quot;pneumonia&quot; &amp; more"
    data = re.search(r'src="data:image/png;base64,([^"]+)"', out.value).group(1)
    assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.get_fignums()  # the figure was closed


def test_the_codes_panel_describes_its_dataset():
    panel = widgets.codes_panel(("bloodmnist", "retinamnist"))
    dataset, out = panel.children
    assert "BloodMNIST&#x27;s 8 classes" in out.value  # html.escape writes ' as &#x27;
    dataset.value = "retinamnist"
    assert "RetinaMNIST&#x27;s 5 classes" in out.value


def test_a_static_view_shows_its_first_frame_and_carries_every_other_for_the_browser():
    import json

    from msflow_study import views

    frames = {f"class {c}": [(f"data:image/png;base64,{c}{i}", f"caption {c}{i}", f"alt of {c} at step {i}") for i in range(3)]
              for c in ("a", "b")}
    page = views.static_view(frames, "Title", "class", "steps", ["1", "5", "25"], start=2)
    assert page.count("<option") == 2 and 'max="2"' in page and 'value="2"' in page
    assert 'src="data:image/png;base64,a2" alt="alt of a at step 2"' in page and "<figcaption>caption a2</figcaption>" in page
    data = json.loads(re.search(r"F = (\[.*?\]), S = ", page).group(1))
    assert data[1][0] == ["data:image/png;base64,b0", "caption b0", "alt of b at step 0"]
    ids = re.findall(r'id="(msflow-view-\d+)"', page + views.static_view(frames, "T", "c", "s", ["1", "5", "25"]))
    assert len(set(ids)) == 2  # two views on one page do not share an id
    try:
        views.static_view({"a": frames["class a"][:2]}, "T", "c", "s", ["1", "5", "25"])
    except ValueError as err:
        assert "one frame per step (3)" in str(err)
    else:
        raise AssertionError("a choice without a frame for every step must be refused")


def test_the_static_views_of_a_smoke_explorer(tmp_path):
    from msflow_study import sandbox, views

    root = sandbox.data_root(True, datasets=["pneumoniamnist"])
    ex = widgets.build_explorer({"pneumoniamnist": sandbox.smoke_run("pneumoniamnist")}, root, "cpu")
    page = views.classify_view(ex, steps=2, per_dataset=2)
    assert page.count("<option") == 2 and 'max="2"' in page and "t = 0.00" in page  # 3 times: 1, 0.5, 0
    assert re.search(r'alt="PneumoniaMNIST test image \d+ \(true class [a-z]+\), its label map at t = 0.00', page)
    page = views.generate_view(ex, steps=(1, 3), samples=2)
    assert page.count("<option") == 2 and "3 Euler steps (3 network evaluations per image)" in page
    page = views.abstain_view(ex, fractions=(0.0, 0.5))
    assert "rejecting the 0 most uncertain" in page and page.count("data:image/png;base64,") == 3
    assert not plt.get_fignums()
