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


def with_repository(source: str, repository: str = "someone/s6-mnist", ref: str | None = None) -> str:
    """The setup cell as a learner edits it: REPOSITORY (and REF) set."""
    source = source.replace('REPOSITORY = "YOUR-GITHUB-USER/s6-mnist"', f'REPOSITORY = "{repository}"')
    return source if ref is None else source.replace('REF = "main"', f'REF = "{ref}"')


def test_setup_cell_fetches_from_the_branch_or_commit_the_learner_sets(cells, tmp_path, monkeypatch):
    import urllib.request

    fetched = []

    def fake_download(url, path):
        fetched.append(url)
        source = NOTEBOOK.parent / url.split("/abc123/", 1)[1]
        Path(path).write_bytes(source.read_bytes())

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(urllib.request, "urlretrieve", fake_download)
    exec(with_repository(setup_cell(cells), ref="abc123"), {})
    assert fetched[0] == "https://raw.githubusercontent.com/someone/s6-mnist/abc123/model.py" and len(fetched) == 4
    assert (tmp_path / "benchmarks" / "ledger.json").read_bytes() == (NOTEBOOK.parent / "benchmarks" / "ledger.json").read_bytes()
    assert not list(tmp_path.rglob("*.part"))


def test_a_download_that_breaks_off_leaves_no_file_under_the_real_name(cells, tmp_path, monkeypatch):
    import urllib.request

    def broken_download(url, path):
        Path(path).write_text("def half_a_mod")  # what a connection that dropped would leave
        raise urllib.request.ContentTooShortError("retrieval incomplete", None)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(urllib.request, "urlretrieve", broken_download)
    with pytest.raises(FileNotFoundError, match="could not fetch .*model.py.*at 'main'"):
        exec(with_repository(setup_cell(cells)), {})
    assert not (tmp_path / "model.py").exists() and not list(tmp_path.rglob("*.part"))


def test_no_code_cell_carries_test_scaffolding(cells):
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert not [source for source in code if "NBVAL" in source]
    tagged = [c for c in cells if "nbval-ignore-output" in c["metadata"].get("tags", [])]
    assert tagged and all(c["cell_type"] == "code" for c in tagged)
