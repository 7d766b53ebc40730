"""Run S6.ipynb headless (papermill) for several seeds and widths and tabulate the last-epoch results.

    python benchmarks/seeds.py --widths 8 --seeds 1 2 3 4 5 6 7 8 --store-notebook --processes 2
writes each run's artifacts/seeds/w{width}_s{seed}/history.json, then benchmarks/results.md (a Markdown
table), benchmarks/results.json (one record per run) and benchmarks/accuracy_vs_parameters.png (test
accuracy against parameter count, one point a run).
With --store-notebook, the run with the notebook's own default parameters is executed unchanged and
saved back into S6.ipynb, so that the stored notebook is the table's row for those parameters;
--store-only does just that, and nothing else.

    python benchmarks/seeds.py --direct --device cuda --widths 8 --seeds $(seq 1 16) --processes 8 --out benchmarks/gpu
skips the notebook: each run calls the notebook's training directly (`utils.fit` with the notebook's
default parameters, this seed and width), many at once on one device. On a GPU that makes a 16-seed
sweep a matter of minutes.

    python benchmarks/seeds.py --reference --device cpu --seeds 1 2 3 --epochs 19 --processes 2
trains the reference recipe instead (speed.py's `run_reference`: its network, its per-image loader with
two worker processes, its step schedule) on `--device` (on the CPU, one thread each), and adds its runs to
results.json.

    python benchmarks/seeds.py --candidate public-8k --seeds 1 2 3 4 5 --processes 2
trains a candidate of the cross-validation ledger (`crossval.py --list`) with its own recipe on all
60,000 training images, one thread each, and adds its last-epoch test accuracy for each seed to
results.json: how a recipe chosen on the folds does on the test set.
Every mode replaces only the records it re-ran: those of other recipes, seeds or widths are kept.
"""
from __future__ import annotations

import argparse
import ast
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

import matplotlib.pyplot as plt
import nbformat
import papermill
import torch
from matplotlib.figure import Figure
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from model import ARCHITECTURES  # noqa: E402
from crossval import CANDIDATES, train_candidate  # noqa: E402
from speed import REFERENCE_PARAMETERS, REFERENCE_PUBLISHED_ACCURACY, REFERENCE_TRAINING, run_reference  # noqa: E402
from utils import (MIN_TEST_ACCURACY, History, Recipe, TensorLoader, device_name, mnist_tensors,  # noqa: E402
                   pick_precision, save_model, seed_everything, train_network)

NOTEBOOK = ROOT / "S6.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


# ------------------------------------------------------------------------------- the notebook itself


def notebook_defaults() -> dict:
    """The values in the notebook's `parameters` cell."""
    return {name: ast.literal_eval(p["default"]) for name, p in papermill.inspect_notebook(str(NOTEBOOK)).items()}


def notebook_recipe(parameters: dict, device: torch.device) -> Recipe:
    """The Recipe the notebook builds from its parameters on `device` (the cell after the `parameters` cell)."""
    return Recipe(epochs=parameters["EPOCHS"], max_lr=parameters["MAX_LR"], schedule=parameters["SCHEDULE"],
                  batch_size=parameters["BATCH_SIZE"], clean_final_epochs=parameters["CLEAN_FINAL_EPOCHS"],
                  precision=pick_precision(device))


def run_notebook(width: int, seed: int, epochs: int, artifacts: Path) -> History:
    """Execute the notebook once with these parameters (papermill, into a scratch copy); returns the history.

    A run that misses a constraint fails the notebook's last cell, after its history is saved: it is
    reported like any other run, since leaving it out would flatter the table.
    """
    with tempfile.TemporaryDirectory() as scratch:
        try:
            papermill.execute_notebook(
                str(NOTEBOOK), str(Path(scratch) / "S6.out.ipynb"), cwd=str(ROOT), progress_bar=False,
                parameters=dict(SEED=seed, N_CHANNELS=width, EPOCHS=epochs, ARTIFACTS_DIR=str(artifacts)))
        except papermill.PapermillExecutionError as error:
            if error.ename != "AssertionError" or not (artifacts / "history.json").exists():
                raise
            print(f"width {width} seed {seed} missed a constraint (the notebook's last cell failed)", flush=True)
    return History.load(artifacts / "history.json")


def run_and_store_notebook() -> None:
    """Execute S6.ipynb unchanged, as `jupyter nbconvert --execute --inplace` would, and save it in place,
    without the progress bars' widgets: they are live when a person runs the notebook, but stored they
    are only state to diff, and GitHub shows them empty."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=None, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if WIDGET_VIEW not in output.get("data", {})]
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, NOTEBOOK)


# ------------------------------------------------------------------------------------- the records


def history_record(history: History, recipe: str = "notebook", **extra) -> dict:
    """The plain record of one training run, for results.json: which recipe (by name) on which network
    with which batch size, the seed, every epoch's test accuracy, and the recipe's settings."""
    return dict(recipe=recipe, network=history.network, width=history.width,
                batch_size=history.recipe.batch_size, seed=history.seed, epochs=history.epochs,
                parameters=history.parameters, last_test_acc=history.test_acc[-1],
                test_acc_per_epoch=history.test_acc, device=history.device,
                seconds_per_epoch=statistics.mean(history.epoch_seconds), settings=asdict(history.recipe), **extra)


def record_key(record: dict) -> tuple:
    """What makes two results.json records the same run: the recipe, the network, the batch size, the
    network's width, the seed, the epochs and the precision."""
    return (*(record[key] for key in ("recipe", "network", "batch_size", "width", "seed", "epochs")),
            record.get("settings", {}).get("precision", "float32"))


def merge_records(old: list[dict], new: list[dict]) -> list[dict]:
    """The records of `old` that `new` does not re-run, then `new`."""
    replaced = {record_key(record) for record in new}
    return [record for record in old if record_key(record) not in replaced] + new


def add_to_results(path: Path, records: list[dict]) -> None:
    """Write `records` into the results file at `path` (creating its folder), in place of earlier records of
    the same runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(merge_records(old, records), indent=1))


def store_as_they_end(records: Iterable[dict], path: Path) -> list[dict]:
    """Report each run and add it to the results file at `path` as soon as it ends, so that an interrupted
    sweep keeps what it finished; returns the records."""
    stored = []
    for record in records:
        print(f"{record['recipe']} on {record['network']}, batches of {record['batch_size']}, seed "
              f"{record['seed']}: {record['last_test_acc']:.2f}% at epoch {record['epochs']} "
              f"({record['seconds_per_epoch']:.0f} s per epoch)", flush=True)
        add_to_results(path, [record])
        stored.append(record)
    return stored


def results_table(records: list[dict]) -> str:
    """One Markdown row per run of Net, then the median, lowest and highest of each width."""
    records = sorted(records, key=lambda r: (-r["width"], r["seed"]))
    lines = ["| width | parameters | seed | epochs | last-epoch test acc | best-epoch test acc | s/epoch | "
             "whole notebook | device |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in records:
        minutes = "n/a" if r.get("notebook_minutes") is None else f"{r['notebook_minutes']:.1f} min"
        lines.append(f"| {r['width']} | {r['parameters']:,} | {r['seed']} | {r['epochs']} | "
                     f"**{r['last_test_acc']:.2f}%** | {max(r['test_acc_per_epoch']):.2f}% | "
                     f"{r['seconds_per_epoch']:.1f} | {minutes} | {r['device']} |")
    lines += ["", "| width | parameters | runs | median last-epoch acc | lowest | highest |", "|---:|---:|---:|---:|---:|---:|"]
    for width in sorted({r["width"] for r in records}, reverse=True):
        last = [r["last_test_acc"] for r in records if r["width"] == width]
        parameters = next(r["parameters"] for r in records if r["width"] == width)
        lines.append(f"| {width} | {parameters:,} | {len(last)} | **{statistics.median(last):.2f}%** | "
                     f"{min(last):.2f}% | {max(last):.2f}% |")
    return "\n".join(lines) + "\n"


def run_group(record: dict) -> str:
    """The legend label of a record's group: the network, the recipe, the batch size and the epochs."""
    network = f"Net(n_channels={record['width']})" if record["network"] == "Net" else record["network"]
    recipe = {"notebook": "this project's training", "reference": "its own recipe, rebuilt",
              "public-8k": "its published training"}.get(record["recipe"], record["recipe"])
    precision = record.get("settings", {}).get("precision", "float32")
    return (f"{network}, {recipe}{', bfloat16' if precision == 'bfloat16' else ''}, batches of "
            f"{record['batch_size']}, {record['epochs']} epochs")


def plot_accuracy_vs_parameters(records: list[dict]) -> Figure:
    """Last-epoch test accuracy against parameter count, one point per run, a colour per network, recipe,
    batch size and length, with the reference design's published result and the 99.40% line."""
    fig, ax = plt.subplots(figsize=(8, 5))
    groups: dict[str, list[dict]] = {}
    for record in sorted(records, key=lambda r: (r["parameters"], r["recipe"], r["batch_size"], r["epochs"])):
        groups.setdefault(run_group(record), []).append(record)
    for label, runs in groups.items():
        # A small sideways jitter per group, so that groups of one network stay apart.
        offset = 60 * (list(groups).index(label) % 5 - 2)
        ax.scatter([r["parameters"] + offset for r in runs], [r["last_test_acc"] for r in runs],
                   label=f"{label} ({len(runs)} seeds)", alpha=0.8, s=22)
    ax.scatter([REFERENCE_PARAMETERS], [REFERENCE_PUBLISHED_ACCURACY], marker="*", s=160, color="black",
               label="the reference design, as published")
    ax.axhline(MIN_TEST_ACCURACY, color="grey", linestyle="--", label="99.40% target")
    ax.set(xlabel="trainable parameters", ylabel="last-epoch test accuracy (%)",
           title="One point per run (CPU, one thread a run)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center")  # the middle of the axis, between the small and the large networks
    fig.tight_layout()
    return fig


def draw_figure(out: Path) -> None:
    """accuracy_vs_parameters.png in `out`, from every CPU run in its results.json."""
    records = json.loads((out / "results.json").read_text())
    plot_accuracy_vs_parameters([r for r in records if r["device"].startswith("CPU")]).savefig(
        out / "accuracy_vs_parameters.png", dpi=120)


def write_results(records: list[dict], out: Path, total_minutes: float) -> None:
    """Write results.md for a sweep of Net's widths into `out`, and redraw accuracy_vs_parameters.png (its
    runs are in results.json already)."""
    table = results_table(records)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(
        f"Sweep: `python benchmarks/seeds.py {' '.join(sys.argv[1:])}`, {total_minutes:.0f} minutes wall time "
        f"for the runs it executed.\n\n{table}")
    draw_figure(out)
    print(table)
    print(f"wall time of this sweep: {total_minutes:.1f} minutes")


# ------------------------------------------------------------------------------- one run of each kind


def on_one_thread_if_cpu(device: torch.device) -> None:
    """Runs side by side on the CPU take one thread each, so that they do not fight over the cores."""
    if device.type == "cpu":
        torch.set_num_threads(1)


def direct_run(job: tuple[str, int | None, int, str, dict, Path | None]) -> dict:
    """The notebook's training without the notebook: `utils.train_network`, as its training cell calls it,
    with its parameters (`parameters`) and this network, width and seed, on the device named; returns the
    run's record, and saves the trained weights under `weights` (if given) as w{width}_s{seed}/model.pt."""
    architecture, width, seed, device_type, parameters, weights = job
    device = torch.device(device_type)
    on_one_thread_if_cpu(device)
    recipe = notebook_recipe(parameters, device)
    train_loader = TensorLoader.for_training(*mnist_tensors(train=True, device=device), recipe)
    test_loader = TensorLoader.for_evaluation(*mnist_tensors(train=False, device=device))
    network = dict(architecture=architecture, dropout=parameters["DROPOUT"])
    if architecture == "Net":
        network["n_channels"] = width
    model, history = train_network(train_loader, test_loader, recipe, seed, verbose=False,
                                   **network)
    if weights is not None:
        save_model(model, weights / f"w{width}_s{seed}" / "model.pt")
    return history_record(history)


def sweep_run(job: tuple[int, int, int, Path, bool]) -> dict:
    """Run one notebook of the sweep (or store the default one); returns its record with its wall time."""
    width, seed, epochs, artifacts, stored = job
    start = time.perf_counter()
    if stored:
        run_and_store_notebook()
        history = History.load(artifacts / "history.json")
    else:
        history = run_notebook(width, seed, epochs, artifacts)
    return history_record(history, notebook_minutes=(time.perf_counter() - start) / 60)


def reference_run(job: tuple[int, int, str]) -> dict:
    """Train the reference recipe once with this seed and number of epochs on this device (on the CPU one
    thread, plus its loader's two worker processes); returns its record for results.json."""
    seed, epochs, device_type = job
    device = torch.device(device_type)
    on_one_thread_if_cpu(device)
    seed_everything(seed)
    seconds, accuracies = run_reference(epochs, device, None)
    return dict(recipe="reference", network="ReferenceNet", width=None, batch_size=REFERENCE_TRAINING["batch_size"],
                seed=seed, epochs=epochs, parameters=REFERENCE_PARAMETERS, last_test_acc=accuracies[-1],
                test_acc_per_epoch=accuracies, device=device_name(device), seconds_per_epoch=statistics.mean(seconds),
                settings=dict(REFERENCE_TRAINING))


def candidate_run(job: tuple[str, int]) -> dict:
    """Train cross-validation candidate `name` with this seed on all 60,000 training images (CPU, one
    thread) and test it; returns its record for results.json."""
    name, seed = job
    torch.set_num_threads(1)
    train_images, train_labels = mnist_tensors(train=True)
    test_images, test_labels = mnist_tensors(train=False)
    _, history, _ = train_candidate(name, train_images, train_labels, test_images, test_labels, seed)
    return history_record(history, recipe=name, description=CANDIDATES[name].description)


# ------------------------------------------------------------------------------------------- modes


def quiet_workers() -> None:
    """Worker processes inherit the environment: their progress bars would only clutter the log."""
    os.environ["TQDM_DISABLE"] = "1"


def reference_mode(args: argparse.Namespace) -> None:
    """--reference: the reference recipe's seeds."""
    jobs = [(seed, args.epochs, args.device) for seed in args.seeds]
    quiet_workers()
    # Not a multiprocessing.Pool: its daemonic workers may not start the loader's worker processes.
    with ProcessPoolExecutor(args.processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        store_as_they_end(pool.map(reference_run, jobs), args.out / "results.json")


def candidate_mode(args: argparse.Namespace) -> None:
    """--candidate NAME: a cross-validation candidate's recipe, tested on the test set."""
    quiet_workers()
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        store_as_they_end(pool.imap(candidate_run, [(args.candidate, seed) for seed in args.seeds]),
                          args.out / "results.json")


def direct_mode(args: argparse.Namespace, parameters: dict) -> None:
    """--direct: the notebook's training called directly, many runs at once on one device."""
    # PublicSmallNet has one width; Net is swept over --widths.
    widths = args.widths if args.architecture == "Net" else [None]
    parameters = dict(parameters, EPOCHS=args.epochs)
    jobs = [(args.architecture, width, seed, args.device, parameters, args.save_weights)
            for index, width in enumerate(widths) for seed in (args.seeds if index == 0 else args.small_seeds)]
    start = time.perf_counter()
    quiet_workers()
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        records = store_as_they_end(pool.imap(direct_run, jobs), args.out / "results.json")
    # results.md and the plot are drawn per width of Net; another network's runs are only stored.
    if args.architecture == "Net":
        write_results(records, args.out, (time.perf_counter() - start) / 60)


def sweep_mode(args: argparse.Namespace, parameters: dict) -> None:
    """The default: execute the whole notebook once per width and seed (papermill)."""
    start, records, jobs = time.perf_counter(), [], []
    for index, width in enumerate(args.widths):
        for seed in args.seeds if index == 0 else args.small_seeds:
            stored = args.store_notebook and (width, seed, args.epochs) == (
                parameters["N_CHANNELS"], parameters["SEED"], parameters["EPOCHS"])
            artifacts = ROOT / parameters["ARTIFACTS_DIR"] if stored else ROOT / "artifacts" / "seeds" / f"w{width}_s{seed}"
            if args.resume and (artifacts / "history.json").exists():
                records.append(history_record(History.load(artifacts / "history.json")))
            else:
                jobs.append((width, seed, args.epochs, artifacts, stored))
    if args.processes > 1:
        os.environ["OMP_NUM_THREADS"] = "1"  # inherited by every notebook's kernel: one thread each
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        for record in pool.imap(sweep_run, jobs):
            records.append(record)
            print(f"width {record['width']} seed {record['seed']}: {record['parameters']:,} parameters, "
                  f"last-epoch test accuracy {record['last_test_acc']:.2f}% "
                  f"(whole notebook: {record['notebook_minutes']:.1f} min)", flush=True)
    # Every run of the sweep, including those reused with --resume: an interrupted sweep may not have stored them.
    add_to_results(args.out / "results.json", records)
    write_results(records, args.out, (time.perf_counter() - start) / 60)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked: options that a mode would ignore are refused."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--small-seeds", type=int, nargs="+", default=[1, 2, 3],
                        help="seeds for every width but the first")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks")
    parser.add_argument("--store-notebook", action="store_true",
                        help="save the run with the notebook's default parameters back into S6.ipynb")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the history of every run already in artifacts/ instead of running it again")
    parser.add_argument("--store-only", action="store_true",
                        help="only execute S6.ipynb with its default parameters and save it in place")
    parser.add_argument("--figure-only", action="store_true",
                        help="only redraw accuracy_vs_parameters.png from the CPU runs in results.json")
    parser.add_argument("--processes", type=int, default=1,
                        help="runs at once; with more than one on the CPU, each runs on one thread")
    parser.add_argument("--direct", action="store_true",
                        help="call the notebook's training directly instead of executing the notebook")
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="Net",
                        help="with --direct: the network to train (the notebook's ARCHITECTURE); another than "
                             "Net ignores --widths and only adds its runs to results.json, since the sweep's "
                             "table and plot are drawn per width of Net")
    parser.add_argument("--save-weights", type=Path,
                        help="with --direct: save each run's weights in this folder (for benchmarks/assertions.py)")
    parser.add_argument("--batch-size", type=int,
                        help="with --direct: train with batches of this size instead of the notebook's BATCH_SIZE")
    parser.add_argument("--reference", action="store_true",
                        help="train the reference recipe instead of the notebook's")
    parser.add_argument("--candidate", help="train this cross-validation candidate on all training images "
                                            "and test it, instead of the notebook's recipe")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="with --direct or --reference: where the runs train "
                             "(default: cuda if there is a GPU)")
    args = parser.parse_args(argv)
    for option in ("batch_size", "save_weights"):
        if getattr(args, option) is not None and not args.direct:
            parser.error(f"--{option.replace('_', '-')} applies to --direct runs only")
    if args.candidate is not None and args.candidate not in CANDIDATES:
        parser.error(f"unknown candidate {args.candidate!r}; choose from {list(CANDIDATES)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    if args.store_only:
        run_and_store_notebook()
    elif args.figure_only:
        draw_figure(args.out)
    elif args.reference:
        reference_mode(args)
    elif args.candidate:
        candidate_mode(args)
    else:
        parameters = notebook_defaults()
        if args.batch_size is not None:
            parameters["BATCH_SIZE"] = args.batch_size
        (direct_mode if args.direct else sweep_mode)(args, parameters)


if __name__ == "__main__":
    main()
