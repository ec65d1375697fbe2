"""What an executed page shows of its own making (msflow_study.pages), on made-up notebooks and on the committed pages."""

import json
import re
from pathlib import Path

import nbformat
import pytest

from msflow_study import pages

ROOT = Path(__file__).resolve().parents[2]
EXECUTED = ROOT / "book" / "executed"


@pytest.mark.parametrize("rel, title", [
    ("bloodmnist-cpu/evaluate", "BloodMNIST, cpu: evaluation"),
    ("pneumoniamnist-cpu-w24/fidelity", "PneumoniaMNIST, cpu-w24: generation measured"),
    ("retinamnist-gpu/uncertainty", "RetinaMNIST, gpu: uncertainty against baselines"),
    ("retinamnist-recipes", "RetinaMNIST: recipes compared"),
    ("summary", None),
    ("bloodmnist-cpu/notes", None),
])
def test_page_titles_name_dataset_run_and_subject(rel, title):
    assert pages.page_title(rel) == title


def _page():
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"parameters": {"dataset": "bloodmnist", "run_name": "cpu", "data_root": "/home/me/data",
                                               "device": "cuda", "repeats": 3}}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Evaluation\n\nClassifies the test split."),
        nbformat.v4.new_code_cell('dataset: str = "pneumoniamnist"  # MedMNIST flag\nrun_name: str = "cpu"  # the run\n'
                                  'repeats: int = 0  # stochastic passes; 0 keeps the run\'s\nsolver: str = ""  # empty keeps the run\'s\n'
                                  'data_root: str = ""  # MedMNIST folder', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('# Parameters\ndataset = "bloodmnist"\ndata_root = "/home/me/data"',
                                  metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(1)"),
    ]
    return json.loads(nbformat.writes(nb))


def test_tidy_hides_the_parameters_titles_the_page_and_states_its_settings():
    nb = pages.tidy(_page(), "bloodmnist-cpu/evaluate")
    title, settings, params, injected, code = nb["cells"]
    assert "".join(title["source"]).startswith("# BloodMNIST, cpu: evaluation\n\nClassifies")
    assert "remove-cell" in params["metadata"]["tags"] and "remove-cell" in injected["metadata"]["tags"]
    assert "remove-cell" not in code["metadata"].get("tags", [])
    table = settings["source"]
    assert "| dataset | BloodMNIST | MedMNIST dataset |" in table
    assert "| repeats | `3` | stochastic passes; 0 keeps the run's |" in table  # the value it ran with, and its meaning
    assert "| solver | (empty) | empty keeps the run's |" in table
    assert "python -m msflow_study run --name cpu bloodmnist" in table
    assert "/home/me" not in table and "cuda" not in table  # where it ran is no setting
    assert nb["metadata"]["orphan"] is True  # its dataset's page links it; the table of contents does not
    assert pages.tidy(nb, "bloodmnist-cpu/evaluate") == nb  # idempotent
    assert "orphan" not in pages.tidy(_page(), "bloodmnist-recipes")["metadata"]  # a section of the compute chapter


def test_pages_without_a_run_keep_their_title_and_get_no_settings():
    nb = pages.tidy(_page(), "summary")
    assert len(nb["cells"]) == 4 and "".join(nb["cells"][0]["source"]).startswith("# Evaluation")
    assert "orphan" not in nb["metadata"]  # a chapter: in the table of contents
    assert "remove-cell" in nb["cells"][1]["metadata"]["tags"]


def test_tidy_file_writes_only_a_change(tmp_path):
    path = tmp_path / "bloodmnist-cpu" / "train.ipynb"
    path.parent.mkdir()
    path.write_text(json.dumps(_page()))
    assert pages.tidy_file(path, tmp_path) is True
    written = path.read_text()
    assert pages.tidy_file(path, tmp_path) is False and path.read_text() == written
    nbformat.validate(nbformat.reads(written, as_version=4))


def _shown(nb):
    """The text of the cells the book shows: sources (unless removed) and outputs."""
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if "remove-cell" in tags:
            continue
        if "remove-input" not in tags:
            yield "".join(cell["source"])
        for out in cell.get("outputs", []):
            yield json.dumps({k: v for k, v in out.get("data", {}).items() if k.startswith("text")}) + "".join(out.get("text", ""))


def test_the_committed_pages_are_tidy_and_show_no_machine_path():
    executed = sorted(EXECUTED.rglob("*.ipynb"))
    assert len(executed) > 10
    titles = []
    for path in executed:
        text = path.read_text()
        nb = json.loads(text)
        rel = path.relative_to(EXECUTED).with_suffix("").as_posix()
        assert nbformat.writes(nbformat.from_dict(pages.tidy(nb, rel))) == text, f"{rel} is not tidy: python -m msflow_study run tidies it"
        leaks = [m.group(0) for text in _shown(nb) for m in re.finditer(r"(/work|/home|/tmp|/Users|/root)/[\w./-]*", text)]
        assert not leaks, f"{rel} shows machine paths: {leaks[:3]}"
        titles.append("".join(nb["cells"][0]["source"]).splitlines()[0])
    duplicated = {t for t in titles if titles.count(t) > 1}
    assert not duplicated, f"pages share titles: {sorted(duplicated)}"


def test_every_image_a_committed_page_shows_is_a_captioned_numbered_figure():
    uncaptioned = []
    for path in sorted(EXECUTED.rglob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] != "code" or "remove-cell" in cell.get("metadata", {}).get("tags", []):
                continue
            shown = [o for o in cell.get("outputs", []) if o.get("output_type") in ("display_data", "execute_result")
                     and "scrapbook" not in o.get("metadata", {})]
            if any("image/png" in o.get("data", {}) for o in shown):
                figure = cell["metadata"].get("mystnb", {}).get("figure", {})
                if len(shown) != 1 or not figure.get("caption") or not figure.get("name"):
                    uncaptioned.append(f"{path.relative_to(EXECUTED)} cell {i}")
    assert not uncaptioned, f"images without a caption (a cell must draw one figure, named in pages.FIGURES): {uncaptioned}"


def test_a_dataset_page_names_the_validation_evidence_of_each_run():
    base = set(pages.FACTS)
    quoted = {"cpu": base | {"step", "select", "best_val", "best_val_auc", "readout"},
              "cpu-ens": base | {"members", "seeds", "run", "readout"}}
    page = pages.dataset_page("retinamnist", ["cpu-ens", "cpu", "gpu"], {"cpu": ["train"]}, quoted, recipes=True)
    assert ("Chosen on validation: the checkpoint of step {run}`retinamnist/cpu:step`, by its "
            "{run}`retinamnist/cpu:select` (validation accuracy {run}`retinamnist/cpu:best_val` %") in page
    assert "readout {run}`retinamnist/cpu:readout`, chosen on validation" in page
    assert "Seeds {run}`retinamnist/cpu-ens:seeds` of {run}`retinamnist/cpu-ens:run`, read together" in page
    assert "{run}`retinamnist/gpu:" not in page  # not glued: nothing quoted
    assert page.index("tab-item} cpu-ens") < page.index("tab-item} cpu\n") < page.index("tab-item} gpu")


def test_a_dataset_page_opens_with_the_headline_marked_then_the_others_in_order():
    page = pages.dataset_page("bloodmnist", ["gpu", "cpu-ens", "cpu", "cpu-lam05-x6"], {}, {}, recipes=False,
                              headline=("cpu-ens", "cpu-lam05-x6"))
    tabs = [line.removeprefix(":::{tab-item} ") for line in page.splitlines() if line.startswith(":::{tab-item}")]
    assert tabs == ["cpu-ens (headline)", "cpu-lam05-x6 (headline)", "gpu", "cpu"]
    assert ("the headline of the at-a-glance table ({doc}`../intro`): `cpu-ens`, the seeds read together, and "
            "`cpu-lam05-x6`, the recipe of those seeds.") in page
    # a headline that is not among the runs is not invented
    page = pages.dataset_page("bloodmnist", ["gpu", "cpu"], {}, {}, recipes=False, headline=("cpu-ens", ""))
    assert "headline" not in page and [line for line in page.splitlines() if "tab-item" in line][0].endswith("gpu")


def test_the_committed_dataset_pages_open_with_their_headline():
    from msflow_study.selection import headline_recipe

    for flag in ("pneumoniamnist", "bloodmnist", "retinamnist"):
        page = (ROOT / "book" / "datasets" / f"{flag}.md").read_text()
        tabs = [line for line in page.splitlines() if line.startswith(":::{tab-item}")]
        recipe = headline_recipe(ROOT / "results", flag)
        assert tabs[:2] == [":::{tab-item} cpu-ens (headline)", f":::{{tab-item}} {recipe} (headline)"], flag


def test_tidy_captions_a_known_figure_cell_with_one_image_and_names_it_after_its_page():
    image = nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
    note = nbformat.v4.new_output("display_data", data={"text/markdown": "a note"})
    one = nbformat.v4.new_code_cell('plotting.plot_accuracy_rejection(curves, title=f"{t}: accuracy after rejecting the most uncertain")')
    two = nbformat.v4.new_code_cell("note()\nplotting.plot_reliability(cals)")
    one.outputs, two.outputs = [image], [note, image]
    nb = json.loads(nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Evaluation"), one, two])))
    cells = pages.tidy(nb, "bloodmnist-cpu/evaluate")["cells"]
    figure = cells[-2]["metadata"]["mystnb"]["figure"]
    assert figure == {"caption": pages.FIGURES['accuracy after rejecting the most uncertain")'][1],
                      "name": "fig-bloodmnist-cpu-evaluate-arc"}
    assert "mystnb" not in cells[-1]["metadata"]  # two outputs: a caption would wrap the note as well
