"""Score a training recipe on a validation split carved from the 60,000 training images.

Hyper-parameters and widths are chosen with this script, never on the test set:
    python benchmarks/validate.py --width 8 --seeds 1 --epochs 15 --max-lr 0.1
prints the last-epoch validation accuracy of each run, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from model import Net  # noqa: E402
from utils import Augmentation, TensorLoader, fit, mnist_tensors, seed_everything, split_validation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=8, help="Net's n_channels")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout in the 7x7 stage")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--degrees", type=float, default=Augmentation.max_degrees)
    parser.add_argument("--shift", type=float, default=Augmentation.max_shift)
    parser.add_argument("--zoom", type=float, default=Augmentation.max_zoom)
    parser.add_argument("--val-size", type=int, default=10_000)
    parser.add_argument("--data", default=None, help="MNIST root (default: $MNIST_DATA_DIR or ../shared/mnist)")
    args = parser.parse_args()

    images, labels = mnist_tensors(train=True, data_dir=args.data)
    # The split is fixed (seed 0) so that every recipe is scored on the same 10,000 images.
    (train_x, train_y), (val_x, val_y) = split_validation(images, labels, args.val_size, seed=0)
    augmentation = Augmentation(args.degrees, args.shift, args.zoom)
    scores = []
    for seed in args.seeds:
        seed_everything(seed)
        train_loader = TensorLoader(train_x, train_y, args.batch_size, shuffle=True, augmentation=augmentation,
                                    channels_last=True)
        model = train_loader.prepare(Net(n_channels=args.width, dropout=args.dropout))
        val_loader = TensorLoader(val_x, val_y, 1000, channels_last=True)
        history = fit(model, train_loader, val_loader, args.epochs, args.max_lr, args.weight_decay,
                      args.label_smoothing, verbose=False)
        scores.append(history.test_acc[-1])
        print(f"seed {seed}: last-epoch validation accuracy {scores[-1]:.2f}% "
              f"({sum(history.epoch_seconds) / history.epochs:.1f} s/epoch)", flush=True)
    print(json.dumps({**vars(args), "val_acc": scores, "median_val_acc": statistics.median(scores)}))


if __name__ == "__main__":
    main()
