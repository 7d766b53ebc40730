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
from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import papermill  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402
from model import ARCHITECTURES, build_network, count_parameters  # noqa: E402
from crossval import CANDIDATES, train_candidate  # noqa: E402
from speed import REFERENCE_PARAMETERS, REFERENCE_PUBLISHED_ACCURACY, REFERENCE_TRAINING, run_reference  # noqa: E402
from utils import (MIN_TEST_ACCURACY, Augmentation, History, TensorLoader, device_name, fit,  # noqa: E402
                   mnist_tensors, seed_everything, trained_what)


NOTEBOOK = ROOT / "S6.ipynb"


def notebook_defaults() -> dict:
    """The values in the notebook's `parameters` cell."""
    return {name: ast.literal_eval(p["default"]) for name, p in papermill.inspect_notebook(str(NOTEBOOK)).items()}


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


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


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


def results_table(runs: dict[tuple[int, int], History]) -> str:
    """One Markdown row per run, then the median, lowest and highest of each width."""
    lines = ["| width | parameters | seed | epochs | last-epoch test acc | best-epoch test acc | s/epoch | "
             "whole notebook | device |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for (width, seed), h in sorted(runs.items(), key=lambda item: (-item[0][0], item[0][1])):
        lines.append(f"| {width} | {h.parameters:,} | {seed} | {h.epochs} | **{h.test_acc[-1]:.2f}%** | "
                     f"{max(h.test_acc):.2f}% | {statistics.mean(h.epoch_seconds):.1f} | "
                     f"{_minutes(h)} | {h.device} |")
    lines += ["", "| width | parameters | runs | median last-epoch acc | lowest | highest |", "|---:|---:|---:|---:|---:|---:|"]
    for width in sorted({w for w, _ in runs}, reverse=True):
        last = [h.test_acc[-1] for (w, _), h in runs.items() if w == width]
        parameters = next(h.parameters for (w, _), h in runs.items() if w == width)
        lines.append(f"| {width} | {parameters:,} | {len(last)} | **{statistics.median(last):.2f}%** | "
                     f"{min(last):.2f}% | {max(last):.2f}% |")
    return "\n".join(lines) + "\n"


def _minutes(history: History) -> str:
    """The whole notebook's wall time, as recorded by main(); runs reused from an earlier sweep may lack it."""
    minutes = history.config.get("notebook_minutes")
    return "n/a" if minutes is None else f"{minutes:.1f} min"


def plot_accuracy_vs_parameters(runs: dict[tuple[int, int], History]) -> Figure:
    """Last-epoch test accuracy against parameter count, one point per run, with the 99.40% line."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for width in sorted({w for w, _ in runs}):
        points = [(h.parameters, h.test_acc[-1]) for (w, _), h in runs.items() if w == width]
        ax.scatter(*zip(*points), label=f"n_channels={width}", alpha=0.8)
    ax.scatter([REFERENCE_PARAMETERS], [REFERENCE_PUBLISHED_ACCURACY], marker="*", s=150, color="black",
               label="reference design (published)")
    ax.axhline(MIN_TEST_ACCURACY, color="grey", linestyle="--", label="99.40% target")
    ax.set(xlabel="trainable parameters", ylabel="last-epoch test accuracy (%)",
           title="S6 Net: one point per seed")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def history_record(history: History, width: int | None) -> dict:
    """The plain record of one run of the notebook's training, for benchmarks/results.json."""
    return dict(config=history.config, parameters=history.parameters, seed=history.config["seed"], width=width,
                epochs=history.epochs, last_test_acc=history.test_acc[-1], test_acc_per_epoch=history.test_acc,
                device=history.device, seconds_per_epoch=statistics.mean(history.epoch_seconds))


def results_records(runs: dict[tuple[int, int], History]) -> list[dict]:
    """One plain record per run, for benchmarks/results.json."""
    return [history_record(h, width) for (width, _), h in sorted(runs.items(), key=lambda item: (-item[0][0], item[0][1]))]


def reference_run(job: tuple[int, int, str]) -> dict:
    """Train the reference recipe once with this seed and number of epochs on this device (on the CPU one
    thread, plus its loader's two worker processes); returns its record for results.json."""
    seed, epochs, device = job
    device = torch.device(device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    seed_everything(seed)
    seconds, accuracies = run_reference(epochs, device, None)
    config = dict(recipe="reference", epochs=epochs, **REFERENCE_TRAINING, seed=seed)
    return dict(config=config, parameters=REFERENCE_PARAMETERS, seed=seed, epochs=epochs,
                last_test_acc=accuracies[-1], test_acc_per_epoch=accuracies, device=device_name(device),
                seconds_per_epoch=statistics.mean(seconds))


def candidate_run(job: tuple[str, int]) -> dict:
    """Train cross-validation candidate `name` with this seed on all 60,000 training images (CPU, one
    thread) and test it; returns its record for results.json."""
    name, seed = job
    torch.set_num_threads(1)
    candidate = CANDIDATES[name]
    train_images, train_labels = mnist_tensors(train=True)
    test_images, test_labels = mnist_tensors(train=False)
    model, history, _ = train_candidate(name, train_images, train_labels, test_images, test_labels, seed)
    config = {**history.config, "recipe": name, "architecture": candidate.build.__name__,
              "description": candidate.description,
              "augmentation": vars(candidate.augmentation), "seed": seed}
    return dict(config=config, parameters=count_parameters(model), seed=seed, epochs=candidate.epochs,
                last_test_acc=history.test_acc[-1], test_acc_per_epoch=history.test_acc,
                device=history.device, seconds_per_epoch=statistics.mean(history.epoch_seconds))


def record_key(record: dict) -> tuple:
    """What makes two results.json records the same run: the recipe, the network, the batch size, the
    network's width, the seed and the epochs."""
    return *trained_what(record["config"]), record.get("width"), record["seed"], record["epochs"]


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


def store_as_they_end(records: Iterable[dict], path: Path) -> None:
    """Report each run and add it to the results file at `path` as soon as it ends, so that an interrupted
    sweep keeps what it finished."""
    for record in records:
        recipe, network, batch_size = trained_what(record["config"])
        print(f"{recipe}{f' on {network}' if network else ''}{f', batches of {batch_size}' if batch_size else ''} "
              f"seed {record['seed']}: {record['last_test_acc']:.2f}% at epoch {record['epochs']} "
              f"({record['seconds_per_epoch']:.0f} s per epoch)", flush=True)
        add_to_results(path, [record])


def direct_run(job: tuple[str, int, int, int, str, dict]) -> History:
    """Train the notebook's recipe without the notebook: its default parameters (`defaults`, read once by
    the caller), with this network (ARCHITECTURE), width and seed, on `device`, seeded as the notebook's
    training cell is; returns the history."""
    architecture, width, seed, epochs, device_name, defaults = job
    device = torch.device(device_name)
    if device.type == "cpu":
        torch.set_num_threads(1)
    seed_everything(seed)
    train_loader = TensorLoader.mnist(True, device, defaults["BATCH_SIZE"], augmentation=Augmentation())
    test_loader = TensorLoader.mnist(False, device, batch_size=1000)
    seed_everything(seed)
    model = train_loader.prepare(build_network(architecture, width, defaults["DROPOUT"]))
    history = fit(model, train_loader, test_loader, epochs, max_lr=defaults["MAX_LR"],
                  clean_final_epochs=defaults["CLEAN_FINAL_EPOCHS"], schedule=defaults["SCHEDULE"], verbose=False)
    history.config.update(seed=seed, architecture=architecture, n_channels=width, dropout=defaults["DROPOUT"],
                          direct=True)
    return history


def sweep_run(job: tuple[int, int, int, Path, bool]) -> History:
    """Run one notebook of the sweep (or store the default one) and record its wall time."""
    width, seed, epochs, artifacts, stored = job
    start = time.perf_counter()
    if stored:
        run_and_store_notebook()
        history = History.load(artifacts / "history.json")
    else:
        history = run_notebook(width, seed, epochs, artifacts)
    history.config["notebook_minutes"] = (time.perf_counter() - start) / 60
    history.save(artifacts / "history.json")
    return history


def main() -> None:
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
    parser.add_argument("--processes", type=int, default=1,
                        help="notebooks run at once; with more than one, each runs on one thread")
    parser.add_argument("--direct", action="store_true",
                        help="call the notebook's training directly instead of executing the notebook")
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="Net",
                        help="with --direct: the network to train (the notebook's ARCHITECTURE); another than "
                             "Net ignores --widths and only adds its runs to results.json, since the sweep's "
                             "table and plot are drawn per width of Net")
    parser.add_argument("--batch-size", type=int,
                        help="with --direct: train with batches of this size instead of the notebook's BATCH_SIZE")
    parser.add_argument("--reference", action="store_true",
                        help="train the reference recipe instead of the notebook's")
    parser.add_argument("--candidate", help="train this cross-validation candidate on all training images "
                                            "and test it, instead of the notebook's recipe")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="with --direct or --reference: where the runs train "
                             "(default: cuda if there is a GPU)")
    args = parser.parse_args()
    if args.store_only:
        run_and_store_notebook()
        return
    if args.reference:
        jobs = [(seed, args.epochs, args.device) for seed in args.seeds]
        # Not a multiprocessing.Pool: its daemonic workers may not start the loader's worker processes.
        with ProcessPoolExecutor(args.processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            store_as_they_end(pool.map(reference_run, jobs), args.out / "results.json")
        return
    if args.candidate:
        if args.candidate not in CANDIDATES:
            parser.error(f"unknown candidate {args.candidate!r}; choose from {list(CANDIDATES)}")
        os.environ["TQDM_DISABLE"] = "1"  # inherited by the workers: their progress bars would clutter the log
        jobs = [(args.candidate, seed) for seed in args.seeds]
        with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
            store_as_they_end(pool.imap(candidate_run, jobs), args.out / "results.json")
        return
    if args.batch_size is not None and not args.direct:
        parser.error("--batch-size applies to --direct runs only")
    defaults = notebook_defaults()
    if args.batch_size is not None:
        defaults["BATCH_SIZE"] = args.batch_size
    if args.direct:
        # PublicSmallNet has one width; Net is swept over --widths.
        widths = args.widths if args.architecture == "Net" else [None]
        jobs = [(args.architecture, width, seed, args.epochs, args.device, defaults)
                for index, width in enumerate(widths) for seed in (args.seeds if index == 0 else args.small_seeds)]
        start, runs = time.perf_counter(), {}
        with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
            for (_, width, seed, *_), history in zip(jobs, pool.imap(direct_run, jobs)):
                store_as_they_end([history_record(history, width)], args.out / "results.json")
                runs[width, seed] = history
        # results.md and the plot are drawn per width of Net; another network's runs are only stored.
        if args.architecture == "Net":
            write_results(runs, args.out, (time.perf_counter() - start) / 60)
        return

    start, runs, jobs = time.perf_counter(), {}, []
    for index, width in enumerate(args.widths):
        for seed in args.seeds if index == 0 else args.small_seeds:
            stored = args.store_notebook and (width, seed, args.epochs) == (
                defaults["N_CHANNELS"], defaults["SEED"], defaults["EPOCHS"])
            artifacts = ROOT / defaults["ARTIFACTS_DIR"] if stored else ROOT / "artifacts" / "seeds" / f"w{width}_s{seed}"
            if args.resume and (artifacts / "history.json").exists():
                runs[width, seed] = History.load(artifacts / "history.json")
            else:
                jobs.append((width, seed, args.epochs, artifacts, stored))
    if args.processes > 1:
        os.environ["OMP_NUM_THREADS"] = "1"  # inherited by every notebook's kernel: one thread each
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        for (width, seed, *_), history in zip(jobs, pool.imap(sweep_run, jobs)):
            runs[width, seed] = history
            print(f"width {width} seed {seed}: {history.parameters:,} parameters, last-epoch test accuracy "
                  f"{history.test_acc[-1]:.2f}% (whole notebook: {_minutes(history)})", flush=True)
    # Every run of the sweep, including those reused with --resume: an interrupted sweep may not have stored them.
    add_to_results(args.out / "results.json", results_records(runs))
    write_results(runs, args.out, (time.perf_counter() - start) / 60)


def write_results(runs: dict[tuple[int, int], History], out: Path, total_minutes: float) -> None:
    """Write results.md and accuracy_vs_parameters.png for a sweep of Net's widths into `out` (its runs
    are in results.json already)."""
    table = results_table(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(
        f"Sweep: `python benchmarks/seeds.py {' '.join(sys.argv[1:])}`, {total_minutes:.0f} minutes wall time "
        f"for the runs it executed.\n\n{table}")
    plot_accuracy_vs_parameters(runs).savefig(out / "accuracy_vs_parameters.png", dpi=120)
    print(table)
    print(f"wall time of this sweep: {total_minutes:.1f} minutes")


if __name__ == "__main__":
    main()
