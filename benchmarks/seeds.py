"""Train the notebook's recipe (or another) once per seed, on the test set, and keep a record of each run.

    python benchmarks/seeds.py --direct --seeds 1 2 3 4 5 6 7 8 --processes 2 --out benchmarks
calls the notebook's training directly (`utils.train_network` with the Recipe the notebook builds from
its parameters cell, for each seed), one thread a run on the CPU, and adds each run to OUT/results.json
as it ends; then it redraws OUT/results.md and OUT/accuracy_vs_parameters.png from every record there.
The committed records are benchmarks/'s: without `--out benchmarks` a run is a trial, and it writes under
artifacts/benchmarks/ instead, leaving every committed file as it was. Every file written is printed.

    python benchmarks/seeds.py --seeds 1 2 3 --out benchmarks
executes the whole notebook once per seed instead (papermill), so that its time is measured too.
    python benchmarks/seeds.py --store-only
executes S6.ipynb with its own parameters and saves it in place: the stored notebook.
    python benchmarks/seeds.py --direct --device cuda --seeds $(seq 1 16) --processes 8 --out benchmarks/gpu
many runs at once on one GPU.
    python benchmarks/seeds.py --reference --seeds 1 2 3 --processes 2 --out benchmarks
trains the reference recipe instead (speed.py's `run_reference`: its network, its per-image loader with
two worker processes, its step schedule).
    python benchmarks/seeds.py --candidate public-8k --seeds 1 2 3 4 5 --processes 2 --out benchmarks
trains a cross-validation candidate's recipe (`crossval.py --list`) on all 60,000 training images and
tests it: how a recipe chosen on the folds does on the test set.
Every mode replaces only the records of the runs it re-ran (the same name and recipe, seed included).
"""
from __future__ import annotations

import argparse
import ast
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import nbformat
import papermill
import torch
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # model.py and utils.py, when run as a script
from crossval import CANDIDATES  # noqa: E402
from model import NETWORKS  # noqa: E402
from records import run_record, store_as_they_end, write_summaries  # noqa: E402
from speed import REFERENCE_PARAMETERS, REFERENCE_TRAINING, run_reference  # noqa: E402
from utils import History, Recipe, device_name, mnist_tensors, save_model, train_network  # noqa: E402

NOTEBOOK = ROOT / "S6.ipynb"
TRIALS = ROOT / "artifacts" / "benchmarks"  # where a run writes unless told --out benchmarks
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


# ------------------------------------------------------------------------------- the notebook itself


def notebook_defaults() -> dict:
    """The values in the notebook's `parameters` cell."""
    return {name: ast.literal_eval(p["default"]) for name, p in papermill.inspect_notebook(str(NOTEBOOK)).items()}


def notebook_recipe(parameters: dict) -> Recipe:
    """The Recipe the notebook builds from its parameters (the cell after the `parameters` cell)."""
    return Recipe(network=parameters["ARCHITECTURE"], width=parameters["N_CHANNELS"], dropout=parameters["DROPOUT"],
                  seed=parameters["SEED"], precision=parameters["PRECISION"], epochs=parameters["EPOCHS"],
                  max_lr=parameters["MAX_LR"], schedule=parameters["SCHEDULE"], batch_size=parameters["BATCH_SIZE"],
                  clean_final_epochs=parameters["CLEAN_FINAL_EPOCHS"])


def run_notebook(recipe: Recipe, artifacts: Path) -> History:
    """Execute the notebook once with this recipe's seed, width and epochs (papermill, into a scratch copy);
    returns the history.

    A run that misses a constraint fails the notebook's last cell, after its history is saved: it is
    reported like any other run, since leaving it out would flatter the table.
    """
    with tempfile.TemporaryDirectory() as scratch:
        try:
            papermill.execute_notebook(
                str(NOTEBOOK), str(Path(scratch) / "S6.out.ipynb"), cwd=str(ROOT), progress_bar=False,
                parameters=dict(SEED=recipe.seed, N_CHANNELS=recipe.width, EPOCHS=recipe.epochs,
                                ARTIFACTS_DIR=str(artifacts)))
        except papermill.PapermillExecutionError as error:
            if error.ename != "AssertionError" or not (artifacts / "history.json").exists():
                raise
            print(f"seed {recipe.seed} missed a constraint (the notebook's last cell failed)", flush=True)
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
    print(f"wrote {NOTEBOOK}")


# ------------------------------------------------------------------------------- one run of each kind


def on_one_thread_if_cpu(device: torch.device) -> None:
    """Runs side by side on the CPU take one thread each, so that they do not fight over the cores."""
    if device.type == "cpu":
        torch.set_num_threads(1)


def direct_run(job: tuple[Recipe, str, str, Path | None]) -> dict:
    """The notebook's training without the notebook: `utils.train_network` with this recipe on the device
    named; returns the run's record (named `name`), and saves the trained model under `weights` (if given)
    as w{width}_s{seed}/model.pt."""
    recipe, name, device_type, weights = job
    device = torch.device(device_type)
    on_one_thread_if_cpu(device)
    model, history = train_network(recipe, *mnist_tensors(train=True, device=device),
                                   *mnist_tensors(train=False, device=device), verbose=False)
    if weights is not None:
        save_model(model, history.recipe, weights / f"w{recipe.width}_s{recipe.seed}" / "model.pt")
    return run_record(history, name)


def notebook_run(job: tuple[Recipe, Path, bool]) -> dict:
    """Run one notebook of the sweep (or store the default one); returns its record with its wall time."""
    recipe, artifacts, stored = job
    start = time.perf_counter()
    if stored:
        run_and_store_notebook()
        history = History.load(artifacts / "history.json")
    else:
        history = run_notebook(recipe, artifacts)
    return run_record(history, notebook_minutes=(time.perf_counter() - start) / 60)


def reference_run(job: tuple[int, int, str]) -> dict:
    """Train the reference recipe once with this seed and number of epochs on this device (on the CPU one
    thread, plus its loader's two worker processes); returns its record for results.json."""
    seed, epochs, device_type = job
    device = torch.device(device_type)
    on_one_thread_if_cpu(device)
    torch.manual_seed(seed)
    seconds, accuracies = run_reference(epochs, device, None)
    recipe = dict(REFERENCE_TRAINING, network="ReferenceNet", width=None, seed=seed, epochs=epochs, precision="float32")
    return dict(name="reference", recipe=recipe, device=device_name(device), parameters=REFERENCE_PARAMETERS,
                last_test_acc=accuracies[-1], test_acc_per_epoch=accuracies, seconds_per_epoch=statistics.mean(seconds))


# ------------------------------------------------------------------------------------------- modes


def quiet_workers() -> None:
    """Worker processes inherit the environment: their progress bars would only clutter the log."""
    os.environ["TQDM_DISABLE"] = "1"


def direct_mode(args: argparse.Namespace, recipes: list[Recipe], name: str) -> None:
    """--direct and --candidate: each recipe trained by `utils.train_network`, many at once on one device."""
    quiet_workers()
    jobs = [(recipe, name, args.device, args.save_weights) for recipe in recipes]
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        store_as_they_end(pool.imap(direct_run, jobs), args.out / "results.json")


def sweep_mode(args: argparse.Namespace, recipes: list[Recipe], defaults: Recipe) -> None:
    """The default: execute the whole notebook once per recipe (papermill)."""
    jobs = []
    for recipe in recipes:
        stored = args.store_notebook and recipe == defaults
        artifacts = ROOT / "artifacts" / ("" if stored else f"seeds/w{recipe.width}_s{recipe.seed}")
        jobs.append((recipe, artifacts, stored))
    if args.processes > 1:
        os.environ["OMP_NUM_THREADS"] = "1"  # inherited by every notebook's kernel: one thread each
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        store_as_they_end(pool.imap(notebook_run, jobs), args.out / "results.json")


def reference_mode(args: argparse.Namespace) -> None:
    """--reference: the reference recipe's seeds."""
    jobs = [(seed, args.epochs or 19, args.device) for seed in args.seeds]
    quiet_workers()
    # Not a multiprocessing.Pool: its daemonic workers may not start the loader's worker processes.
    with ProcessPoolExecutor(args.processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        store_as_they_end(pool.map(reference_run, jobs), args.out / "results.json")


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked here, in the main process: options a mode would ignore are refused."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--widths", type=positive, nargs="+",
                        help="widths of Net to train (default: the notebook's N_CHANNELS)")
    parser.add_argument("--epochs", type=positive, help="default: the notebook's EPOCHS (the reference: 19)")
    parser.add_argument("--out", type=Path, default=TRIALS,
                        help=f"where results.json, results.md and the figure go (default: {TRIALS}, for trials; "
                             "the committed records: --out benchmarks)")
    parser.add_argument("--store-notebook", action="store_true",
                        help="save the run with the notebook's default parameters back into S6.ipynb")
    parser.add_argument("--store-only", action="store_true",
                        help="only execute S6.ipynb with its default parameters and save it in place")
    parser.add_argument("--figure-only", action="store_true",
                        help="only redraw results.md and accuracy_vs_parameters.png from OUT/results.json")
    parser.add_argument("--processes", type=positive, default=1,
                        help="runs at once; with more than one on the CPU, each runs on one thread")
    parser.add_argument("--direct", action="store_true",
                        help="call the notebook's training directly instead of executing the notebook")
    parser.add_argument("--architecture", choices=list(NETWORKS),
                        help="with --direct: the network to train instead of the notebook's ARCHITECTURE")
    parser.add_argument("--save-weights", type=Path,
                        help="with --direct: save each run's model in this folder (for benchmarks/assertions.py)")
    parser.add_argument("--batch-size", type=positive,
                        help="with --direct: train with batches of this size instead of the notebook's BATCH_SIZE")
    parser.add_argument("--reference", action="store_true", help="train the reference recipe instead")
    parser.add_argument("--candidate", choices=list(CANDIDATES), metavar="NAME",
                        help="train this cross-validation candidate's recipe on all training images and test it")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where --direct, --candidate or --reference runs train (default: cuda if there is a GPU)")
    args = parser.parse_args(argv)
    for option in ("batch_size", "save_weights", "architecture"):
        if getattr(args, option) is not None and not args.direct:
            parser.error(f"--{option.replace('_', '-')} applies to --direct runs only")
    if any(seed < 0 for seed in args.seeds):
        parser.error(f"seeds must be whole numbers of at least 0, got {args.seeds}")
    if args.device not in ("cpu", "mps") and not args.device.startswith("cuda"):
        parser.error(f"--device must be cpu, cuda or mps, got {args.device!r}")
    if args.figure_only and not (args.out / "results.json").is_file():
        parser.error(f"--figure-only draws from {args.out / 'results.json'}, which does not exist")
    if not (args.store_only or args.figure_only or args.reference):
        try:
            args.recipes, args.defaults = recipes_to_run(args)
        except ValueError as error:
            parser.error(str(error))
    return args


def recipes_to_run(args: argparse.Namespace) -> tuple[list[Recipe], Recipe]:
    """One Recipe per run the command asks for, built (and so checked) here, before any run starts; and the
    notebook's own recipe."""
    parameters = notebook_defaults()
    defaults = notebook_recipe(parameters)
    base = defaults if args.candidate is None else CANDIDATES[args.candidate].recipe
    changes = {key: value for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                             ("network", args.architecture)) if value is not None}
    if args.architecture is not None and args.widths is None:
        changes["width"] = None  # the network's own default (or fixed) width
    base = replace(base, **changes)
    widths = args.widths or [base.width]
    return [replace(base, width=width, seed=seed) for width in widths for seed in args.seeds], defaults


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    if args.store_only:
        run_and_store_notebook()
        return
    if args.reference:
        reference_mode(args)
    elif args.direct or args.candidate:
        direct_mode(args, args.recipes, args.candidate or "notebook")
    elif not args.figure_only:
        sweep_mode(args, args.recipes, args.defaults)
    write_summaries(args.out)


if __name__ == "__main__":
    main()
