"""The benchmark records: results.json (one test-set run a record) and what is drawn from it, results.md and
accuracy_vs_parameters.png.

A record names the run (`name`: "notebook", a cross-validation candidate, or "reference") and holds its
whole resolved recipe (`recipe`: network, width, seed, epochs, precision and every training setting), so
two records are the same run exactly when their recipes are equal. The committed records live in
benchmarks/; a trial writes its own folder's (seeds.py --out), never these.
"""
from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from speed import REFERENCE_PARAMETERS, REFERENCE_PUBLISHED_ACCURACY
from utils import MIN_TEST_ACCURACY, History


def run_record(history: History, name: str = "notebook", **extra) -> dict:
    """The plain record of one training run, for results.json: its name, its whole resolved recipe, the
    device, every epoch's test accuracy and the mean seconds per epoch."""
    return dict(name=name, recipe=asdict(history.recipe), device=history.device, parameters=history.parameters,
                last_test_acc=history.test_acc[-1], test_acc_per_epoch=history.test_acc,
                seconds_per_epoch=statistics.mean(history.epoch_seconds), **extra)


def record_key(record: dict) -> str:
    """What makes two records the same run: their name and their whole recipe, seed and epochs included."""
    return json.dumps([record["name"], record["recipe"]], sort_keys=True)


def merge_records(old: list[dict], new: list[dict]) -> list[dict]:
    """The records of `old` that `new` does not re-run, then `new`."""
    replaced = {record_key(record) for record in new}
    return [record for record in old if record_key(record) not in replaced] + new


def add_to_results(path: Path, records: list[dict]) -> None:
    """Write `records` into the results file at `path` (creating its folder), in place of earlier records of
    the same runs; says which file it wrote."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(merge_records(old, records), indent=1))
    print(f"wrote {path} ({len(records)} run{'s' if len(records) != 1 else ''} added or replaced)", flush=True)


def store_as_they_end(records: Iterable[dict], path: Path) -> list[dict]:
    """Report each run and add it to the results file at `path` as soon as it ends, so that an interrupted
    sweep keeps what it finished; returns the records."""
    stored = []
    for record in records:
        recipe = record["recipe"]
        print(f"{run_group(record)}, seed {recipe['seed']}: {record['last_test_acc']:.2f}% at epoch "
              f"{recipe['epochs']} ({record['seconds_per_epoch']:.0f} s per epoch)", flush=True)
        add_to_results(path, [record])
        stored.append(record)
    return stored


def run_group(record: dict) -> str:
    """What a record's run shares with its other seeds: the network, the training, the batch size, the
    precision and the epochs."""
    recipe = record["recipe"]
    network = f"Net(n_channels={recipe['width']})" if recipe["network"] == "Net" else recipe["network"]
    training = {"notebook": "this project's training", "reference": "its own recipe, rebuilt",
                "public-8k": "its published training"}.get(record["name"], record["name"])
    if record["name"].startswith("shape-"):  # crossval.py's shape candidates: the notebook's recipe, in bfloat16
        training = "this project's training"
    precision = ", bfloat16" if recipe.get("precision") == "bfloat16" else ""
    return f"{network}, {training}{precision}, batches of {recipe['batch_size']}, {recipe['epochs']} epochs"


def group_runs(records: list[dict]) -> dict[str, list[dict]]:
    """Records by `run_group`, the groups in order of parameters, then name, batch size and epochs."""
    groups: dict[str, list[dict]] = {}
    order = sorted(records, key=lambda r: (r["parameters"], r["name"], r["recipe"]["batch_size"],
                                           r["recipe"]["epochs"], r["device"], r["recipe"]["seed"]))
    for record in order:
        groups.setdefault(f"{run_group(record)} on {record['device']}", []).append(record)
    return groups


def results_table(records: list[dict]) -> str:
    """Every run in the records, as Markdown: one row per group of seeds, each seed's last-epoch accuracy,
    the median, lowest and highest."""
    lines = ["| runs | parameters | seeds | last-epoch test accuracy per seed (%) | median | lowest | highest |",
             "|---|---:|---|---|---:|---:|---:|"]
    for label, runs in group_runs(records).items():
        last = [r["last_test_acc"] for r in runs]
        lines.append(f"| {label} | {runs[0]['parameters']:,} | {','.join(str(r['recipe']['seed']) for r in runs)} | "
                     f"{' '.join(f'{a:.2f}' for a in last)} | **{statistics.median(last):.3f}** | "
                     f"{min(last):.2f} | {max(last):.2f} |")
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_parameters(records: list[dict]) -> Figure:
    """Last-epoch test accuracy against parameter count, one point per run, a colour per group of seeds,
    with the reference design's published result and the 99.40% line."""
    fig, ax = plt.subplots(figsize=(8, 6.5))
    groups = {run_group(runs[0]): runs for runs in group_runs(records).values()}
    for index, (label, runs) in enumerate(groups.items()):
        offset = 60 * (index % 5 - 2)  # a small sideways jitter per group, so that groups of one network stay apart
        ax.scatter([r["parameters"] + offset for r in runs], [r["last_test_acc"] for r in runs],
                   label=f"{label} ({len(runs)} seeds)", alpha=0.8, s=22)
    ax.scatter([REFERENCE_PARAMETERS], [REFERENCE_PUBLISHED_ACCURACY], marker="*", s=160, color="black",
               label="the reference design, as published")
    ax.axhline(MIN_TEST_ACCURACY, color="grey", linestyle="--", label="99.40% target")
    ax.set(xlabel="trainable parameters", ylabel="last-epoch test accuracy (%)",
           title="One point per run (CPU, one thread a run)")
    ax.grid(alpha=0.3)
    # Below the axes: inside, a legend this long hides points.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1)
    fig.tight_layout()
    return fig


def write_summaries(out: Path) -> None:
    """results.md and accuracy_vs_parameters.png in `out`, both drawn from every record in its results.json
    (the figure from the CPU runs); says which files it wrote."""
    records = json.loads((out / "results.json").read_text())
    table, figure = out / "results.md", out / "accuracy_vs_parameters.png"
    table.write_text("Every run in results.json, drawn from it by `python benchmarks/seeds.py --figure-only` "
                     "(benchmarks/README.md says how each was made).\n\n" + results_table(records))
    plot_accuracy_vs_parameters([r for r in records if r["device"].startswith("CPU")]).savefig(figure, dpi=120)
    plt.close("all")
    print(f"wrote {table}\nwrote {figure}")
