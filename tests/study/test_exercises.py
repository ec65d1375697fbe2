"""The book's "Try this" exercises run as printed: each Python block of a chapter's exercises is executed from the
repository's root, on the committed results (no data, no GPU), as a reader would paste it."""

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = ("method", "uncertainty", "generation")


def _exercise_blocks(chapter: str) -> list[str]:
    text = (ROOT / "book" / f"{chapter}.md").read_text()
    section = text.split("\n## Try this\n", 1)
    assert len(section) == 2, f"book/{chapter}.md has no 'Try this' section"
    exercises = section[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```$", exercises, flags=re.S | re.M)


def test_every_chapter_of_a_reader_question_has_exercises_with_code():
    for chapter in CHAPTERS:
        blocks = _exercise_blocks(chapter)
        assert len(blocks) >= 2, f"book/{chapter}.md: {len(blocks)} exercises with code"
        assert all("import" in b for b in blocks), "each exercise's code runs on its own"


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_exercises_run_as_printed(chapter, monkeypatch, capsys):
    import matplotlib.pyplot as plt

    monkeypatch.chdir(ROOT)
    for i, block in enumerate(_exercise_blocks(chapter), 1):
        namespace: dict = {"__name__": "__main__"}
        try:
            exec(compile(block, f"book/{chapter}.md, exercise {i}", "exec"), namespace)
        finally:
            plt.close("all")
        printed = capsys.readouterr().out
        drew = bool(namespace.get("rows"))  # an exercise that draws instead of printing
        assert printed.strip() or drew, f"book/{chapter}.md exercise {i} shows nothing"
