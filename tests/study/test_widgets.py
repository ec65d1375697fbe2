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
