"""Score training recipes by six-fold cross-validation on the 60,000 training images; keep a ledger.

The training set is cut into six fixed folds of 10,000 (a permutation drawn with seed 0). For each fold,
one run (15 epochs unless the candidate says otherwise) trains on the other 50,000 images (seed =
fold + 1) and is scored at its last epoch on the fold. A candidate's score is the mean over the six
folds; it is compared with its baseline fold by fold, and a gain counts only when it exceeds twice the
standard error of those differences. The test
set is never read. Two folds run at once, one thread each. A candidate named "gpu-..." trains on a CUDA GPU
(`benchmarks/gpu.sh OUTPUT_FOLDER shapes` runs them 16 at a time) and is paired only with GPU runs.

    python benchmarks/crossval.py running-bn-15 clean-2   # runs what the ledger lacks, then rewrites it
    python benchmarks/crossval.py --list             # the candidates this script knows
    python benchmarks/crossval.py                    # only rewrites benchmarks/ledger.md from the ledger

Every finished run is added to benchmarks/ledger.json at once (so an interrupted sweep resumes where it
stopped), and benchmarks/ledger.md is drawn from it: never edit either by hand.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # model.py and utils.py, when run as a script
from model import SHAPES, build_network, count_parameters  # noqa: E402
from utils import (Augmentation, Recipe, TensorLoader, ledger_runs, mnist_tensors, paired_gain,  # noqa: E402
                   recompute_batchnorm_statistics, shape_baseline, test, train_network, verdict)

FOLDS, FOLD_SEED = 6, 0
# The notebook's recipe, and the same at the 15 epochs most candidates were scored at ("clean-2" below).
# Every candidate is one of these with something replaced, spelled out, so that a later change of the
# notebook's defaults cannot change what a candidate in the ledger means.
RECIPE = Recipe(network="Net", width=8, dropout=0.0, precision="float32", epochs=19, max_lr=0.1,
                schedule="one-cycle", optimizer="sgd", weight_decay=5e-4, label_smoothing=0.0, batch_size=256,
                augmentation=Augmentation(), clean_final_epochs=2, bn_batches=40)
RECIPE_15 = replace(RECIPE, epochs=15)
# The decay of the averaged weights that "ema-19" scores, chosen on fold 0 alone (benchmarks/README.md).
EMA_DECAY = 0.995
# The recipe before its last two changes: no clean final epochs (what "precise-bn" scores).
EARLIER_15 = replace(RECIPE_15, clean_final_epochs=0)
SHAPE_RECIPE = replace(RECIPE, precision="bfloat16")
LEDGER_JSON, LEDGER_MD = ROOT / "benchmarks" / "ledger.json", ROOT / "benchmarks" / "ledger.md"


@dataclass(frozen=True)
class Candidate:
    """One recipe to score (its network included) and what it is compared with."""

    description: str
    recipe: Recipe = EARLIER_15
    baseline: str | None = "precise-bn"
    # Scored on another candidate's runs: the same runs, another way of evaluating them (the record's
    # `score` field).
    scored_on: str | None = None
    score: str = "val_acc"
    # False for a candidate scored to show what a design costs, knowing it breaks the 20,000-parameter budget.
    within_budget: bool = True
    # Where its runs train: "cpu" (one thread each) or "cuda" (every run of a sweep shares the one GPU). A run
    # on another device drifts from its twin as if it had another seed, so a candidate's baseline runs there too.
    device: str = "cpu"


def ablation(description: str, within_budget: bool = True, **changes) -> Candidate:
    """The 15-epoch recipe with one thing removed or replaced, compared with the recipe itself."""
    return Candidate(description, replace(RECIPE_15, **changes), baseline="clean-2", within_budget=within_budget)


CANDIDATES = {
    "running-bn-15": Candidate("the 15-epoch recipe without clean final epochs, scored with BatchNorm's running "
                               "averages (bn_batches=0): the recipe before its last two changes",
                               replace(EARLIER_15, bn_batches=0), baseline=None),
    "precise-bn": Candidate("BatchNorm statistics recomputed from 40 unaugmented training batches before "
                            "evaluating", EARLIER_15, baseline="running-bn-15", scored_on="running-bn-15",
                            score="val_acc_recomputed_bn"),
    "clean-2": Candidate("the last 2 of 15 epochs on unaugmented digits", RECIPE_15),
    "activated-1x1": Candidate("BatchNorm + ReLU after the 1x1 convolution of each MaxPoolingBlock",
                               replace(EARLIER_15, network="Net-activated-1x1")),
    "clean-2+activated-1x1": Candidate("both: the last 2 epochs clean, BatchNorm + ReLU after each 1x1 convolution",
                                       replace(RECIPE_15, network="Net-activated-1x1"), baseline="clean-2"),
    "label-smoothing": Candidate("label smoothing 0.1", replace(EARLIER_15, label_smoothing=0.1)),
    "wide-first-conv": Candidate("a 5x5 first convolution instead of 3x3", replace(EARLIER_15, network="Net-5x5-first")),
    "residual": Candidate("skip connections around the 14x14 and 7x7 ConvBlocks",
                          replace(EARLIER_15, network="Net-residual")),
    "width-5": Candidate("Net(n_channels=5), 7,390 parameters", replace(EARLIER_15, width=5), baseline=None),
    # Ablations of the recipe: each removes or replaces one ingredient the walkthrough credits.
    "no-bn": ablation("no BatchNorm (convolutions with biases, PyTorch's default initialisation), peak LR 0.1",
                      network="Net-no-bn"),
    **{f"no-bn-kaiming-lr{lr}": ablation(f"no BatchNorm, Kaiming initialisation, peak LR {lr}",
                                         network="Net-no-bn-kaiming", max_lr=lr) for lr in (0.01, 0.02, 0.05)},
    "no-augmentation": ablation("no augmentation: every epoch on unaugmented digits",
                                clean_final_epochs=RECIPE_15.epochs),
    "flatten-head": ablation("flatten the 7x7x24 maps into the Linear layer instead of global average pooling",
                             network="Net-flatten-head", within_budget=False),
    "flatten-head-width-6": ablation("flatten head on Net(n_channels=6), to fit the parameter budget",
                                     network="Net-flatten-head", width=6),
    "dropout-0.05": ablation("Dropout 0.05 after every ConvBlock", dropout=0.05),
    "dropout-0.1": ablation("Dropout 0.1 after every ConvBlock", dropout=0.1),
    "step-schedule": ablation("a step schedule (LR 0.1, a tenth of it from epoch 11, Nesterov momentum 0.9) "
                              "instead of one-cycle", schedule="step"),
    "epochs-19": Candidate("the recipe trained for 19 epochs instead of 15 (the most the constraint allows)",
                           RECIPE, baseline="clean-2"),
    "no-1x1": ablation("no 1x1 convolution after the max-pools (the next 3x3 convolution reads the pooled "
                       "channels)", network="Net-no-1x1"),
    # Under 8,000 parameters: a public design with its own published training, the yardstick to beat.
    "public-8k": Candidate("a public design of 7,918 parameters (snehanshu-raj/ERA, assignment 6, Model 3) with "
                           "its published training: Adam at 0.005, a tenth of it after 8 epochs, batches of 64, "
                           "rotations up to 7 degrees and no other augmentation, running BatchNorm averages",
                           replace(EARLIER_15, optimizer="adam", max_lr=0.005, weight_decay=0.0, schedule="step",
                                   step_epochs=8, bn_batches=0, batch_size=64,
                                   augmentation=Augmentation(max_degrees=7.0, max_shift=0.0, max_zoom=0.0),
                                   network="PublicSmallNet", width=None),
                           baseline=None),
    "public-8k-project-training": Candidate("the same 7,918-parameter design trained with this project's recipe: "
                                            "SGD with one-cycle to 0.1, batches of 256, rotation, shift and zoom, "
                                            "the last 2 epochs clean, BatchNorm statistics recomputed",
                                            replace(RECIPE_15, network="PublicSmallNet", width=None),
                                            baseline="public-8k"),
    "public-8k-batch-128": Candidate("the same design and this project's recipe with batches of 128 instead of 256: "
                                     "twice the steps in the same 15 epochs",
                                     replace(RECIPE_15, batch_size=128, network="PublicSmallNet", width=None),
                                     baseline="public-8k-project-training"),
    "width-5-recipe": Candidate("this project's Net narrowed to n_channels=5 (7,390 parameters) with the notebook's "
                                "recipe", replace(RECIPE_15, width=5), baseline="public-8k-project-training"),
    # The recipe at 19 epochs, against levers not yet tried there. Floating-point results differ from one
    # CPU to another, and a run drifts from its twin on another machine as if it had another seed, so these
    # are paired with the recipe re-run on the machine they ran on: the last weights of the ema-19 runs.
    "epochs-19-rerun": Candidate("the 19-epoch recipe re-run on another machine (the ema-19 runs' own last "
                                 "weights), against its first runs", RECIPE, baseline="epochs-19",
                                 scored_on="ema-19", score="val_acc_last_weights"),
    "batch-128-19": Candidate("the 19-epoch recipe with batches of 128 instead of 256: twice the steps",
                              replace(RECIPE, batch_size=128), baseline="epochs-19-rerun"),
    "elastic-19": Candidate("the 19-epoch recipe with an elastic distortion on top of the affine augmentation "
                            "(Simard et al. 2003: sigma 4 pixels, alpha 34)",
                            replace(RECIPE, augmentation=replace(RECIPE.augmentation, elastic_alpha=34.0,
                                                                 elastic_sigma=4.0)), baseline="epochs-19-rerun"),
    "bf16-19": Candidate("the 19-epoch recipe in bfloat16 (torch.autocast on the CPU; BatchNorm statistics, "
                         "weights and loss in float32)", replace(RECIPE, precision="bfloat16"),
                         baseline="epochs-19-rerun"),
    "ema-19": Candidate("the 19-epoch recipe scored on an exponential moving average of its weights (decay "
                        "chosen on fold 0), BatchNorm statistics recomputed for the averaged weights",
                        replace(RECIPE, ema_decay=EMA_DECAY), baseline="epochs-19-rerun"),
    # Where to spend the parameters: shapes of one family (model.SHAPES), 19 epochs in bfloat16 (the notebook's
    # run on a CPU with native bfloat16), each paired with Net's shape or, under 8,000, the public design's,
    # trained the same way in the same sweep on the same machine.
    **{f"{prefix}shape-{name}": Candidate(f"the network shape {name!r} (model.SHAPES), 19 epochs, bfloat16"
                                          + (", on a CUDA GPU" if device == "cuda" else ""),
                                          replace(SHAPE_RECIPE, network=f"shape:{name}", width=None),
                                          baseline=None if name in ("net", "public") else
                                          shape_baseline(count_parameters(build_network(f"shape:{name}")),
                                                         f"{prefix}shape-"), device=device)
       for prefix, device in (("", "cpu"), ("gpu-", "cuda")) for name in SHAPES},
}


def folds() -> list[torch.Tensor]:
    """Six disjoint index sets of 10,000 training images, the same on every run."""
    order = torch.randperm(60_000, generator=torch.Generator().manual_seed(FOLD_SEED))
    return list(order.chunk(FOLDS))


def run_fold(name: str, fold: int) -> dict:
    """Train candidate `name` on every fold but `fold` (seed fold + 1, one thread, on the candidate's device),
    score it on `fold`; returns the ledger record, with the resolved recipe, the device and the CPU seconds
    per epoch."""
    torch.set_num_threads(1)
    recipe = replace(CANDIDATES[name].recipe, seed=fold + 1)
    images, labels = mnist_tensors(train=True, device=CANDIDATES[name].device)
    held_out = folds()[fold].to(images.device)
    keep = torch.ones(len(images), dtype=torch.bool, device=images.device)
    keep[held_out] = False
    cpu_start = time.process_time()  # the process's own CPU time: less swayed by other work on the machine
    model, history = train_network(recipe, images[keep], labels[keep], images[held_out], labels[held_out],
                                   verbose=False)
    cpu_seconds = time.process_time() - cpu_start
    precision = history.recipe.precision
    # Accuracy on the model's own (unaugmented) training images, scored like the validation fold: the
    # gap between the two is what augmentation and Dropout act on.
    plain = TensorLoader.for_evaluation(images[keep], labels[keep])
    record = dict(candidate=name, fold=fold, recipe=asdict(history.recipe), device=history.device,
                  parameters=history.parameters, val_acc=history.test_acc[-1], val_acc_per_epoch=history.test_acc,
                  train_acc=test(model, plain, precision)[1], train_loss_per_epoch=history.train_loss,
                  seconds_per_epoch=statistics.mean(history.epoch_seconds),
                  cpu_seconds_per_epoch=cpu_seconds / history.epochs)
    if history.last_weights_test_acc is not None:
        record["val_acc_last_weights"] = history.last_weights_test_acc
    # Runs on running averages are also scored after recomputing the statistics: same weights, no retraining.
    if recipe.bn_batches == 0:
        recompute_batchnorm_statistics(model, TensorLoader(images[keep], labels[keep], 256), 40, precision)
        record["val_acc_recomputed_bn"] = test(model, TensorLoader.for_evaluation(images[held_out],
                                                                                  labels[held_out]), precision)[1]
    print(f"{name} fold {fold}: {record['val_acc']:.2f}% ({record['cpu_seconds_per_epoch']:.1f} CPU s/epoch)",
          flush=True)
    return record


def load_ledger() -> list[dict]:
    """Every run recorded so far."""
    return json.loads(LEDGER_JSON.read_text()) if LEDGER_JSON.exists() else []


def fold_scores(ledger: list[dict], name: str) -> dict[int, float]:
    """Validation accuracy of candidate `name` on each fold it has been scored on."""
    candidate = CANDIDATES[name]
    return {fold: r[candidate.score] for fold, r in ledger_runs(ledger, candidate.scored_on or name).items()}


def ledger_table(ledger: list[dict]) -> str:
    """The ledger as Markdown: one row per candidate, in the order they are defined."""
    lines = ["| candidate | what it changes | parameters | validation accuracy per fold (%) | mean | "
             "train accuracy (mean, %) | gain over baseline ± SE | verdict | s/epoch (1 thread, or a shared GPU) |",
             "|---|---|---:|---|---:|---:|---|---|---:|"]
    for name, candidate in CANDIDATES.items():
        scores = fold_scores(ledger, name)
        if not scores:
            continue
        runs = list(ledger_runs(ledger, candidate.scored_on or name).values())
        per_fold = " / ".join(f"{scores[f]:.2f}" if f in scores else "-" for f in range(FOLDS))
        train = [r["train_acc"] for r in runs if "train_acc" in r]
        gain, outcome = "", ""
        if candidate.baseline:
            paired = paired_gain(scores, fold_scores(ledger, candidate.baseline))
            if paired:
                mean, se, n = paired
                gain = f"{mean:+.3f} ± {se:.3f} vs {candidate.baseline} ({n} folds)"
                outcome = {"gain": "**gain**"}.get(verdict(mean, se), verdict(mean, se))
        lines.append(f"| {name} | {candidate.description} | {runs[0]['parameters']:,} | {per_fold} | "
                     f"{statistics.mean(scores.values()):.3f} | "
                     f"{f'{statistics.mean(train):.2f}' if train and not candidate.scored_on else '-'} | {gain} | "
                     f"{outcome} | {statistics.mean(r['seconds_per_epoch'] for r in runs):.1f} |")
    return "\n".join(lines) + "\n"


def write_ledger(ledger: list[dict]) -> None:
    """Store every run (JSON) and the table drawn from them (Markdown)."""
    # Through a temporary file, so that a sweep stopped mid-write leaves the last complete ledger.
    partial = LEDGER_JSON.with_suffix(".json.part")
    partial.write_text(json.dumps(sorted(ledger, key=lambda r: (r["candidate"], r["fold"])), indent=1))
    partial.replace(LEDGER_JSON)
    print(f"wrote {LEDGER_JSON} ({len(ledger)} runs)\nwrote {LEDGER_MD}", flush=True)
    LEDGER_MD.write_text("Six-fold cross-validation on the 60,000 training images, written by "
                         "`python benchmarks/crossval.py`; a gain counts when it exceeds twice its standard "
                         "error.\n\n" + ledger_table(ledger))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="*", help="names from --list")
    parser.add_argument("--list", action="store_true", help="print the known candidates and stop")
    parser.add_argument("--folds", type=int, nargs="+", default=list(range(FOLDS)), choices=range(FOLDS),
                        metavar="FOLD", help=f"folds to score, from 0 to {FOLDS - 1} (default: all)")
    parser.add_argument("--processes", type=int, default=2, help="runs at once, one thread each")
    args = parser.parse_args()
    if args.processes < 1:
        parser.error(f"--processes must be at least 1, got {args.processes}")
    if args.list:
        for name, candidate in CANDIDATES.items():
            print(f"{name:16} {candidate.description}")
        return
    unknown = [name for name in args.candidates if name not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidates {unknown}; choose from {list(CANDIDATES)}")
    on_gpu = [name for name in args.candidates if CANDIDATES[name].device == "cuda"]
    if on_gpu and not torch.cuda.is_available():
        parser.error(f"{on_gpu} train on a CUDA GPU, and PyTorch sees none here")

    os.environ["TQDM_DISABLE"] = "1"  # the workers' progress bars would only clutter the log
    ledger = load_ledger()
    done = {(r["candidate"], r["fold"]) for r in ledger}
    # A candidate scored on another's weights needs that one's runs, not runs of its own.
    todo = [(CANDIDATES[n].scored_on or n, f) for n in args.candidates for f in args.folds]
    todo = [job for i, job in enumerate(todo) if job not in done and job not in todo[:i]]
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        for record in pool.imap_unordered(_run_job, todo):
            ledger.append(record)
            write_ledger(ledger)
    write_ledger(ledger)
    print(ledger_table(ledger))


def _run_job(job: tuple[str, int]) -> dict:
    return run_fold(*job)


if __name__ == "__main__":
    main()
