"""Write a trained Net's weights, BatchNorm folded in, to the weight file the page in this folder reads.

    python docs/export_weights.py                       # artifacts/model.pt (the notebook's) -> docs/weights.json
    python docs/export_weights.py --model other.pt --out /tmp/weights.json

The exported network is scored on the 10,000 MNIST test digits as the page will run it (rebuilt from
the file), and the file records that accuracy.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from model import Net  # noqa: E402
from utils import TensorLoader, load_model, mnist_tensors, predictions  # noqa: E402
from weights_format import browser_weights, net_from_browser_weights  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "model.pt",
                        help="a state_dict saved by utils.save_model (default: the notebook's artifacts/model.pt)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "weights.json")
    parser.add_argument("--data", default=None, help="MNIST root (default: $MNIST_DATA_DIR or ../shared/mnist)")
    args = parser.parse_args()
    if not args.model.exists():
        parser.error(f"{args.model} does not exist: run the notebook first (it saves artifacts/model.pt), "
                     "or pass --model")

    state = torch.load(args.model, map_location="cpu", weights_only=True)
    # The first convolution has 2 x n_channels filters (model.stage_widths).
    n_channels = state["features.0.0.weight"].shape[0] // 2
    model = load_model(Net(n_channels=n_channels), args.model).eval()
    weights = browser_weights(model, source=args.model.name)
    exported = net_from_browser_weights(json.loads(json.dumps(weights)))
    predicted, true = predictions(exported, TensorLoader.for_evaluation(*mnist_tensors(train=False, data_dir=args.data)))
    weights["test_accuracy"] = round(100.0 * (predicted == true).float().mean().item(), 2)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(weights, separators=(",", ":")))
    print(f"{args.out}: {args.out.stat().st_size / 1000:.1f} kB, Net(n_channels={n_channels}), "
          f"{weights['parameters']:,} trainable parameters ({weights['folded_parameters']:,} numbers once "
          f"BatchNorm is folded in), {weights['test_accuracy']:.2f}% on the 10,000 test digits")


if __name__ == "__main__":
    main()
