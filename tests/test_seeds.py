"""benchmarks/seeds.py and benchmarks/records.py: what a run records, how records join, what a trial may write."""
import hashlib
import json
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

import records
import seeds
from utils import History, Recipe

BENCHMARKS = Path(seeds.ROOT) / "benchmarks"


def record(seed: int, accuracy: float, name: str = "notebook", **recipe_changes) -> dict:
    """A results.json record of a run of `Recipe(seed=seed, **recipe_changes)`."""
    recipe = asdict(Recipe(seed=seed, precision="float32", **recipe_changes))
    return dict(name=name, recipe=recipe, device="CPU (2 cores, 1 thread)", parameters=18_538,
                last_test_acc=accuracy, test_acc_per_epoch=[accuracy], seconds_per_epoch=12.0)


def test_merge_records_replaces_only_the_runs_it_reran():
    old = [record(1, 99.5), record(2, 99.6), record(1, 99.4, name="public-8k")]
    new = [record(2, 99.7), record(3, 99.55)]
    merged = records.merge_records(old, new)
    assert [(r["name"], r["recipe"]["seed"], r["last_test_acc"]) for r in merged] == [
        ("notebook", 1, 99.5), ("public-8k", 1, 99.4), ("notebook", 2, 99.7), ("notebook", 3, 99.55)]


@pytest.mark.parametrize("change", [dict(network="PublicSmallNet", width=None), dict(batch_size=128),
                                    dict(precision="bfloat16"), dict(epochs=1), dict(dropout=0.1), dict(width=5)])
def test_a_run_that_differs_in_any_setting_of_its_recipe_is_another_run(change):
    base = record(1, 99.5)
    other = dict(base, recipe=asdict(replace(Recipe.from_dict(base["recipe"]), **change)), last_test_acc=99.4)
    assert len(records.merge_records([base], [other])) == 2
    assert len(records.merge_records([base], [dict(base, last_test_acc=99.6)])) == 1


def test_add_to_results_keeps_what_it_does_not_rerun_and_says_which_file_it_wrote(tmp_path, capsys):
    path = tmp_path / "a new folder" / "results.json"
    records.add_to_results(path, [record(1, 99.5)])
    records.add_to_results(path, [record(1, 99.4, name="public-8k"), record(1, 99.6)])
    assert [(r["name"], r["last_test_acc"]) for r in json.loads(path.read_text())] == [
        ("public-8k", 99.4), ("notebook", 99.6)]
    assert f"wrote {path}" in capsys.readouterr().out


def test_store_as_they_end_keeps_every_run_that_ended_before_an_interruption(tmp_path, capsys):
    path = tmp_path / "results.json"

    def runs_then_interrupted():
        for seed in (1, 2):
            yield record(seed, 99.5 + seed / 100, epochs=15)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        records.store_as_they_end(runs_then_interrupted(), path)
    assert [r["recipe"]["seed"] for r in json.loads(path.read_text())] == [1, 2]
    assert ("Net(n_channels=8), this project's training, batches of 256, 15 epochs, seed 2: 99.52% at epoch 15"
            in capsys.readouterr().out)


def test_run_record_keeps_the_whole_resolved_recipe_and_every_epochs_accuracy():
    recipe = Recipe(network="PublicSmallNet", epochs=2, batch_size=128, seed=3, precision="float32")
    history = History(recipe=recipe, parameters=7_918, device="CPU")
    history.record(0.5, 90.0, 0.2, 98.0, 10.0)
    history.record(0.1, 99.0, 0.02, 99.5, 12.0)
    run = records.run_record(history)
    assert Recipe.from_dict(run["recipe"]) == recipe
    assert run["last_test_acc"] == 99.5 and run["test_acc_per_epoch"] == [98.0, 99.5]
    assert run["seconds_per_epoch"] == 11.0 and run["name"] == "notebook"


def test_the_recipe_built_from_the_notebooks_parameters_is_the_recipe_its_cell_builds():
    import torch

    parameters = seeds.notebook_defaults()
    cells = json.loads(seeds.NOTEBOOK.read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if "RECIPE = utils.Recipe(" in "".join(c["source"]))
    built = source[source.index("utils.Recipe("):]
    built = built[:built.index(".resolved(device)")]
    assert eval(built, {"utils": seeds, **parameters}) == seeds.notebook_recipe(parameters)
    assert seeds.notebook_recipe(parameters).resolved(torch.device("cpu")).precision in ("float32", "bfloat16")


def test_importing_seeds_changes_neither_the_environment_nor_the_plotting_backend():
    script = ("import os, sys, matplotlib; before = (dict(os.environ), matplotlib.get_backend()); "
              "import seeds; assert (dict(os.environ), matplotlib.get_backend()) == before")
    environment = {k: v for k, v in __import__("os").environ.items() if k != "MPLBACKEND"}
    environment["PYTHONPATH"] = f"{seeds.ROOT}:{BENCHMARKS}"
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(seeds.ROOT), capture_output=True, text=True,
                          env=environment)
    assert done.returncode == 0, done.stderr


def test_the_results_figure_and_table_show_every_run_in_a_group_of_seeds():
    runs = [record(seed, 99.5 + seed / 100, epochs=15) for seed in (1, 2, 3)]
    reference = dict(record(1, 99.52, name="reference"), parameters=19_866)
    reference["recipe"] = dict(reference["recipe"], network="ReferenceNet", width=None, batch_size=512, epochs=19)
    runs.append(reference)
    fig = records.plot_accuracy_vs_parameters(runs)
    ax = fig.axes[0]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels[:2] == ["Net(n_channels=8), this project's training, batches of 256, 15 epochs (3 seeds)",
                          "ReferenceNet, its own recipe, rebuilt, batches of 512, 19 epochs (1 seeds)"]
    points = sorted(float(y) for collection in ax.collections[:2] for _, y in collection.get_offsets())
    assert points == pytest.approx([99.51, 99.52, 99.52, 99.53])
    table = records.results_table(runs)
    assert "| 1,2,3 | 99.51 99.52 99.53 | **99.520** | 99.51 | 99.53 |" in table and "ReferenceNet" in table
    shape = dict(record(1, 99.50, name="shape-small-unpadded-14"))  # a crossval candidate's recipe on the test set
    shape["recipe"] = dict(shape["recipe"], network="shape:small-unpadded-14", width=None, precision="bfloat16")
    assert records.run_group(shape) == ("shape:small-unpadded-14, this project's training, bfloat16, "
                                        "batches of 256, 19 epochs")


def test_the_committed_records_each_name_a_recipe_that_rebuilds():
    for path in (BENCHMARKS / "results.json", BENCHMARKS / "gpu" / "results.json"):
        for run in json.loads(path.read_text()):
            if run["name"] == "reference":
                assert run["recipe"]["network"] == "ReferenceNet"
            else:
                assert asdict(Recipe.from_dict(run["recipe"])) == run["recipe"]
            assert len({records.record_key(r) for r in json.loads(path.read_text())}) == len(
                json.loads(path.read_text()))


@pytest.mark.parametrize("arguments, message", [
    (["--direct", "--epochs", "0"], "expected a whole number of at least 1, got 0"),
    (["--direct", "--widths", "0"], "expected a whole number of at least 1"),
    (["--direct", "--processes", "0"], "expected a whole number of at least 1"),
    (["--batch-size", "128"], "--batch-size applies to --direct runs only"),
    (["--direct", "--architecture", "PublicSmallNet", "--widths", "8"], "PublicSmallNet has one fixed width"),
    (["--direct", "--seeds", "-1"], "seeds must be whole numbers of at least 0"),
    (["--candidate", "nonsense"], "invalid choice"),
    (["--figure-only", "--out", "/nonexistent"], "which does not exist"),
])
def test_bad_command_lines_are_refused_before_any_run_starts(arguments, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        seeds.parse_arguments(arguments)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def digest(folder: Path) -> dict[str, str]:
    """The SHA-256 of every file of a folder (recursively)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_one_epoch_trial_writes_its_own_folder_and_leaves_every_committed_file_as_it_was(tmp_path, monkeypatch,
                                                                                          capsys):
    monkeypatch.setattr(seeds, "TRIALS", tmp_path / "trials")
    committed = digest(BENCHMARKS) | {"README.md": digest(Path(seeds.ROOT))["README.md"]}
    seeds.main(["--direct", "--epochs", "1", "--seeds", "1"])
    assert digest(BENCHMARKS) | {"README.md": digest(Path(seeds.ROOT))["README.md"]} == committed
    written = json.loads((tmp_path / "trials" / "results.json").read_text())
    assert [(r["recipe"]["epochs"], r["recipe"]["seed"]) for r in written] == [(1, 1)]
    out = capsys.readouterr().out
    for name in ("results.json", "results.md", "accuracy_vs_parameters.png"):
        assert f"wrote {tmp_path / 'trials' / name}" in out
