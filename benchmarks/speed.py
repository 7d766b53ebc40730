"""Side-by-side speed of this project's training and the reference recipe it improves on.

Three recipes run in this one process, on the same device, for the same number of epochs: the project
(Net, tensors on the device, batched augmentation), Net through the reference's per-image DataLoader
pipeline, and the reference recipe. The middle one splits the speed-up: against the reference it
measures the lighter network, against the project the data pipeline. An epoch is one training pass over
the 60,000 images plus one pass over the 10,000 test images.
    python benchmarks/speed.py --epochs 2 --data ../shared/mnist
prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # model.py and utils.py, run as a script
from model import Net, ReferenceNet, count_parameters  # noqa: E402
from utils import (MNIST_MEAN, MNIST_STD, Recipe, device_name, load_mnist, mnist_tensors,  # noqa: E402
                   pick_device, seed_everything, test_transforms, train_network)

TRAIN_IMAGES = 60_000
REFERENCE_PARAMETERS = 19_866
REFERENCE_PUBLISHED_ACCURACY = 99.49  # its last epoch of 19, as published
# The reference's training: SGD with momentum, the rate cut to a tenth every 10 epochs, batches of 512.
REFERENCE_TRAINING = dict(batch_size=512, lr=0.05, momentum=0.9, step_size=10, gamma=0.1)


def reference_transforms() -> transforms.Compose:
    """The reference's per-image PIL augmentation."""
    return transforms.Compose([
        transforms.RandomApply([transforms.CenterCrop(22)], p=0.1),
        transforms.Resize((28, 28)),
        transforms.RandomRotation((-15.0, 15.0), fill=0),
        transforms.ToTensor(),
        transforms.Normalize((MNIST_MEAN,), (MNIST_STD,)),
    ])


def run_per_image_pipeline(model: nn.Module, batch_size: int, epochs: int, device: torch.device,
                           data_dir: str | None) -> tuple[list[float], list[float]]:
    """Train `model` as the reference recipe does: a DataLoader that decodes and augments image by image
    with PIL in two worker processes, SGD (lr 0.05, momentum 0.9) with a step schedule; returns the seconds
    and the test accuracy (%) of each epoch."""
    model = model.to(device)
    loader_args = dict(batch_size=batch_size, num_workers=2, pin_memory=device.type == "cuda")
    train_loader = torch.utils.data.DataLoader(load_mnist(True, data_dir, reference_transforms()),
                                               shuffle=True, **loader_args)
    test_loader = torch.utils.data.DataLoader(load_mnist(False, data_dir, test_transforms()), **loader_args)
    training = REFERENCE_TRAINING
    optimizer = torch.optim.SGD(model.parameters(), lr=training["lr"], momentum=training["momentum"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=training["step_size"], gamma=training["gamma"])
    seconds, accuracies = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            # cross_entropy = nll_loss after log_softmax; on ReferenceNet's log-probabilities it is its nll_loss.
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in test_loader:
                correct += (model(images.to(device)).argmax(1) == labels.to(device)).sum().item()
        seconds.append(time.perf_counter() - start)
        accuracies.append(100.0 * correct / len(test_loader.dataset))
    return seconds, accuracies


def run_reference(epochs: int, device: torch.device, data_dir: str | None) -> tuple[list[float], list[float]]:
    """The reference recipe: its network, its per-image pipeline, batches of 512."""
    model = ReferenceNet()
    assert count_parameters(model) == REFERENCE_PARAMETERS, count_parameters(model)
    return run_per_image_pipeline(model, REFERENCE_TRAINING["batch_size"], epochs, device, data_dir)


def run_net_per_image(epochs: int, device: torch.device, data_dir: str | None) -> tuple[list[float], list[float]]:
    """This project's Net through the reference's per-image pipeline, in batches of 256 as the project uses:
    against the reference it isolates the network, against the project the data pipeline."""
    return run_per_image_pipeline(Net(), 256, epochs, device, data_dir)


def run_project(epochs: int, device: torch.device, data_dir: str | None, precision: str = "float32",
                seed: int = 1) -> tuple[list[float], list[float]]:
    """Train this project's Net with its tensor pipeline, as the notebook does, in `precision`."""
    # Augmented epochs only: the recipe's clean final epochs skip the augmentation and would flatter it.
    recipe = Recipe(epochs=epochs, clean_final_epochs=0, precision=precision, seed=seed)
    _, history = train_network(recipe, *mnist_tensors(train=True, data_dir=data_dir, device=device),
                               *mnist_tensors(train=False, data_dir=data_dir, device=device), verbose=False)
    return history.epoch_seconds, history.test_acc


def compare_precisions(epochs: int, device: torch.device, data_dir: str | None, seed: int) -> None:
    """Seconds per epoch of the project's recipe in float32 and in bfloat16, run in turn twice each (so
    that a drift of the machine's speed falls on both), and their ratio; prints one JSON line last."""
    seconds = {"float32": [], "bfloat16": []}
    for _ in range(2):
        for precision in seconds:
            epoch_seconds, accuracies = run_project(epochs, device, data_dir, precision, seed)
            seconds[precision] += epoch_seconds
            print(f"{precision}: {', '.join(f'{s:.1f}' for s in epoch_seconds)} s per epoch, "
                  f"{accuracies[-1]:.2f}% after {epochs}", file=sys.stderr, flush=True)
    means = {precision: statistics.mean(values) for precision, values in seconds.items()}
    ratio = means["bfloat16"] / means["float32"]
    print(f"bfloat16 / float32 time per epoch: {ratio:.3f} ({device_name(device)}, {epochs} epochs a run)")
    print(json.dumps({f"{p}_s_per_epoch": round(m, 3) for p, m in means.items()}
                     | {"ratio": round(ratio, 4), "epochs": epochs, "device": device_name(device)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", default=None, help="MNIST root (default: $MNIST_DATA_DIR or ../shared/mnist)")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--precision", action="store_true",
                        help="instead: the project's recipe in float32 and in bfloat16, alternating, two runs each")
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else pick_device()
    if args.precision:
        compare_precisions(args.epochs, device, args.data, args.seed)
        return

    results = {}
    recipes = (("project", lambda *run_args: run_project(*run_args, seed=args.seed)),
               ("net-per-image", run_net_per_image), ("reference", run_reference))
    for name, run in recipes:
        seed_everything(args.seed)
        seconds, accuracies = run(args.epochs, device, args.data)
        per_epoch = statistics.mean(seconds)
        results[name] = dict(s_per_epoch=per_epoch, images_per_s=TRAIN_IMAGES / per_epoch, test_acc=accuracies[-1])
        print(f"{name}: {', '.join(f'{s:.1f}' for s in seconds)} s per epoch", file=sys.stderr, flush=True)

    print(f"\n{'recipe':<14} {'s/epoch':>8} {'images/s':>9} {'test acc':>9}   ({args.epochs} epochs, "
          f"{device_name(device)})")
    for name, r in results.items():
        print(f"{name:<14} {r['s_per_epoch']:8.2f} {r['images_per_s']:9.0f} {r['test_acc']:8.2f}%")
    seconds = {name: r["s_per_epoch"] for name, r in results.items()}
    ratios = {"ratio": seconds["project"] / seconds["reference"],
              "network_ratio": seconds["net-per-image"] / seconds["reference"],
              "pipeline_ratio": seconds["project"] / seconds["net-per-image"]}
    print(f"project / reference time per epoch: {ratios['ratio']:.3f}\n"
          f"  the lighter network (Net / reference, both through the per-image pipeline): {ratios['network_ratio']:.3f}\n"
          f"  the tensor pipeline (project / Net through the per-image pipeline): {ratios['pipeline_ratio']:.3f}\n")
    print(json.dumps({f"{name}_{key}": round(value, 4) for name, r in results.items() for key, value in r.items()}
                     | {key: round(value, 4) for key, value in ratios.items()}
                     | {"epochs": args.epochs, "device": device_name(device)}))


if __name__ == "__main__":
    main()
