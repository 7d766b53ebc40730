"""benchmarks/seeds.py: how a sweep's records join those already in results.json."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import seeds  # noqa: E402


def record(seed: int, accuracy: float, recipe: str | None = None, width: int | None = 8, epochs: int = 15) -> dict:
    config = {"recipe": recipe} if recipe else {}
    return dict(config=config, seed=seed, width=width, epochs=epochs, last_test_acc=accuracy)


def test_merge_records_replaces_only_the_runs_it_reran():
    old = [record(1, 99.5), record(2, 99.6), record(1, 99.4, recipe="reference", width=None, epochs=19)]
    new = [record(2, 99.7), record(3, 99.55)]
    merged = seeds.merge_records(old, new)
    assert [(r["seed"], r["last_test_acc"]) for r in merged] == [(1, 99.5), (1, 99.4), (2, 99.7), (3, 99.55)]
    # The reference's seed 1 is another run than the project's seed 1, and survives a project sweep.
    assert seeds.record_key(merged[1]) == ("reference", None, None, None, 1, 19)


def test_the_notebooks_recipe_on_another_network_is_another_run():
    net_run = record(1, 99.5)
    other_network = dict(record(1, 99.45, width=None), config={"architecture": "PublicSmallNet"})
    merged = seeds.merge_records([net_run], [other_network])
    assert [seeds.record_key(r) for r in merged] == [("project", "Net", None, 8, 1, 15),
                                                      ("project", "PublicSmallNet", None, None, 1, 15)]


def test_the_notebooks_recipe_with_another_batch_size_is_another_run():
    def small_net_run(accuracy, batch_size):
        return dict(record(1, accuracy, width=None), config={"architecture": "PublicSmallNet", "batch_size": batch_size})

    merged = seeds.merge_records([small_net_run(99.45, 256)], [small_net_run(99.5, 128)])
    assert [(r["config"]["batch_size"], r["last_test_acc"]) for r in merged] == [(256, 99.45), (128, 99.5)]


def test_batch_size_is_refused_where_it_would_be_ignored(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["seeds.py", "--batch-size", "128", "--seeds", "1"])
    with pytest.raises(SystemExit):
        seeds.main()
    assert "--batch-size applies to --direct runs only" in capsys.readouterr().err


def test_add_to_results_keeps_what_it_does_not_rerun(tmp_path):
    path = tmp_path / "a new folder" / "results.json"
    seeds.add_to_results(path, [record(1, 99.5)])
    seeds.add_to_results(path, [record(1, 99.4, recipe="reference", width=None, epochs=19), record(1, 99.6)])
    assert [(r["config"].get("recipe"), r["last_test_acc"]) for r in json.loads(path.read_text())] == [
        ("reference", 99.4), (None, 99.6)]


def test_store_as_they_end_keeps_every_run_that_ended_before_an_interruption(tmp_path, capsys):
    path = tmp_path / "results.json"

    def runs_then_interrupted():
        for seed in (1, 2):
            yield dict(record(seed, 99.5 + seed / 100, recipe="reference", width=None), seconds_per_epoch=30.0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        seeds.store_as_they_end(runs_then_interrupted(), path)
    assert [r["seed"] for r in json.loads(path.read_text())] == [1, 2]
    assert "reference seed 2: 99.52% at epoch 15" in capsys.readouterr().out


def test_history_record_keeps_the_seed_network_and_every_epochs_accuracy():
    history = seeds.History(parameters=7_918, device="CPU", config={"seed": 3, "architecture": "PublicSmallNet"})
    history.record(0.5, 90.0, 0.2, 98.0, 10.0)
    history.record(0.1, 99.0, 0.02, 99.5, 12.0)
    record = seeds.history_record(history, None)
    assert seeds.record_key(record) == ("project", "PublicSmallNet", None, None, 3, 2)
    assert record["last_test_acc"] == 99.5 and record["test_acc_per_epoch"] == [98.0, 99.5]
    assert record["seconds_per_epoch"] == 11.0
