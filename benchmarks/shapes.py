"""The map of network shapes: every shape the ledger scored, its parameters, multiply-adds, validation accuracy
and paired gain over the baseline of its budget, as a Markdown table and a two-panel figure.

    python benchmarks/crossval.py shape-net shape-public shape-wide-14 ... --folds 0 3   # the screen
    python benchmarks/shapes.py --folds 0 3      # prints the table, writes benchmarks/shapes.png
    python benchmarks/shapes.py --gpu --folds 0 1 2 3 4 5   # the GPU's runs (gpu-shape-...), shapes-gpu.png

A shape scored on fewer than all of --folds is left out; see model.SHAPES for what each name means.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # model.py and utils.py, when run as a script
from model import SHAPES  # noqa: E402
from utils import ShapeScore, plot_shape_map, shape_scores, verdict  # noqa: E402

LEDGER = ROOT / "benchmarks" / "ledger.json"
FIGURES = {False: ROOT / "benchmarks" / "shapes.png", True: ROOT / "benchmarks" / "shapes-gpu.png"}


def shape_table(scores: list[ShapeScore], folds: list[int], on_gpu: bool = False) -> str:
    """The shapes as Markdown, one row each, with the verdict of the 2-SE rule on their paired gain (and, for
    runs on one CPU thread, the CPU seconds per epoch: a GPU's runs shared it, so their time says little)."""
    lines = [f"| shape | widths at 28 / 14 / 7, transition | parameters | multiply-adds | validation accuracy, "
             f"folds {', '.join(map(str, folds))} (%) | gain over its baseline | verdict |"
             + ("" if on_gpu else " CPU s/epoch |"), "|---|---|---:|---:|---:|---|---|" + ("" if on_gpu else "---:|")]
    for score in scores:
        shape = SHAPES[score.name]
        widths = " / ".join(",".join(map(str, stage)) or "-" for stage in (shape.at_28, shape.at_14, shape.at_7))
        head = ", 1x1 head " + ",".join(map(str, shape.head)) if shape.head else ""
        detail = f"{widths}, {shape.transition}{'' if shape.padded else ', unpadded'}{head}"
        outcome = "" if score.is_baseline else verdict(score.gain, score.standard_error)
        lines.append(f"| {score.name} | {detail} | {score.parameters:,} | {score.multiply_adds:,} | "
                     f"{score.val_acc:.3f} | {score.gain_text()} | {outcome} |"
                     + ("" if on_gpu else f" {score.cpu_seconds_per_epoch:.1f} |"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 3], choices=range(6), metavar="FOLD",
                        help="the folds every shape shown was scored on (default: 0 3, the screen's)")
    parser.add_argument("--gpu", action="store_true", help="the runs on a GPU (gpu-shape-...) instead of the CPU's")
    args = parser.parse_args()
    scores = shape_scores(json.loads(LEDGER.read_text()), args.folds, "gpu-shape-" if args.gpu else "shape-")
    if not scores:
        parser.error(f"the ledger has no {'GPU ' if args.gpu else ''}shape scored on all of folds {args.folds}")
    print(shape_table(scores, args.folds, args.gpu))
    plot_shape_map(scores).savefig(FIGURES[args.gpu], dpi=120)
    print(f"wrote {FIGURES[args.gpu]}")


if __name__ == "__main__":
    main()
