"""Write a trained Net's weights, BatchNorm folded in, to the weight file the page in this folder reads.

    python docs/export_weights.py                       # artifacts/model.pt (the notebook's) -> docs/weights.json
    python docs/export_weights.py --model other.pt --out /tmp/weights.json

The exported network is scored on the 10,000 MNIST test digits as the page will run it (rebuilt from
the file), and the file records that accuracy. A network below 99% is not written unless --force is given;
one with a NaN or infinite number never is, and neither is a file at --out that is not a weight file.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script, only docs/ is on the path; model and utils sit one folder up
from model import Net  # noqa: E402
from utils import TensorLoader, load_model, mnist_tensors, predictions  # noqa: E402
from weights_format import BROWSER_FORMAT, browser_weights, decode_tensor, net_from_browser_weights  # noqa: E402

# Below this the page would misread too many drawings to show what the notebook's network can do.
MIN_EXPORT_ACCURACY = 99.0


def load_net(path: Path) -> Net:
    """The Net saved at `path` by utils.save_model, in eval mode; raises ValueError saying why it cannot be."""
    if not path.is_file():
        raise ValueError(f"no model file at {path}: run the notebook first (it saves artifacts/model.pt), "
                         "or pass --model")
    model = load_model(path)  # a ValueError for a file cut short, unreadable, or not a saved model
    if not isinstance(model, Net):
        raise ValueError(f"{path} holds a {type(model).__name__}, expected a Net (model.py), "
                         "the only network the page runs")
    return model.eval()


def page_weights(model: Net, source: Path) -> tuple[dict, Net]:
    """The weight file of `model`, and the Net rebuilt from it: the network the page will run. Raises
    ValueError for a Net changed in its blocks (residual, an activated 1x1, ...), which the file cannot hold."""
    try:
        weights = browser_weights(model, source=source.name)
        # Through JSON, as the page reads it, so that what is scored is what is written.
        return weights, net_from_browser_weights(json.loads(json.dumps(weights)))
    except ValueError as error:
        raise ValueError(f"{source} holds a Net whose layers the weight file cannot describe ({error}): "
                         "the page runs only the plain Net of model.py") from error


def non_finite_tensors(weights: dict) -> list[str]:
    """The tensors of a weight file that hold NaN or an infinity, named as `layer 3 (conv) weight`."""
    return [f"layer {index} ({layer['kind']}) {key}"
            for index, layer in enumerate(weights["layers"]) for key in ("weight", "bias")
            if layer.get(key) is not None and not np.isfinite(decode_tensor(layer[key])).all()]


def check_exportable(weights: dict, test_accuracy: float, force: bool) -> None:
    """Raise ValueError unless the weight file is fit for the page: every number finite, and (unless `force`)
    a test accuracy of at least MIN_EXPORT_ACCURACY percent."""
    # --force does not cover a NaN: the page refuses such a file, so writing it would only replace a working one.
    broken = non_finite_tensors(weights)
    if broken or not math.isfinite(test_accuracy):
        found = ", ".join(broken) if broken else f"test accuracy {test_accuracy}"
        raise ValueError(f"the exported network holds NaN or infinite numbers ({found}), expected only finite "
                         "ones: the training diverged, or the model file is damaged")
    if test_accuracy < MIN_EXPORT_ACCURACY and not force:
        raise ValueError(f"the exported network scores {test_accuracy:.2f}% on the test digits, below the "
                         f"{MIN_EXPORT_ACCURACY:.2f}% a network needs for the page; --force exports it anyway")


def check_can_overwrite(path: Path) -> None:
    """Raise ValueError if `path` exists and is not a weight file of BROWSER_FORMAT, which must not be lost."""
    if not path.exists():
        return
    try:
        content = json.loads(path.read_bytes())
    except (OSError, ValueError):  # unreadable, or not JSON (binary files included)
        content = None
    if not (isinstance(content, dict) and content.get("format") == BROWSER_FORMAT):
        raise ValueError(f"{path} exists and is not a weight file of format {BROWSER_FORMAT!r}: not overwriting "
                         "it. Pass another --out, or move that file away (delete it if it is a damaged "
                         "weight file)")


def accuracy_on_test_digits(model: Net, data_dir: str | None) -> float:
    """Accuracy (%) of `model` on the 10,000 MNIST test digits."""
    predicted, true = predictions(model, TensorLoader.for_evaluation(*mnist_tensors(train=False, data_dir=data_dir)))
    return 100.0 * (predicted == true).float().mean().item()


def main(argv: list[str] | None = None) -> None:
    """Export --model to --out, as the module's docstring says; refusals exit with a message, not a traceback."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "model.pt",
                        help="a model saved by utils.save_model (default: the notebook's artifacts/model.pt)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "weights.json")
    parser.add_argument("--data", default=None, help="MNIST root (default: $MNIST_DATA_DIR or ../shared/mnist)")
    parser.add_argument("--force", action="store_true",
                        help=f"write the file even if the network scores below {MIN_EXPORT_ACCURACY}%%")
    args = parser.parse_args(argv)
    try:
        check_can_overwrite(args.out)  # first, so that a refusal does not wait for the network to be scored
        model = load_net(args.model)
        weights, exported = page_weights(model, args.model)
    except ValueError as error:
        parser.error(str(error))
    weights["test_accuracy"] = round(accuracy_on_test_digits(exported, args.data), 2)
    try:
        check_exportable(weights, weights["test_accuracy"], args.force)
    except ValueError as error:
        parser.error(str(error))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target, then renamed: an interrupted export leaves the old file whole.
    partial = args.out.with_name(args.out.name + ".part")
    partial.write_text(json.dumps(weights, separators=(",", ":")))
    partial.replace(args.out)
    print(f"wrote {args.out}: {args.out.stat().st_size / 1000:.1f} kB, Net(n_channels={model.n_channels}), "
          f"{weights['parameters']:,} trainable parameters ({weights['folded_parameters']:,} numbers once "
          f"BatchNorm is folded in), {weights['test_accuracy']:.2f}% on the 10,000 test digits")


if __name__ == "__main__":
    main()
