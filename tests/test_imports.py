"""msflow is a library that knows no study: no module of it imports the study's code, names one of its runs, or takes
part in an import circle; each imports alone in a fresh interpreter."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "msflow"
MODULES = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__main__")


def _imports(path: Path, top_level: bool) -> set[str]:
    """The modules ``path`` imports (``from msflow import x`` counts as ``msflow.x``); with ``top_level``, only those
    imported when the module is (not the deferred imports inside functions)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in (tree.body if top_level else ast.walk(tree)):
        if isinstance(node, ast.ImportFrom) and node.module:
            out |= {f"msflow.{a.name}" for a in node.names} if node.module == "msflow" else {node.module}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_the_library_imports_no_study_code_and_names_no_run_of_the_study():
    for path in sorted(PKG.glob("*.py")):
        bad = [m for m in _imports(path, top_level=False) if m.split(".")[0] in ("msflow_study", "papermill")]
        assert not bad, f"{path.name} imports {bad}: the library must not depend on the study"
        found = re.findall(r"papermill|EDITIONS|cpu-lam|cpu-w24|gpu-long|msflow_study", path.read_text())
        assert not found, f"{path.name} mentions {sorted(set(found))}: experiments live in experiments/, the study in msflow_study/"


def test_the_library_s_imports_form_no_circle():
    graph = {m: {i.split(".")[1] for i in _imports(PKG / f"{m}.py", top_level=True)
                 if i.startswith("msflow.") and i.split(".")[1] in MODULES and i.split(".")[1] != m} for m in MODULES}
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", f"import circle: {' -> '.join(path + [m])}"
        state[m] = "open"
        for dep in sorted(graph[m]):
            visit(dep, path + [m])
        state[m] = "done"

    for m in MODULES:
        visit(m, [])
    assert "files" in graph and not graph["files"] - {"__init__"}  # plain file I/O sits below everything


@pytest.mark.slow  # an interpreter per module
def test_each_module_imports_alone_in_a_fresh_interpreter():
    failed = {}
    for i in range(0, len(MODULES), 4):  # a few interpreters at a time: each imports torch
        batch = {m: subprocess.Popen([sys.executable, "-c", f"import msflow.{m}" if m != "__init__" else "import msflow"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for m in MODULES[i:i + 4]}
        for m, proc in batch.items():
            _, err = proc.communicate()
            if proc.returncode:
                failed[m] = err.strip().splitlines()[-1]
    assert not failed, failed
