"""Tests of the stored notebook itself: its Colab setup cell and what it keeps on disk."""
import ast
import json
import shutil
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "S6.ipynb"


@pytest.fixture(scope="module")
def cells():
    return json.loads(NOTEBOOK.read_text())["cells"]


def setup_cell(cells):
    return next("".join(c["source"]) for c in cells if c["cell_type"] == "code" and "REPOSITORY =" in "".join(c["source"]))


def test_setup_cell_without_helpers_and_with_the_placeholder_says_both_ways_forward(cells, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        exec(setup_cell(cells), {})
    message = str(error.value)
    assert "model.py, utils.py, benchmarks/ledger.json, benchmarks/results.json not found" in message
    assert "REPOSITORY" in message and "Files pane" in message


def test_setup_cell_fetches_nothing_when_the_helpers_are_there(cells, tmp_path, monkeypatch):
    (tmp_path / "benchmarks").mkdir()
    for name in ("model.py", "utils.py", "benchmarks/ledger.json", "benchmarks/results.json"):
        shutil.copy(NOTEBOOK.parent / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    exec(setup_cell(cells), {})  # the placeholder is harmless: nothing is missing, nothing is fetched
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "benchmarks", "benchmarks/ledger.json", "benchmarks/results.json", "model.py", "utils.py"]


def test_stored_notebook_keeps_no_widget_state(cells):
    notebook = json.loads(NOTEBOOK.read_text())
    assert "widgets" not in notebook["metadata"]
    widget_outputs = [o for c in cells if c["cell_type"] == "code" for o in c["outputs"]
                      if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widget_outputs == []


def parameter(cells, name: str):
    """The value the notebook's `parameters` cell gives `name`."""
    source = next("".join(c["source"]) for c in cells if "parameters" in c["metadata"].get("tags", []))
    assignment = next(node for node in ast.parse(source).body
                      if isinstance(node, ast.Assign) and node.targets[0].id == name)
    return ast.literal_eval(assignment.value)


def test_stored_notebook_is_a_complete_run(cells):
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code)
    training = next(c for c in code if "utils.train_network(" in "".join(c["source"]))
    epoch_lines = [line for o in training["outputs"] if o["output_type"] == "stream"
                   for line in "".join(o["text"]).splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == parameter(cells, "EPOCHS")
