"""Re-run what every run-dependent assertion of S6.ipynb reads, over many seeds, and say how often each holds.

    python benchmarks/assertions.py --seeds $(seq 1 20)                 # the BatchNorm section's cells
    python benchmarks/assertions.py --seeds $(seq 1 20) --weights artifacts/seeds   # and the trained networks'

The BatchNorm section's computations (the activation spreads at initialisation, the 200-step live
comparison) are repeated for each seed exactly as the notebook's cells make them, on the CPU, and scored
by the same functions the notebook asserts on (`utils.spread_checks`, `live_run_checks`, `mistake_checks`,
`drawing_checks`), which return each assertion as a margin. The trained networks' assertions (the mistakes count, the drawing readings) are
checked on every `model.pt` found under --weights (as `seeds.py --direct --save-weights` stores them) and,
for the mistakes, on every notebook run of Net in results.json. Prints one Markdown row per assertion:
how many seeds it held on, and the closest margin.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # model.py and utils.py, when run as a script
import utils  # noqa: E402

NO_BN_LR, MAX_LR = 0.02, 0.1  # the notebook's NO_BN_LR and the recipe's peak rate


def batch_norm_section(seed: int, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The margins of the notebook's BatchNorm assertions for one seed (N_CHANNELS = 8): its spread and
    live-run cells, computed by the same utils functions as there."""
    networks = utils.networks_for_batch_norm(8, "cpu", seed=seed)
    spreads = {name: utils.activation_spread(network, utils.normalize(images[:128])) for name, network in networks.items()}
    curves = utils.live_comparison(networks, images[:25_600], labels[:25_600], MAX_LR, NO_BN_LR, seed)
    return utils.spread_checks(spreads) | utils.live_run_checks(curves)


def row(name: str, margins: list[float]) -> str:
    """One Markdown row: how many seeds the assertion held on, and the closest margin."""
    held = sum(margin > 0 for margin in margins)
    return f"| {name} | {held} of {len(margins)} | {min(margins):+.3f} |"


def rows(margins_per_run: list[dict[str, float]], what: str) -> list[str]:
    """One row per assertion over every run's margins."""
    return [row(f"{name} ({what})", [margins[name] for margins in margins_per_run]) for name in margins_per_run[0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 21)))
    parser.add_argument("--weights", type=Path, help="a folder searched for model.pt files (utils.save_model)")
    args = parser.parse_args()
    if args.weights is not None and not args.weights.is_dir():
        parser.error(f"--weights: {args.weights} is not a folder")
    torch.set_num_threads(1)
    images, labels = utils.mnist_tensors(train=True)
    section = []
    for seed in args.seeds:
        section.append(batch_norm_section(seed, images, labels))
        print(f"seed {seed}: " + ", ".join(f"{m:+.3f}" for m in section[-1].values()), file=sys.stderr, flush=True)
    lines = ["| assertion | held on | closest margin |", "|---|---:|---:|"]
    lines += rows(section, f"seeds {args.seeds[0]}-{args.seeds[-1]}")
    runs = [r for r in json.loads((ROOT / "benchmarks" / "results.json").read_text())
            if r["name"] == "notebook" and r["recipe"]["network"] == "Net" and r["recipe"]["width"] == 8]
    # The test set has 10,000 digits, so the mistakes are the error rate times 100.
    lines += rows([utils.mistake_checks(round((100 - r["last_test_acc"]) * 100)) for r in runs],
                  f"{len(runs)} runs of Net in results.json")
    if args.weights is not None:
        paths = sorted(args.weights.rglob("model.pt"))
        drawings = [utils.drawing_checks(utils.drawing_readings(utils.load_model(path).eval())) for path in paths]
        lines += rows(drawings, f"{len(paths)} trained networks")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
