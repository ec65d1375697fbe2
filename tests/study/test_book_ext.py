"""The book's Sphinx extension: the {run} role pastes a run's numbers glued by a recipes page, and a fact that
page did not glue is reported, never rendered as something else."""

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("myst_nb")


def _book(tmp_path: Path, prose: str) -> subprocess.CompletedProcess:
    (tmp_path / "book" / "executed").mkdir(parents=True, exist_ok=True)
    (tmp_path / "conf.py").write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
                                      "extensions = ['myst_nb', 'offline_book']\nnb_execution_mode = 'off'\n"
                                      "exclude_patterns = ['_build']\n")
    (tmp_path / "index.md").write_text("# Book\n\n```{toctree}\nbook/chapter\nbook/executed/bloodmnist-recipes\n```\n")
    (tmp_path / "book" / "chapter.md").write_text(f"# Chapter\n\n{prose}\n")
    cell = nbformat.v4.new_code_cell("glue(...)")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": repr(value)},
                                           metadata={"scrapbook": {"name": key, "mime_prefix": ""}})
                    for key, value in {"cpu-lam05__acc": "95.59", "cpu-lam05__step": "8000"}.items()]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Recipes"), cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "book" / "executed" / "bloodmnist-recipes.ipynb")
    return subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", str(tmp_path), str(tmp_path / "_build")],
                          capture_output=True, text=True, timeout=300)


def test_run_role_pastes_the_glued_fact(tmp_path):
    done = _book(tmp_path, "It reads {run}`bloodmnist/cpu-lam05:acc` % at step {run}`bloodmnist/cpu-lam05:step`.")
    assert done.returncode == 0 and "WARNING" not in done.stderr and "ERROR" not in done.stderr, done.stderr
    html = (tmp_path / "_build" / "book" / "chapter.html").read_text()
    assert '<span class="pasted-text">95.59</span> % at step <span class="pasted-text">8000</span>' in html


def test_run_role_reports_what_it_cannot_paste(tmp_path):
    done = _book(tmp_path, "{run}`bloodmnist/cpu-x6:acc`, {run}`no-slash`, {run}`dermamnist/cpu:acc`.")
    assert "Glue reference 'cpu-x6__acc' not found in doc 'book/executed/bloodmnist-recipes'" in done.stderr
    assert "{run} wants DATASET/RUN:FACT" in done.stderr and "got 'no-slash'" in done.stderr
    assert "no recipes page executed/dermamnist-recipes in the book" in done.stderr


def test_run_role_marks_a_run_whose_weights_were_never_kept(tmp_path):
    for run, sha in (("cpu-lam05", None), ("cpu-lam05-x6", "ab" * 32)):
        folder = tmp_path / "results" / f"bloodmnist-{run}"
        folder.mkdir(parents=True)
        (folder / "run.json").write_text('{"checkpoint": {"sha256": %s}}' % ("null" if sha is None else f'"{sha}"'))
    done = _book(tmp_path, "(no-checkpoint)=\n\nLost: {run}`bloodmnist/cpu-lam05:acc` %; kept: "
                           "{run}`bloodmnist/cpu-lam05:step`.")
    assert done.returncode == 0 and "WARNING" not in done.stderr, done.stderr
    html = (tmp_path / "_build" / "book" / "chapter.html").read_text()
    assert html.count("\u2020") == 2 and html.count('class="no-checkpoint"') == 2 and 'href="#no-checkpoint"' in html
    (tmp_path / "results" / "bloodmnist-cpu-lam05" / "run.json").write_text('{"checkpoint": {"sha256": "%s"}}' % ("cd" * 32))
    done = _book(tmp_path, "Kept: {run}`bloodmnist/cpu-lam05:acc` %.")
    assert "\u2020" not in (tmp_path / "_build" / "book" / "chapter.html").read_text()


def test_glued_figure_numbers_and_captions_an_image_glued_by_another_page(tmp_path):
    (tmp_path / "executed").mkdir()
    (tmp_path / "conf.py").write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
                                      "extensions = ['myst_nb', 'offline_book']\nnb_execution_mode = 'off'\n"
                                      "numfig = True\nexclude_patterns = ['_build']\n")
    (tmp_path / "index.md").write_text("# Book\n\n```{toctree}\nchapter\nexecuted/page\n```\n")
    (tmp_path / "chapter.md").write_text("# Chapter\n\nSee {numref}`fig-two`.\n\n```{glued-figure} executed/page.ipynb::pic\n"
                                         ":name: fig-two\n\nThe two flows, drawn by a network.\n```\n")
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    cell = nbformat.v4.new_code_cell("glue('pic', fig)")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"},
                                           metadata={"scrapbook": {"name": "pic", "mime_prefix": ""}})]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Page"), cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "executed" / "page.ipynb")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", str(tmp_path), str(tmp_path / "_build")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "WARNING" not in done.stderr, done.stderr
    html = (tmp_path / "_build" / "chapter.html").read_text()
    assert '<figure class="align-default" id="fig-two">' in html and "<img alt=" in html
    assert "Fig. 1 </span>" in html and "The two flows, drawn by a network." in html
    assert 'href="#fig-two"' in html and "Fig. 1</span>" in html  # the reference is numbered


def test_figures_of_a_page_outside_the_table_of_contents_are_numbered_too(tmp_path):
    (tmp_path / "conf.py").write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
                                      "extensions = ['myst_nb', 'offline_book']\nnb_execution_mode = 'off'\nnumfig = True\n"
                                      "exclude_patterns = ['_build']\n")
    (tmp_path / "index.md").write_text("# Book\n\n```{toctree}\nchapter\n```\n")
    figure = "```{{figure}} {0}.png\n:name: fig-{0}\n\nThe caption of {0}.\n```\n"
    (tmp_path / "chapter.md").write_text("# Chapter\n\n" + figure.format("a") + "\n" + figure.format("b"))
    (tmp_path / "run.md").write_text("---\norphan: true\n---\n# A run\n\n" + figure.format("c") + "\n" + figure.format("d")
                                     + "\n{numref}`fig-d` is the second.\n")
    for name in "abcd":
        (tmp_path / f"{name}.png").write_bytes(b"")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", str(tmp_path), str(tmp_path / "_build")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    numbers = lambda page: re.findall(r'caption-number">Fig\. (\d+)', (tmp_path / "_build" / f"{page}.html").read_text())
    assert numbers("chapter") == ["1", "2"]  # Sphinx's own numbering, untouched
    assert numbers("run") == ["1", "2"]  # the orphan page numbers its own
    assert "Fig. 2 is the second" in re.sub(r"<[^>]+>", "", (tmp_path / "_build" / "run.html").read_text())
