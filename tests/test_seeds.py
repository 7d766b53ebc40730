"""benchmarks/seeds.py: how a sweep's records join those already in results.json."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import seeds  # noqa: E402


def record(seed: int, accuracy: float, recipe: str = "notebook", width: int | None = 8, epochs: int = 15,
           network: str = "Net", batch_size: int = 256) -> dict:
    return dict(recipe=recipe, network=network, batch_size=batch_size, seed=seed, width=width, epochs=epochs,
                last_test_acc=accuracy)


def test_merge_records_replaces_only_the_runs_it_reran():
    old = [record(1, 99.5), record(2, 99.6),
           record(1, 99.4, recipe="reference", width=None, epochs=19, network="ReferenceNet", batch_size=512)]
    new = [record(2, 99.7), record(3, 99.55)]
    merged = seeds.merge_records(old, new)
    assert [(r["seed"], r["last_test_acc"]) for r in merged] == [(1, 99.5), (1, 99.4), (2, 99.7), (3, 99.55)]
    # The reference's seed 1 is another run than the project's seed 1, and survives a project sweep.
    assert seeds.record_key(merged[1]) == ("reference", "ReferenceNet", 512, None, 1, 19, "float32")


def test_the_notebooks_recipe_on_another_network_is_another_run():
    net_run = record(1, 99.5)
    other_network = record(1, 99.45, width=None, network="PublicSmallNet")
    merged = seeds.merge_records([net_run], [other_network])
    assert [seeds.record_key(r) for r in merged] == [("notebook", "Net", 256, 8, 1, 15, "float32"),
                                                      ("notebook", "PublicSmallNet", 256, None, 1, 15, "float32")]


def test_the_notebooks_recipe_with_another_batch_size_is_another_run():
    def small_net_run(accuracy, batch_size):
        return record(1, accuracy, width=None, network="PublicSmallNet", batch_size=batch_size)

    merged = seeds.merge_records([small_net_run(99.45, 256)], [small_net_run(99.5, 128)])
    assert [(r["batch_size"], r["last_test_acc"]) for r in merged] == [(256, 99.45), (128, 99.5)]


def test_batch_size_is_refused_where_it_would_be_ignored(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        seeds.main(["--batch-size", "128", "--seeds", "1"])
    assert "--batch-size applies to --direct runs only" in capsys.readouterr().err


def test_add_to_results_keeps_what_it_does_not_rerun(tmp_path):
    path = tmp_path / "a new folder" / "results.json"
    seeds.add_to_results(path, [record(1, 99.5)])
    seeds.add_to_results(path, [record(1, 99.4, recipe="reference", width=None, epochs=19, network="ReferenceNet"),
                                record(1, 99.6)])
    assert [(r["recipe"], r["last_test_acc"]) for r in json.loads(path.read_text())] == [
        ("reference", 99.4), ("notebook", 99.6)]


def test_store_as_they_end_keeps_every_run_that_ended_before_an_interruption(tmp_path, capsys):
    path = tmp_path / "results.json"

    def runs_then_interrupted():
        for seed in (1, 2):
            yield dict(record(seed, 99.5 + seed / 100, recipe="reference", width=None, network="ReferenceNet"),
                       seconds_per_epoch=30.0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        seeds.store_as_they_end(runs_then_interrupted(), path)
    assert [r["seed"] for r in json.loads(path.read_text())] == [1, 2]
    assert "reference on ReferenceNet, batches of 256, seed 2: 99.52% at epoch 15" in capsys.readouterr().out


def test_history_record_keeps_the_recipe_network_seed_and_every_epochs_accuracy():
    recipe = seeds.Recipe(epochs=2, batch_size=128)
    history = seeds.History(recipe=recipe, network="PublicSmallNet", seed=3, parameters=7_918, device="CPU")
    history.record(0.5, 90.0, 0.2, 98.0, 10.0)
    history.record(0.1, 99.0, 0.02, 99.5, 12.0)
    record = seeds.history_record(history)
    assert seeds.record_key(record) == ("notebook", "PublicSmallNet", 128, None, 3, 2, "float32")
    assert record["last_test_acc"] == 99.5 and record["test_acc_per_epoch"] == [98.0, 99.5]
    assert record["seconds_per_epoch"] == 11.0 and record["settings"]["batch_size"] == 128


def test_the_recipe_built_from_the_notebooks_parameters_is_the_recipe_its_cell_builds():
    import json as json_module

    parameters = seeds.notebook_defaults()
    cells = json_module.loads(seeds.NOTEBOOK.read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if "RECIPE = utils.Recipe(" in "".join(c["source"]))
    built = source[source.index("utils.Recipe("):]
    built = built[:built.index("))") + 2]
    device = seeds.torch.device("cpu")
    assert eval(built, {"utils": seeds, "device": device, **parameters}) == seeds.notebook_recipe(parameters, device)


def test_importing_seeds_changes_neither_the_environment_nor_the_plotting_backend():
    import subprocess

    script = ("import os, sys, matplotlib; before = (dict(os.environ), matplotlib.get_backend()); "
              "sys.path.insert(0, 'benchmarks'); import seeds; "
              "assert (dict(os.environ), matplotlib.get_backend()) == before")
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(seeds.ROOT), capture_output=True, text=True,
                          env={k: v for k, v in __import__("os").environ.items() if k != "MPLBACKEND"})
    assert done.returncode == 0, done.stderr


def test_the_results_figure_shows_every_run_in_a_group_per_network_recipe_batch_and_length():
    runs = [dict(record(seed, 99.5 + seed / 100), parameters=18_538) for seed in (1, 2, 3)]
    runs += [dict(record(1, 99.52, recipe="reference", width=None, epochs=19, network="ReferenceNet", batch_size=512),
                  parameters=19_866)]
    fig = seeds.plot_accuracy_vs_parameters(runs)
    ax = fig.axes[0]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels[:2] == ["Net(n_channels=8), this project's training, batches of 256, 15 epochs (3 seeds)",
                          "ReferenceNet, its own recipe, rebuilt, batches of 512, 19 epochs (1 seeds)"]
    points = sorted(float(y) for collection in ax.collections[:2] for _, y in collection.get_offsets())
    assert points == pytest.approx([99.51, 99.52, 99.52, 99.53])


def test_runs_in_another_precision_are_other_runs():
    fp32 = dict(record(1, 99.5), settings={"precision": "float32"})
    bf16 = dict(record(1, 99.6), settings={"precision": "bfloat16"})
    assert len(seeds.merge_records([fp32], [bf16])) == 2 and len(seeds.merge_records([record(1, 99.4)], [fp32])) == 1
