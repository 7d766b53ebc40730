"""Re-run what every run-dependent assertion of S6.ipynb reads, over many seeds, and say how often each holds.

    python benchmarks/assertions.py --seeds $(seq 1 20)                 # the BatchNorm section's cells
    python benchmarks/assertions.py --seeds $(seq 1 20) --weights artifacts/seeds   # and the trained networks'

The BatchNorm section's computations (the activation spreads at initialisation, the 200-step live
comparison) are repeated for each seed exactly as the notebook's cells make them, with the same utils
functions, on the CPU. The trained networks' assertions (the mistakes count, the drawing readings) are
checked on every `model.pt` found under --weights (as `seeds.py --direct --save-weights` stores them) and,
for the mistakes, on every notebook run of Net in results.json. Prints one Markdown row per assertion:
how many seeds it held on, and the closest margin.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import utils  # noqa: E402
from model import Net  # noqa: E402

NO_BN_LR, MAX_LR = 0.02, 0.1  # the notebook's NO_BN_LR and the recipe's peak rate

# What each assertion reads, as a margin: positive where it holds, by how much.
BATCH_NORM_CHECKS: dict[str, Callable[[dict, dict], float]] = {
    "BatchNorm keeps every block's spread in (0.3, 1.0)":
        lambda spreads, curves: min(min(spreads["with BatchNorm"]) - 0.3, 1.0 - max(spreads["with BatchNorm"])),
    "default init: last block's spread below a quarter of the first's":
        lambda spreads, curves: spreads["without, default initialisation"][0] / 4
        - spreads["without, default initialisation"][-1],
    "Kaiming init: largest spread below 10 x the smallest":
        lambda spreads, curves: 10 - max(spreads["without, Kaiming initialisation"])
        / min(spreads["without, Kaiming initialisation"]),
    "with BatchNorm: mean loss of the last 20 steps below 0.5":
        lambda spreads, curves: 0.5 - statistics.mean(curves[f"with BatchNorm, LR {MAX_LR}"][-20:]),
    "default init at LR 0.1: mean loss of the last 20 steps above 2.0":
        lambda spreads, curves: statistics.mean(curves[f"without, default init, LR {MAX_LR}"][-20:]) - 2.0,
    "default init at LR 0.1: every step's loss above 2.0":
        lambda spreads, curves: min(curves[f"without, default init, LR {MAX_LR}"]) - 2.0,
    "Kaiming init at LR 0.02: some step's loss below 2.0":
        lambda spreads, curves: 2.0 - min(curves[f"without, Kaiming init, LR {NO_BN_LR}"]),
}

# The drawing cell's assertions, on the readings `utils.drawing_readings` returns (right answers of 10).
DRAWING_CHECKS: dict[str, Callable[[dict], float]] = {
    "small drawings: at most 3 right shrunk as they are":
        lambda right: 3 - right["small"][0],
    "small drawings: more than 3 right prepared like MNIST":
        lambda right: right["small"][1] - 3.5,
    "off-centre drawings: at least 7 right shrunk as they are":
        lambda right: right["off-centre"][0] - 7,
    "more read right prepared than shrunk, over all five ways":
        lambda right: sum(r[1] for r in right.values()) - sum(r[0] for r in right.values()) - 0.5,
}


def batch_norm_section(seed: int, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict, dict]:
    """The spreads and the live curves of the notebook's BatchNorm cells, for one seed (N_CHANNELS = 8)."""
    utils.seed_everything(seed)
    loader = utils.TensorLoader.for_evaluation(images, labels)  # only for its .prepare (channels-last here)
    networks = {name: loader.prepare(network) for name, network in utils.networks_for_batch_norm(8).items()}
    spreads = {name: utils.activation_spread(network, utils.normalize(images[:128]))
               for name, network in networks.items()}
    first_batches = utils.TensorLoader(images[:25_600], labels[:25_600], batch_size=128, shuffle=True,
                                       channels_last=loader.channels_last)
    return spreads, utils.live_comparison(networks, first_batches, MAX_LR, NO_BN_LR, seed)


def row(name: str, margins: list[float]) -> str:
    """One Markdown row: how many seeds the assertion held on, and the closest margin."""
    held = sum(margin > 0 for margin in margins)
    return f"| {name} | {held} of {len(margins)} | {min(margins):+.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 21)))
    parser.add_argument("--weights", type=Path, help="a folder searched for model.pt files of Net")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images, labels = utils.mnist_tensors(train=True)
    margins = {name: [] for name in BATCH_NORM_CHECKS}
    for seed in args.seeds:
        spreads, curves = batch_norm_section(seed, images, labels)
        for name, check in BATCH_NORM_CHECKS.items():
            margins[name].append(check(spreads, curves))
        print(f"seed {seed}: " + ", ".join(f"{m[-1]:+.3f}" for m in margins.values()), file=sys.stderr, flush=True)
    lines = ["| assertion | held on | closest margin |", "|---|---:|---:|"]
    lines += [row(f"{name} (seeds {args.seeds[0]}-{args.seeds[-1]})", values) for name, values in margins.items()]
    records = [r for r in json.loads((ROOT / "benchmarks" / "results.json").read_text())
               if (r["recipe"], r["network"]) == ("notebook", "Net") and r["width"] == 8]
    # The test set has 10,000 digits, so the mistakes are the error rate times 100.
    mistakes = [round((100 - r["last_test_acc"]) * 100) for r in records]
    lines.append(row(f"fewer than 100 test digits misread ({len(records)} runs of Net in results.json)",
                     [100 - m - 0.5 for m in mistakes]))
    if args.weights is not None:
        paths = sorted(args.weights.rglob("model.pt"))
        drawing_margins = {name: [] for name in DRAWING_CHECKS}
        for path in paths:
            model = utils.load_model(Net(), path).eval()
            readings = utils.drawing_readings(model)
            right = {way: [sum(read == digit for digit, read in enumerate(reads)) for reads in pair]
                     for way, pair in readings.items()}
            for name, check in DRAWING_CHECKS.items():
                drawing_margins[name].append(check(right))
        lines += [row(f"{name} ({len(paths)} trained networks)", values) for name, values in drawing_margins.items()]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
