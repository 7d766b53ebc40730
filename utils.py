"""Helpers for the S6 MNIST walkthrough, in the order the notebook uses them.

Each section below opens with a banner that names the notebook section it serves:

1. Setup: the run's Recipe, seeds and the device.
2. The data: loading MNIST, normalising, augmenting, batching on the device.
3. The model: where to spend the parameters (the shape screen); the model's own checks live in model.py.
4. BatchNorm, made visible: activation spreads and the first training steps.
5. Training: one step, one epoch (`train`), testing, BatchNorm statistics, the schedule, `fit`, saving.
6. Results: curves, lagging statistics, predictions, mistakes, the confusion matrix.
7. What each ingredient buys: paired cross-validation gains and their figure.
8. What the network sees: filters, feature maps, occlusion.
9. Your own handwriting: preparing a drawing as MNIST's digits were prepared.
10. Even smaller: the seed table.
11. Did we meet the constraints?

The notebook asserts only what held on many seeds; the functions named `..._checks` return those
assertions as margins (positive where one holds), so that benchmarks/assertions.py re-runs the same ones.
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter
from PIL import Image, ImageDraw
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision import datasets, transforms
from tqdm.auto import tqdm

from model import (IMAGE_SIZE, NUM_CLASSES, ConvBlock, build_network, check_network, count_parameters, fraction,
                   layer_costs, whole_number)

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MAX_PARAMETERS, MAX_EPOCHS, MIN_TEST_ACCURACY = 20_000, 20, 99.40
# At most one progress-bar update a second: in a notebook each update is a message to the page, and the
# thousands a long training cell would send otherwise make `pytest --nbval` time out waiting for output.
PROGRESS_SECONDS = 1.0
# Beside a checkout of this project, the offline machines keep a copy of MNIST here.
SHARED_MNIST = Path(__file__).resolve().parent.parent / "shared" / "mnist"
SCHEDULES = ("one-cycle", "step")
OPTIMIZERS = ("sgd", "adam")
# "auto": bfloat16 where the CPU computes it natively, float32 elsewhere (`pick_precision`).
PRECISIONS = ("auto", "float32", "bfloat16")


# ------------------------------------------------------------ 1. Setup: the run's Recipe, seeds, device


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random transforms applied to each training image: an affine transform, and
    optionally an elastic distortion on top of it (Simard, Steinkraus and Platt, 2003)."""

    max_degrees: float = 10.0  # rotation in [-max_degrees, +max_degrees]
    max_shift: float = 0.1  # translation, as a fraction of the image size, in each direction
    max_zoom: float = 0.1  # scale in [1 - max_zoom, 1 + max_zoom]
    elastic_alpha: float = 0.0  # scale of the elastic displacement field, in pixels (0: no elastic distortion)
    elastic_sigma: float = 4.0  # width of the Gaussian that smooths that field, in pixels

    def __post_init__(self) -> None:
        # Beyond these a transform no longer keeps the digit: upside down, pushed out of the frame,
        # shrunk to nothing or mirrored (a zoom of 1 - 1.5 is negative).
        object.__setattr__(self, "max_degrees", fraction(self.max_degrees, "max_degrees", 0.0, 180.0))
        object.__setattr__(self, "max_shift", fraction(self.max_shift, "max_shift", 0.0, 0.5))
        object.__setattr__(self, "max_zoom", fraction(self.max_zoom, "max_zoom", 0.0, 1.0))
        object.__setattr__(self, "elastic_alpha", fraction(self.elastic_alpha, "elastic_alpha", 0.0, math.inf))
        object.__setattr__(self, "elastic_sigma", fraction(self.elastic_sigma, "elastic_sigma", 0.1, math.inf))


@dataclass(frozen=True)
class Recipe:
    """Every setting of one run: the network, the seed, the precision and every training choice. `fit` and
    `train_network` train from it, and a run's History keeps it, resolved, so a record says what it trained.

    The defaults are the notebook's run. `precision="auto"` is resolved when the run starts (`resolved`):
    bfloat16 on a CPU that computes it natively, float32 elsewhere (`pick_precision`).
    """

    network: str = "Net"  # a name in model.NETWORKS
    width: int | None = None  # Net's n_channels (None: 8); a network of one fixed width keeps None
    dropout: float = 0.0  # Dropout after every ConvBlock (0: none)
    seed: int = 1  # seeds the weights (torch's global generator) and the run's own generator (batches)
    precision: str = "auto"  # "float32", "bfloat16" (convolutions and linear layers under autocast), "auto"
    epochs: int = 19
    max_lr: float = 0.1  # the schedule's peak learning rate
    schedule: str = "one-cycle"  # or "step" (`make_scheduler`)
    step_epochs: int = 10  # with the step schedule: epochs between cuts of the rate to a tenth
    optimizer: str = "sgd"  # SGD with Nesterov momentum, or "adam"
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    batch_size: int = 256
    augmentation: Augmentation | None = Augmentation()  # None: train on the digits as they are
    clean_final_epochs: int = 2  # the last epochs train on unaugmented digits
    bn_batches: int = 40  # unaugmented batches that BatchNorm's statistics are recomputed from (0: keep its own)
    ema_decay: float = 0.0  # above 0: score an exponential moving average of the weights with this decay

    def __post_init__(self) -> None:
        checked = dict(zip(("width", "dropout"), check_network(self.network, self.width, self.dropout)))
        checked["seed"] = whole_number(self.seed, "seed", minimum=0)
        for name in ("epochs", "step_epochs", "batch_size"):
            checked[name] = whole_number(getattr(self, name), name)
        for name in ("clean_final_epochs", "bn_batches"):
            checked[name] = whole_number(getattr(self, name), name, minimum=0)
        checked["max_lr"] = fraction(self.max_lr, "max_lr", 0.0, math.inf)
        if checked["max_lr"] == 0:
            raise ValueError("max_lr must be above 0: a learning rate of 0 trains nothing")
        checked["weight_decay"] = fraction(self.weight_decay, "weight_decay", 0.0, math.inf)
        checked["label_smoothing"] = fraction(self.label_smoothing, "label_smoothing")
        checked["ema_decay"] = fraction(self.ema_decay, "ema_decay")
        for name, allowed in (("schedule", SCHEDULES), ("optimizer", OPTIMIZERS), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.augmentation is not None and not isinstance(self.augmentation, Augmentation):
            raise ValueError(f"augmentation must be an Augmentation or None, got {self.augmentation!r}")
        for name, value in checked.items():  # NumPy integers become ints, so the recipe writes out as JSON
            object.__setattr__(self, name, value)

    def resolved(self, device: torch.device) -> "Recipe":
        """This recipe with `precision="auto"` replaced by what it means on `device`."""
        return self if self.precision != "auto" else replace(self, precision=pick_precision(device)[0])

    @classmethod
    def from_dict(cls, values: dict) -> "Recipe":
        """The recipe that `dataclasses.asdict` wrote out (as stored in a History's JSON)."""
        augmentation = values.get("augmentation")
        return cls(**{**values, "augmentation": None if augmentation is None else Augmentation(**augmentation)})


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch's global generator (all devices) so that a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device() -> torch.device:
    """CUDA if there is a GPU, then Apple's MPS, else the CPU; says which."""
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    print(f"Training on {device.type}: {device_name(device)}")
    return device


def pick_precision(device: torch.device) -> tuple[str, str]:
    """What `precision="auto"` means on `device`, and why: bfloat16 on a CPU that computes it natively
    (AVX-512 BF16 or AMX), where cross-validation found it within noise of float32 and it ran faster;
    float32 elsewhere."""
    native = [getattr(torch.cpu, check, lambda: False)() for check in ("_is_avx512_bf16_supported",
                                                                       "_is_amx_tile_supported")]
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and any(native):
        return "bfloat16", ("this CPU computes bfloat16 natively; in cross-validation bfloat16 scored within "
                            "noise of float32, and it ran faster")
    if device.type == "cpu":
        return "float32", "this CPU has no native bfloat16, which it would emulate, slowly"
    return "float32", "bfloat16 has been measured on CPUs only"


def device_name(device: torch.device) -> str:
    """A readable name for the device, to store beside the numbers it produced."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    threads = torch.get_num_threads()
    return f"CPU ({os.cpu_count()} cores, {threads} thread{'s' if threads > 1 else ''})"


def on_device(model: nn.Module, device: torch.device | str) -> nn.Module:
    """`model` moved to `device`; on a CPU also to channels-last memory, which its convolutions run faster
    (the loaders hand the CPU channels-last batches to match)."""
    device = torch.device(device)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cpu" else model


# -------------------------------------------------------------------------------------- 2. The data

# The size of each of MNIST's four raw files (IDX format: a header, then one byte per pixel or label).
MNIST_FILE_BYTES = {
    "train-images-idx3-ubyte": 16 + 60_000 * 28 * 28, "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28, "t10k-labels-idx1-ubyte": 8 + 10_000,
}


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """Where MNIST lives and whether torchvision may download it there.

    Order: the argument, then $MNIST_DATA_DIR, then ../shared/mnist beside the checkout, then ./data
    (downloading, as on Colab).
    """
    for candidate in (data_dir, os.environ.get("MNIST_DATA_DIR") or None):
        if candidate is not None:
            return Path(candidate), False
    if SHARED_MNIST.is_dir():
        return SHARED_MNIST, False
    return Path("data"), True


def check_mnist_files(root: Path) -> None:
    """Raise a ValueError naming any raw MNIST file under `root` whose size is not MNIST's: a file cut short
    by a broken download, say, which torchvision would otherwise report as missing or misread."""
    for name, expected in MNIST_FILE_BYTES.items():
        path = root / "MNIST" / "raw" / name
        if path.is_file() and path.stat().st_size != expected:
            raise ValueError(f"{path} is corrupt: {path.stat().st_size:,} bytes, expected {expected:,}. "
                             "Delete it (it is downloaded again where the internet is reachable) or copy a good one.")


def load_mnist(train: bool, data_dir: str | os.PathLike | None = None, transform=None) -> datasets.MNIST:
    """The MNIST training or test set through torchvision, with one clear error when it cannot be had."""
    root, download = resolve_data_dir(data_dir)
    check_mnist_files(root)
    try:
        dataset = datasets.MNIST(root=str(root), train=train, download=download, transform=transform)
    except Exception as error:  # torchvision raises RuntimeError or URLError from deep inside
        raise FileNotFoundError(
            f"MNIST not found under '{root}' ({type(error).__name__}: {error}). "
            "Set MNIST_DATA_DIR (or pass data_dir) to a folder holding MNIST/raw/, "
            "or run where the internet is reachable so that it downloads into ./data."
        ) from None  # the message above says all; torchvision's own traceback would bury it
    labels = dataset.targets
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise ValueError(f"the MNIST {'training' if train else 'test'} labels under '{root}' run from "
                         f"{int(labels.min())} to {int(labels.max())}; MNIST's labels are the digits 0 to 9")
    return dataset


def mnist_tensors(train: bool, data_dir: str | os.PathLike | None = None,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """All images (uint8, N x 1 x 28 x 28) and labels (int64, N) of one split, as tensors on `device`."""
    dataset = load_mnist(train, data_dir)
    return dataset.data.unsqueeze(1).to(device), dataset.targets.to(device)


def _image_grid(images: torch.Tensor, titles: Sequence[str], columns: int, figsize_per: float = 1.1) -> Figure:
    """Show grey images in a grid, one title each."""
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * figsize_per, rows * figsize_per * 1.15),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image.squeeze().cpu().numpy(), cmap="gray")
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_samples(images: torch.Tensor, labels: torch.Tensor, count: int = 32, columns: int = 8) -> Figure:
    """A grid of the first `count` images with their labels."""
    return _image_grid(images[:count], [str(int(label)) for label in labels[:count]], columns)


def test_transforms() -> transforms.Compose:
    """Test images are only scaled to [0, 1] and normalised with the training set's mean and std."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or [0, 1] float) images -> float images with the training set's mean 0 and std 1."""
    if images.dtype == torch.uint8:
        images = images.float() / 255
    return (images - MNIST_MEAN) / MNIST_STD


def train_transforms(aug: Augmentation = Augmentation()) -> transforms.Compose:
    """Per-image (PIL) version of the training augmentation: what `augment_batch` does to a whole batch."""
    return transforms.Compose([
        transforms.RandomAffine(degrees=aug.max_degrees, translate=(aug.max_shift, aug.max_shift),
                                scale=(1 - aug.max_zoom, 1 + aug.max_zoom)),
        transforms.ToTensor(),
        transforms.Normalize((MNIST_MEAN,), (MNIST_STD,)),
    ])


def elastic_displacement(n: int, size: int, alpha: float, sigma: float, device: torch.device,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Random smooth displacement fields, N x size x size x 2, in pixels: uniform noise in [-1, 1] for every
    pixel and direction, smoothed by a Gaussian of `sigma` pixels (one pass per axis), scaled by `alpha`."""
    radius = max(1, round(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    field = torch.empty(n * 2, 1, size, size, device=device).uniform_(-1, 1, generator=generator)
    for shape in ((1, 1, 1, -1), (1, 1, -1, 1)):  # along the width, then along the height
        padding = (radius, radius, 0, 0) if shape[-1] == -1 else (0, 0, radius, radius)
        field = F.conv2d(F.pad(field, padding, mode="reflect"), kernel.reshape(shape))
    return alpha * field.reshape(n, 2, size, size).permute(0, 2, 3, 1)


def augment_batch(images: torch.Tensor, aug: Augmentation = Augmentation(),
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate, shift and zoom every image of a float batch (N x C x H x W, values in [0, 1]) by its own
    random amounts, drawn from `generator` (None: torch's global one), and distort it elastically if
    `aug.elastic_alpha` is above 0, in one `grid_sample` call on the batch's device."""
    n, device = images.shape[0], images.device
    angle = torch.empty(n, device=device).uniform_(-1, 1, generator=generator) * math.radians(aug.max_degrees)
    zoom = torch.empty(n, device=device).uniform_(1 - aug.max_zoom, 1 + aug.max_zoom, generator=generator)
    # affine_grid coordinates run from -1 to 1, so a shift of a fraction f of the image is 2 f.
    shift = torch.empty(n, 2, device=device).uniform_(-1, 1, generator=generator) * 2 * aug.max_shift
    # theta maps output coordinates to input coordinates: the inverse of the wanted transform.
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    if aug.elastic_alpha > 0:
        # Each output pixel samples a few pixels away, by a field that varies smoothly across the digit:
        # a pixel is 2 / size in grid coordinates.
        size = images.shape[-1]
        grid = grid + elastic_displacement(n, size, aug.elastic_alpha, aug.elastic_sigma, device,
                                           generator) * (2 / size)
    # Pixels that come from outside the image are 0: MNIST's black background.
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def plot_augmentations(images: torch.Tensor, aug: Augmentation = Augmentation(), views: int = 7,
                       seed: int = 0) -> Figure:
    """Each row: one original digit (uint8) and `views` random augmented versions of it (drawn with `seed`)."""
    generator = run_generator(seed, images.device)
    originals = images.float() / 255
    columns = [originals] + [augment_batch(originals, aug, generator) for _ in range(views)]
    grid = torch.stack(columns, 1).flatten(0, 1)
    titles = (["original"] + [f"view {v}" for v in range(1, views + 1)]) * len(images)
    return _image_grid(grid, titles, columns=views + 1)


def run_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """The random generator one run owns for its batches: the order it shuffles in and the augmentation it
    draws. Any other random draw, anywhere, leaves the run's batches as they are."""
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


class TensorLoader:
    """Batches of (normalised, optionally augmented) images and labels from tensors that already sit on
    the training device: no worker processes, no per-image Python work. Shuffling and augmentation draw
    from `generator` (None: torch's global one)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 128,
                 shuffle: bool = False, augmentation: Augmentation | None = None,
                 generator: torch.Generator | None = None) -> None:
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 N x C x H x W, got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.augmentation = whole_number(batch_size, "batch_size"), shuffle, augmentation
        self.generator = generator
        # Channels-last batches on the CPU, to match the channels-last model `on_device` gives it there.
        self.channels_last = images.device.type == "cpu"

    @classmethod
    def for_training(cls, images: torch.Tensor, labels: torch.Tensor, recipe: Recipe,
                     generator: torch.Generator) -> "TensorLoader":
        """Shuffled batches of the recipe's size, augmented as it says, drawn from the run's `generator`."""
        return cls(images, labels, recipe.batch_size, shuffle=True, augmentation=recipe.augmentation,
                   generator=generator)

    @classmethod
    def for_evaluation(cls, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> "TensorLoader":
        """Unaugmented batches in storage order: no random draws at all."""
        return cls(images, labels, batch_size)

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.images.device
        order = torch.randperm(len(self.images), device=device, generator=self.generator) if self.shuffle else None
        for start in range(0, len(self.images), self.batch_size):
            if order is None:
                images = self.images[start:start + self.batch_size]
                labels = self.labels[start:start + self.batch_size]
            else:
                index = order[start:start + self.batch_size]
                images, labels = self.images[index], self.labels[index]
            images = images.float() / 255
            if self.augmentation is not None:
                images = augment_batch(images, self.augmentation, self.generator)
            images = normalize(images)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, labels


# ------------------------------------------------------------ 3. The model: where to spend the parameters
# The model's own checks (summary, costs, receptive field) live in model.py, beside the network.

SHAPE_BUDGET = 8_000  # shapes below this many parameters are compared with the public design, the rest with Net


def shape_baseline(parameters: int, prefix: str = "shape-") -> str:
    """The ledger candidate a screened shape is paired with: Net's shape, or under SHAPE_BUDGET parameters the
    public design's, both trained the same way in the same sweep (`prefix` "gpu-shape-" for the GPU's runs)."""
    return prefix + ("public" if parameters < SHAPE_BUDGET else "net")


@dataclass
class ShapeScore:
    """One network shape as cross-validation scored it on some folds: its size, its cost, its accuracy, and
    its paired difference from the baseline of its budget."""

    name: str
    parameters: int
    multiply_adds: int
    val_acc: float  # mean over the folds
    gain: float  # over its baseline, fold by fold (0 for a baseline)
    standard_error: float
    cpu_seconds_per_epoch: float
    baseline: str  # the shape it is paired with: "net" or "public"

    @property
    def is_baseline(self) -> bool:
        """Whether this shape is the baseline of its budget (its gain is 0 by construction)."""
        return self.name == self.baseline

    def gain_text(self) -> str:
        """The paired gain with its standard error and baseline, or "baseline" for the baseline itself."""
        if self.is_baseline:
            return "baseline"
        return f"{self.gain:+.3f} ± {self.standard_error:.3f} vs {self.baseline}"


def shape_scores(ledger: list[dict], folds: Sequence[int], prefix: str = "shape-") -> list[ShapeScore]:
    """Every network shape in the ledger (candidates named `prefix` + shape: "shape-..." ran on a CPU,
    "gpu-shape-..." on a GPU) scored on all of `folds`, paired with its baseline on those folds and that
    device; in order of parameters."""
    scores = []
    for name in sorted({r["candidate"] for r in ledger if r["candidate"].startswith(prefix)}):
        runs = ledger_runs(ledger, name)
        if not set(folds) <= runs.keys():
            continue
        chosen = [runs[fold] for fold in folds]
        parameters = chosen[0]["parameters"]
        baseline = shape_baseline(parameters, prefix)
        baseline_accuracy = {fold: r["val_acc"] for fold, r in ledger_runs(ledger, baseline).items() if fold in folds}
        paired = (paired_gain({fold: runs[fold]["val_acc"] for fold in folds}, baseline_accuracy)
                  or (math.nan, math.nan, 0))
        network = build_network(chosen[0]["recipe"]["network"], chosen[0]["recipe"]["width"])
        scores.append(ShapeScore(name.removeprefix(prefix), parameters,
                                 sum(cost.multiply_adds for cost in layer_costs(network)),
                                 statistics.mean(r["val_acc"] for r in chosen), paired[0], paired[1],
                                 statistics.mean(r["cpu_seconds_per_epoch"] for r in chosen),
                                 baseline.removeprefix(prefix)))
    return sorted(scores, key=lambda score: score.parameters)


def plot_shape_map(scores: Sequence[ShapeScore]) -> Figure:
    """Validation accuracy of each shape against its parameters (left) and its multiply-adds per image
    (right), bars of ± 2 standard errors of its paired difference from its baseline; Net's shape and the
    public design's marked."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    marked = {"net": ("Net", "tab:blue", "s"), "public": ("the public design", "tab:orange", "D")}
    for ax, (what, label) in zip(axes, (("parameters", "trainable parameters"),
                                        ("multiply_adds", "multiply-adds per image"))):
        for score in scores:
            name, colour, marker = marked.get(score.name, (None, "tab:grey", "o"))
            x = getattr(score, what)
            error = 0 if score.name in marked or math.isnan(score.standard_error) else 2 * score.standard_error
            ax.errorbar(x, score.val_acc, yerr=error, fmt=marker, color=colour, markersize=7 if name else 5,
                        capsize=3, label=name)
            if not name:
                ax.annotate(score.name, (x, score.val_acc), fontsize=6.5, xytext=(4, 3), textcoords="offset points")
        if what == "parameters":
            ax.axvline(SHAPE_BUDGET, color="grey", linestyle=":", linewidth=1)  # the two budgets
        values = [getattr(score, what) for score in scores]
        ax.set(xlabel=label, xscale="log" if max(values) > 3 * min(values) else "linear")  # log for a wide span
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("validation accuracy (%), mean of the folds")
    handles, labels = axes[0].get_legend_handles_labels()
    named = {label: handle for handle, label in zip(handles, labels) if label}
    axes[0].legend(named.values(), named.keys(), fontsize=8, loc="lower right")
    fig.suptitle("Where to spend the parameters: shapes of one family, trained the same way "
                 "(bars: ± 2 SE of each shape's paired difference from its baseline)", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------- 4. BatchNorm, made visible


def batch_norm_by_hand(maps: torch.Tensor, norm: nn.BatchNorm2d) -> torch.Tensor:
    """What `norm` computes on a batch in training mode, written out: each channel's mean and variance over
    the batch and both spatial dimensions, normalise with them, then apply the learned scale and shift."""
    mean = maps.mean(dim=(0, 2, 3), keepdim=True)
    variance = maps.var(dim=(0, 2, 3), unbiased=False, keepdim=True)  # the batch's own (biased) variance
    normalised = (maps - mean) / torch.sqrt(variance + norm.eps)
    return norm.weight.view(1, -1, 1, 1) * normalised + norm.bias.view(1, -1, 1, 1)


# The three networks the BatchNorm section compares, by the name model.NETWORKS gives each.
BATCH_NORM_NETWORKS = {"with BatchNorm": "Net", "without, default initialisation": "Net-no-bn",
                       "without, Kaiming initialisation": "Net-no-bn-kaiming"}


def networks_for_batch_norm(width: int, device: torch.device | str = "cpu", seed: int = 1) -> dict[str, nn.Module]:
    """The three networks the BatchNorm section compares, on `device`, their weights drawn after seeding
    with `seed`: `Net` with BatchNorm, without it (its convolutions get biases back) with PyTorch's default
    initialisation, and without it with Kaiming's."""
    seed_everything(seed)
    return {label: on_device(build_network(network, width), device) for label, network in BATCH_NORM_NETWORKS.items()}


@torch.no_grad()
def activation_spread(model: nn.Module, images: torch.Tensor) -> list[float]:
    """Standard deviation of the output of every ConvBlock for one normalised batch, in training mode (as
    the first training step sees it); the model's running statistics are left as they were."""
    state = {name: buffer.clone() for name, buffer in model.named_buffers()}
    spreads = []
    hooks = [block.register_forward_hook(lambda _, __, output: spreads.append(float(output.float().std())))
             for block in model.modules() if isinstance(block, ConvBlock)]
    was_training = model.training
    try:
        model.train()
        model(images)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
        for name, buffer in model.named_buffers():
            buffer.copy_(state[name])
    return spreads


def plot_activation_spread(spreads: dict[str, Sequence[float]]) -> Figure:
    """Standard deviation of each ConvBlock's output (log scale), one line per named model."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, values in spreads.items():
        ax.plot(range(1, len(values) + 1), values, "o-", label=name)
    ax.set(xlabel="ConvBlock (1: 28x28, 2-4: 14x14, 5-6: 7x7)", ylabel="standard deviation of its output",
           yscale="log", title="How big the signal is, layer by layer, at initialisation")
    # Labels at 1, 2 and 5 of every decade, so that the smallest spreads can be read off too.
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig


def spread_checks(spreads: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """What the notebook reads in the spread picture, each as a margin (positive: it holds, by that much)."""
    with_bn, plain, kaiming = (spreads[label] for label in BATCH_NORM_NETWORKS)
    return {
        "BatchNorm keeps every block's spread in (0.3, 1.0)": min(min(with_bn) - 0.3, 1.0 - max(with_bn)),
        "default init: last block's spread below a quarter of the first's": plain[0] / 4 - plain[-1],
        "Kaiming init: largest spread below 10 x the smallest": 10 - max(kaiming) / min(kaiming),
    }


def assert_all_hold(margins: Mapping[str, float]) -> None:
    """Print each check's margin; raise an AssertionError naming every check whose margin is not positive."""
    for name, margin in margins.items():
        print(f"{'holds' if margin > 0 else 'FAILS'}  {name}  (margin {margin:+.3f})")
    failed = [name for name, margin in margins.items() if not margin > 0]
    assert not failed, f"these no longer hold on this run: {failed}"


def loss_per_step(model: nn.Module, loader: TensorLoader | Sequence, steps: int, lr: float = 0.1) -> list[float]:
    """Train for `steps` batches with plain SGD (momentum 0.9) at a constant learning rate, one `training_step`
    at a time; returns the loss of every step, to compare how fast two models start learning."""
    steps = whole_number(steps, "steps")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    losses = []
    while len(losses) < steps:
        for images, labels in loader:
            loss, _ = training_step(model, images, labels, optimizer)
            losses.append(loss.item())
            if len(losses) == steps:
                break
        if not losses:
            raise ValueError("the loader yielded no batches")
    return losses


def loss_curves_on_the_same_batches(runs: dict[str, tuple[nn.Module, float]], images: torch.Tensor,
                                    labels: torch.Tensor, steps: int, seed: int,
                                    batch_size: int = 128) -> dict[str, list[float]]:
    """`loss_per_step` for several (model, learning rate) runs that see exactly the same batches in the same
    order: each run's loader shuffles with a generator seeded with `seed`. Each run trains a copy of its
    model, so the models stay as they were built and a second call draws the same curves."""
    curves = {}
    for name, (model, lr) in runs.items():
        loader = TensorLoader(images, labels, batch_size, shuffle=True, generator=run_generator(seed, images.device))
        curves[name] = loss_per_step(copy.deepcopy(model), loader, steps, lr)
    return curves


def live_comparison(networks: dict[str, nn.Module], images: torch.Tensor, labels: torch.Tensor, max_lr: float,
                    no_bn_lr: float, seed: int, steps: int = 200) -> dict[str, list[float]]:
    """The BatchNorm section's live run of the three `networks_for_batch_norm`: the one with BatchNorm and
    the one with default initialisation at `max_lr`, the Kaiming-initialised one at `no_bn_lr`, `steps`
    unaugmented batches of 128 each from `images`, the same batches for all three
    (`loss_curves_on_the_same_batches`); the loss curves, named by network and rate."""
    with_bn, default, kaiming = (networks[label] for label in BATCH_NORM_NETWORKS)
    runs = {f"with BatchNorm, LR {max_lr}": (with_bn, max_lr),
            f"without, default init, LR {max_lr}": (default, max_lr),
            f"without, Kaiming init, LR {no_bn_lr}": (kaiming, no_bn_lr)}
    return loss_curves_on_the_same_batches(runs, images, labels, steps, seed)


def plot_loss_per_step(curves: dict[str, Sequence[float]]) -> Figure:
    """Training loss against the step, one line per named run."""
    fig, ax = plt.subplots(figsize=(7, 4))
    # The reference line goes underneath: a curve that stays at ln 10 must still show on top of it.
    ax.axhline(math.log(NUM_CLASSES), color="grey", linewidth=3, alpha=0.35, zorder=1,
               label="ln 10: guessing uniformly")
    for name, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, linewidth=1.2, zorder=2, label=name)
    ax.set(xlabel="training step (batch)", ylabel="cross-entropy loss", title="The first training steps")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def live_run_checks(curves: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """What the notebook reads in the live run's curves (`live_comparison`), each as a margin; only what
    held on every seed tried: what the Kaiming run does in 200 steps varies from seed to seed."""
    with_bn, default_init, _ = (statistics.mean(losses[-20:]) for losses in curves.values())
    return {"with BatchNorm: mean loss of the last 20 steps below 0.5": 0.5 - with_bn,
            "default init at the recipe's rate: mean loss of the last 20 steps above 2.0": default_init - 2.0}


# -------------------------------------------------------------------------------------- 5. Training


def autocast(precision: str, device: torch.device | str) -> torch.autocast:
    """The arithmetic a run computes in: for "bfloat16", autocast on the device, which runs the convolutions
    and linear layers in bfloat16 (and what follows them on their bfloat16 outputs), while the weights,
    BatchNorm's statistics and the loss (computed from float32 logits) stay float32; plain float32 for
    "float32"."""
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be 'float32' or 'bfloat16' (resolve 'auto' with Recipe.resolved), "
                         f"got {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def training_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
                  precision: str = "float32", label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: forward pass, loss, gradients, weight update; returns the loss and the logits (detached)."""
    # One autocast region per step: autocast caches its bfloat16 copies of the weights until the region
    # ends, and a region spanning several steps would keep computing with the old weights.
    with autocast(precision, images.device):
        logits = model(images)
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)  # the loss in float32
    optimizer.zero_grad(set_to_none=True)  # PyTorch adds gradients up otherwise
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


def train(model: nn.Module, loader: TensorLoader | Sequence, optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, label_smoothing: float = 0.0,
          desc: str = "train", averaged: AveragedModel | None = None,
          precision: str = "float32") -> tuple[float, float]:
    """One epoch of training steps; returns (mean loss, accuracy in %). The scheduler moves the learning
    rate after every step; `averaged`, if given, takes in the new weights after every step."""
    model.train()
    # Sums stay on the device: reading them back each step (.item()) would stall a GPU every batch.
    loss_sum, correct, seen = 0.0, 0, 0
    for images, labels in tqdm(loader, desc=desc, leave=False, mininterval=PROGRESS_SECONDS):
        loss, logits = training_step(model, images, labels, optimizer, precision, label_smoothing)
        if scheduler is not None:
            scheduler.step()
        if averaged is not None:
            averaged.update_parameters(model)
        loss_sum = loss_sum + loss * len(labels)
        correct = correct + (logits.argmax(1) == labels).sum()
        seen += len(labels)
    return mean_loss_and_accuracy(loss_sum, correct, seen, "training")


def evaluation_outputs(model: nn.Module, loader: TensorLoader | Sequence, precision: str = "float32",
                       desc: str = "test") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, labels) of every batch, in evaluation mode, in the run's precision: the one path that
    `test` and `predictions` share, so that both score the same arithmetic. Call it under inference mode."""
    model.eval()
    for images, labels in tqdm(loader, desc=desc, leave=False, mininterval=PROGRESS_SECONDS):
        with autocast(precision, images.device):
            logits = model(images)
        yield logits.float(), labels


@torch.inference_mode()
def test(model: nn.Module, loader: TensorLoader | Sequence, precision: str = "float32") -> tuple[float, float]:
    """Evaluate without gradients; returns (mean loss, accuracy in %)."""
    loss_sum, correct, seen = 0.0, 0, 0
    for logits, labels in evaluation_outputs(model, loader, precision):
        loss_sum = loss_sum + F.cross_entropy(logits, labels, reduction="sum")
        correct = correct + (logits.argmax(1) == labels).sum()
        seen += len(labels)
    return mean_loss_and_accuracy(loss_sum, correct, seen, "test")


def mean_loss_and_accuracy(loss_sum: torch.Tensor | float, correct: torch.Tensor | int, seen: int,
                           what: str) -> tuple[float, float]:
    """An epoch's sums, read back from the device once: (mean loss, accuracy in %)."""
    if seen == 0:
        raise ValueError(f"the {what} loader yielded no batches")
    return float(loss_sum) / seen, 100.0 * float(correct) / seen


@torch.no_grad()
def recompute_batchnorm_statistics(model: nn.Module, loader: TensorLoader | Sequence, batches: int = 40,
                                   precision: str = "float32") -> None:
    """Replace every BatchNorm layer's running mean and variance by their average over the first
    `batches` batches of `loader`, as the model's current weights see them (no gradient step).

    During training, BatchNorm's running averages trail the weights by many steps; at a high learning
    rate they describe an older model, and `eval()` mode then scores a mixture of old and new.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or batches < 1:
        return
    was_training, momenta = model.training, [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # None: a plain average over every batch seen, not an exponential one
    model.train()
    seen = 0
    for images, _ in loader:
        with autocast(precision, images.device):
            model(images)
        seen += 1
        if seen == batches:
            break
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)
    if seen == 0:
        raise ValueError("the loader for BatchNorm statistics yielded no batches")


def make_optimizer(parameters, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over `parameters`: SGD with Nesterov momentum 0.9 (the gradient taken where
    momentum is carrying the weights), or Adam; both with the recipe's weight decay."""
    if recipe.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=recipe.max_lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(parameters, lr=recipe.max_lr, momentum=0.9, nesterov=True,
                           weight_decay=recipe.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The recipe's learning-rate schedule, stepped once per batch.

    "one-cycle": warm up from max_lr / 25 to max_lr over the first 30% of the steps, then anneal to almost
    zero; OneCycleLR also drives the momentum, from 0.95 down to 0.85 while the rate climbs and back up
    while it anneals (so the optimizer's own momentum is only a starting value).
    "step": max_lr for `step_epochs` epochs, then a tenth of it for as many, and so on, with the
    optimizer's momentum left as it is.
    """
    if recipe.schedule == "one-cycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.max_lr, epochs=recipe.epochs,
                                                   steps_per_epoch=steps_per_epoch)
    for group in optimizer.param_groups:
        group["lr"] = recipe.max_lr
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_epochs * steps_per_epoch, gamma=0.1)


def schedule_trace(recipe: Recipe, steps_per_epoch: int) -> tuple[list[float], list[float]]:
    """The learning rate and momentum (or Adam's first beta) at every training step, read from the
    recipe's own optimizer and scheduler, stepped on one dummy parameter."""
    optimizer = make_optimizer([nn.Parameter(torch.zeros(1))], recipe)
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch)
    rates, momenta = [], []
    for _ in range(recipe.epochs * steps_per_epoch):
        group = optimizer.param_groups[0]
        rates.append(group["lr"])
        momenta.append(group["momentum"] if "momentum" in group else group["betas"][0])
        optimizer.step()
        scheduler.step()
    return rates, momenta


def plot_schedule(rates: Sequence[float], momenta: Sequence[float], steps_per_epoch: int) -> Figure:
    """Learning rate and momentum against the epoch (x: steps / steps_per_epoch), on two y-axes."""
    epochs = [step / steps_per_epoch for step in range(len(rates))]
    fig, rate_ax = plt.subplots(figsize=(7, 3.5))
    rate_ax.plot(epochs, rates, color="tab:blue")
    rate_ax.set_xlabel("epoch")
    rate_ax.set_ylabel("learning rate", color="tab:blue")
    momentum_ax = rate_ax.twinx()
    momentum_ax.plot(epochs, momenta, color="tab:orange")
    momentum_ax.set_ylabel("momentum", color="tab:orange")
    rate_ax.set_title("The schedule, read from the scheduler at every step")
    rate_ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _refuse_to_overwrite(path: Path, is_ours: Callable[[Path], bool], what: str) -> None:
    """Raise a FileExistsError if `path` exists and `is_ours` says it is not a file of ours: nothing here
    overwrites a file it did not make."""
    if path.exists() and not is_ours(path):
        raise FileExistsError(f"{path} exists and is not {what}: not overwriting it. Choose another path, or "
                              "move that file away first.")


@dataclass
class History:
    """Per-epoch metrics of one training run, with what it trained: the whole recipe, resolved (network,
    width, seed, precision and every training setting), and the device."""

    recipe: Recipe = Recipe(precision="float32")
    device: str = ""
    parameters: int = 0
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    # With an ema_decay: the last epoch's accuracy of the trained weights themselves, before averaging.
    last_weights_test_acc: float | None = None

    def record(self, train_loss: float, train_acc: float, test_loss: float, test_acc: float,
               seconds: float) -> None:
        """Append one epoch's numbers."""
        for name, value in zip(("train_loss", "train_acc", "test_loss", "test_acc", "epoch_seconds"),
                               (train_loss, train_acc, test_loss, test_acc, seconds)):
            getattr(self, name).append(value)

    @property
    def epochs(self) -> int:
        return len(self.test_acc)

    def save(self, path: str | os.PathLike) -> None:
        """Write the history as JSON (creating the folder); refuses to overwrite a file that is not one."""
        path = Path(path)
        _refuse_to_overwrite(path, History.is_history, "a history saved by History.save")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))

    @staticmethod
    def is_history(path: Path) -> bool:
        """Whether `path` holds JSON that History.save wrote."""
        try:
            values = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(values, dict) and {"recipe", "test_acc", "epoch_seconds"} <= values.keys()

    @classmethod
    def load(cls, path: str | os.PathLike) -> "History":
        """Read a history written by `save`; a file of another layout (an older version's) is refused by name."""
        values = json.loads(Path(path).read_text())
        try:
            return cls(**{**values, "recipe": Recipe.from_dict(values["recipe"])})
        except (KeyError, TypeError) as error:  # a missing field, or one this version does not know
            raise ValueError(f"'{path}' is not a history this version of History.save writes "
                             f"({type(error).__name__}: {error}); train again to get one") from None


def fit(model: nn.Module, recipe: Recipe, train_images: torch.Tensor, train_labels: torch.Tensor,
        eval_images: torch.Tensor, eval_labels: torch.Tensor, verbose: bool = True) -> History:
    """Train `model` (already on the images' device) with `recipe`, scoring it on the evaluation images
    after every epoch; returns the History, which records the resolved recipe and the device.

    `fit` builds its own loaders from the tensors and the recipe, all drawing from one generator seeded with
    the recipe's seed: the batches of a run depend on its recipe alone. The optimizer and the learning-rate
    schedule are the recipe's (`make_optimizer`, `make_scheduler`). Before each evaluation, BatchNorm's
    statistics are recomputed from `bn_batches` batches of unaugmented training digits (0 keeps the running
    averages), so that the evaluation scores the current weights. The last `clean_final_epochs` epochs (all
    of them, if there are fewer) train on unaugmented digits: the network finishes on digits like the ones
    it will be tested on. With an `ema_decay`, an exponential moving average of the weights (PyTorch's
    `AveragedModel`) is what is scored, and `model` ends with the averaged weights (the History keeps the
    last weights' own score too). With precision bfloat16, training and evaluation run under
    `torch.autocast`: convolutions and linear layers in bfloat16, BatchNorm's statistics, the weights and
    the loss in float32. A loss that stops being a finite number stops the run with an error.
    """
    device = train_images.device
    recipe = recipe.resolved(device)
    generator = run_generator(recipe.seed, device)
    train_loader = TensorLoader.for_training(train_images, train_labels, recipe, generator)
    # The clean final epochs shuffle with the same generator; BatchNorm's statistics come from the training
    # digits in storage order, unaugmented: drawing no random numbers, they leave the run as it would be.
    clean_loader = TensorLoader(train_images, train_labels, recipe.batch_size, shuffle=True, generator=generator)
    statistics_loader = TensorLoader(train_images, train_labels, recipe.batch_size)
    eval_loader = TensorLoader.for_evaluation(eval_images, eval_labels)
    optimizer = make_optimizer(model.parameters(), recipe)
    scheduler = make_scheduler(optimizer, recipe, len(train_loader))
    averaged = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay))
                if recipe.ema_decay else None)
    scored = model if averaged is None else averaged.module
    history = History(recipe=recipe, device=device_name(device), parameters=count_parameters(model))
    epochs = recipe.epochs
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        loader = clean_loader if epoch > epochs - recipe.clean_final_epochs else train_loader
        train_loss, train_acc = train(model, loader, optimizer, scheduler, recipe.label_smoothing,
                                      desc=f"epoch {epoch}/{epochs}", averaged=averaged, precision=recipe.precision)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"the training loss became {train_loss} in epoch {epoch}: the run diverged. "
                                     f"Try a lower max_lr than {recipe.max_lr:g}.")
        recompute_batchnorm_statistics(scored, statistics_loader, recipe.bn_batches, recipe.precision)
        test_loss, test_acc = test(scored, eval_loader, recipe.precision)
        history.record(train_loss, train_acc, test_loss, test_acc, time.perf_counter() - start)
        if verbose:
            print(f"epoch {epoch:2d}  train loss {train_loss:.4f} acc {train_acc:6.2f}%  "
                  f"test loss {test_loss:.4f} acc {test_acc:6.2f}%  ({history.epoch_seconds[-1]:.1f} s)")
    if averaged is not None:
        recompute_batchnorm_statistics(model, statistics_loader, recipe.bn_batches, recipe.precision)
        history.last_weights_test_acc = test(model, eval_loader, recipe.precision)[1]
        model.load_state_dict(averaged.module.state_dict())
    return history


def train_network(recipe: Recipe, train_images: torch.Tensor, train_labels: torch.Tensor,
                  eval_images: torch.Tensor, eval_labels: torch.Tensor,
                  verbose: bool = True) -> tuple[nn.Module, History]:
    """One run of the notebook's training cell: seed torch's global generator with the recipe's seed, build
    the recipe's network (its initial weights come from that generator), move it to the images' device and
    `fit` it; returns the trained model and its History."""
    seed_everything(recipe.seed)
    model = on_device(build_network(recipe.network, recipe.width, recipe.dropout), train_images.device)
    return model, fit(model, recipe, train_images, train_labels, eval_images, eval_labels, verbose)


MODEL_FORMAT = "s6-mnist-model/1"  # what save_model writes: the network's name and settings, then its weights


def save_model(model: nn.Module, recipe: Recipe, path: str | os.PathLike) -> None:
    """Save the model's weights with the network the recipe names (so `load_model` can rebuild it), creating
    the folder; refuses to overwrite a file that is not a saved model."""
    path = Path(path)
    _refuse_to_overwrite(path, lambda existing: _saved_model(existing) is not None, "a model saved by save_model")
    path.parent.mkdir(parents=True, exist_ok=True)
    network = dict(network=recipe.network, width=recipe.width, dropout=recipe.dropout)
    torch.save(dict(format=MODEL_FORMAT, network=network, state_dict=model.state_dict()), path)


def _saved_model(path: Path) -> dict | None:
    """The contents of a file that save_model wrote, or None for any other file."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many kinds for a file that is not its own
        return None
    return saved if isinstance(saved, dict) and saved.get("format") == MODEL_FORMAT else None


def load_model(path: str | os.PathLike) -> nn.Module:
    """The network a file written by `save_model` holds, rebuilt and with its weights, on the CPU (weights
    only: no pickled code is run). A ValueError says what is wrong with any other file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (the notebook saves its model as artifacts/model.pt)")
    saved = _saved_model(path)
    if saved is None:
        raise ValueError(f"{path} is not a model saved by utils.save_model ({path.stat().st_size:,} bytes): "
                         "a file cut short, or another kind of file")
    network = saved["network"]
    model = build_network(network["network"], network["width"], network["dropout"])
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path} says it holds {network} but its weights do not fit that network: "
                         f"{str(error).splitlines()[0]}") from None
    return model


def as_model_input(images, model: nn.Module) -> torch.Tensor:
    """One digit or a batch as `model` reads it: float N x 1 x 28 x 28, normalised as in training, on the
    model's device.

    Takes uint8 tensors or arrays (0-255), float tensors or arrays of ink values in [0, 1], each 28 x 28,
    N x 28 x 28 or N x 1 x 28 x 28, or PIL images (one or a list). Raises ValueError, saying what it
    expected and how to get there, for anything else.
    """
    expected = "uint8 images (0-255) or ink values in [0, 1], 28x28, Nx28x28 or Nx1x28x28, or PIL images"
    if isinstance(images, Image.Image) or (isinstance(images, (list, tuple)) and images
                                           and all(isinstance(image, Image.Image) for image in images)):
        pil_images = [images] if isinstance(images, Image.Image) else images
        batch = torch.stack([test_transforms()(image) for image in pil_images])
    else:
        if not isinstance(images, (torch.Tensor, np.ndarray)):
            raise ValueError(f"expected {expected}; got {type(images).__name__}")
        images = torch.as_tensor(images)
        shape_ok = images.dim() in (2, 3, 4) and tuple(images.shape[-2:]) == (IMAGE_SIZE, IMAGE_SIZE) and (
            images.dim() < 4 or images.shape[1] == 1)
        if not shape_ok:
            raise ValueError(f"expected {expected}; got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            if not images.is_floating_point() or images.numel() == 0:
                raise ValueError(f"expected {expected}; got {images.dtype}")
            if not bool(torch.isfinite(images).all()):
                raise ValueError(f"expected {expected}; got NaN or infinite values")
            if images.min() < 0 or images.max() > 1:
                hint = (" (they look like 0-255 pixels: pass them as uint8, or divide by 255)"
                        if images.max() <= 255 and images.min() >= 0 else "")
                raise ValueError(f"expected {expected}; got {images.dtype} values from {float(images.min()):g} "
                                 f"to {float(images.max()):g}{hint}")
            images = images.float()
        batch = normalize(images.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE))
    return batch.to(next(model.parameters()).device)


@torch.inference_mode()
def predict(model: nn.Module, images) -> torch.Tensor:
    """Predicted digits for one image or a batch, in any form `as_model_input` takes."""
    model.eval()
    return model(as_model_input(images, model)).argmax(1).cpu()


# --------------------------------------------------------------------------------------- 6. Results


def plot_history(history: History) -> Figure:
    """Train and test loss (left) and error (right, 100 - accuracy) against the epoch, both on log
    scales so that the first epochs and the last tenths of a percent are visible together."""
    epochs = range(1, history.epochs + 1)
    fig, (loss_ax, error_ax) = plt.subplots(1, 2, figsize=(11, 4))
    loss_ax.plot(epochs, history.train_loss, "o-", label="train")
    loss_ax.plot(epochs, history.test_loss, "o-", label="test")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss (log scale)", yscale="log")
    error_ax.plot(epochs, [100 - a for a in history.train_acc], "o-", label="train (training mode; augmented but for the clean final epochs)")
    error_ax.plot(epochs, [100 - a for a in history.test_acc], "o-", label="test")
    error_ax.axhline(100 - MIN_TEST_ACCURACY, color="grey", linestyle="--",
                     label=f"{100 - MIN_TEST_ACCURACY:.2f}% error = {MIN_TEST_ACCURACY:.2f}% accuracy")
    error_ax.set(xlabel="epoch", ylabel="error (%) = 100 - accuracy", title="Error (log scale)", yscale="log")
    # Labels at 1, 2, 3 and 5 of every decade, so that the 0.4-0.8% that matters at the end can be read.
    error_ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    error_ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    error_ax.yaxis.set_minor_formatter(NullFormatter())
    for ax in (loss_ax, error_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
        # Below the axes, where no point of either curve can hide behind it.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), fontsize=8)
    fig.tight_layout()
    return fig


def ledger_runs(ledger: list[dict], candidate: str) -> dict[int, dict]:
    """The records of one candidate in a cross-validation ledger (`benchmarks/crossval.py`), by fold."""
    return {record["fold"]: record for record in ledger if record["candidate"] == candidate}


def plot_statistics_lag(ledger: list[dict], running: str, recomputed: str, epochs: int) -> Figure:
    """Validation error per epoch (log scale) of two sets of ledger runs that share their weights for the
    first `epochs` epochs and differ only in the BatchNorm statistics they are scored with: one panel a
    fold. The log scale shows a fall of 17 points and a difference of 0.1 point on one picture."""
    lagging = {fold: r["val_acc_per_epoch"][:epochs] for fold, r in ledger_runs(ledger, running).items()}
    current = {fold: r["val_acc_per_epoch"][:epochs] for fold, r in ledger_runs(ledger, recomputed).items()}
    folds = sorted(lagging.keys() & current.keys())
    if not folds:
        raise ValueError(f"the ledger has no fold with both {running!r} and {recomputed!r}")
    fig, axes = plt.subplots(1, len(folds), figsize=(2.2 * len(folds), 3), sharey=True, squeeze=False)
    for ax, fold in zip(axes[0], folds):
        ax.plot(range(1, epochs + 1), [100 - a for a in lagging[fold]], "o-", markersize=3, label="running averages")
        ax.plot(range(1, epochs + 1), [100 - a for a in current[fold]], "o-", markersize=3, label="recomputed")
        ax.set(title=f"fold {fold}", xlabel="epoch", yscale="log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("validation error (%), log scale")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), title="BatchNorm statistics", loc="upper center",
               ncol=2, fontsize=9, title_fontsize=9, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.82))
    return fig


@torch.inference_mode()
def predictions(model: nn.Module, loader: TensorLoader, precision: str = "float32") -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true labels for every image of a loader, on the CPU, in the run's precision (the
    arithmetic `test` scores)."""
    predicted, true = [], []
    for logits, labels in evaluation_outputs(model, loader, precision, desc="predictions"):
        predicted.append(logits.argmax(1).cpu())
        true.append(labels.cpu())
    return torch.cat(predicted), torch.cat(true)


def mistake_checks(mistakes: int) -> dict[str, float]:
    """What the notebook reads in the mistakes, as a margin: a few dozen, fewer than 100 of 10,000."""
    return {"fewer than 100 test digits misread": 100 - mistakes - 0.5}


def plot_misclassified(images: torch.Tensor, true: torch.Tensor, predicted: torch.Tensor,
                       count: int = 24, columns: int = 8) -> Figure:
    """The first `count` test digits the model got wrong, titled 'true -> predicted'."""
    wrong = (true != predicted).nonzero().flatten()[:count]
    titles = [f"{int(true[i])} -> {int(predicted[i])}" for i in wrong]
    return _image_grid(images[wrong.to(images.device)], titles, columns)


def confusion_matrix(true: torch.Tensor, predicted: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """counts[i, j] = how many images of digit i were predicted as j."""
    return torch.bincount(true * num_classes + predicted, minlength=num_classes ** 2).reshape(num_classes, -1)


def plot_confusion_matrix(confusion: torch.Tensor) -> Figure:
    """Confusion matrix with counts; the colour ignores the diagonal so that the mistakes stand out."""
    off_diagonal = confusion.clone().fill_diagonal_(0)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.imshow(off_diagonal.numpy(), cmap="Reds")
    dark = 0.6 * max(int(off_diagonal.max()), 1)
    for (i, j), count in np.ndenumerate(confusion.numpy()):
        color = "tab:blue" if i == j else "white" if count > dark else "black"
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=color)
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true",
           title="Confusion matrix (colour: mistakes only)")
    fig.tight_layout()
    return fig


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Accuracy in % for each true class: the diagonal over the row sums."""
    return 100.0 * confusion.diag() / confusion.sum(1).clamp(min=1)

def most_confused_pairs(confusion: torch.Tensor) -> list[tuple[int, int, int]]:
    """Every (true digit, predicted digit, count) that ties for the most frequent mistake."""
    mistakes = confusion.clone().fill_diagonal_(0)
    most = int(mistakes.max())
    return [(int(true), int(predicted), most) for true, predicted in (mistakes == most).nonzero().tolist()] if most else []



# --------------------------------------------------------------------- 7. What each ingredient buys


def paired_gain(scores: dict[int, float], baseline: dict[int, float]) -> tuple[float, float, int] | None:
    """Mean fold-by-fold gain over the baseline, its standard error, and the number of shared folds."""
    shared = sorted(scores.keys() & baseline.keys())
    if len(shared) < 2:
        return None
    differences = [scores[f] - baseline[f] for f in shared]
    return statistics.mean(differences), statistics.stdev(differences) / math.sqrt(len(shared)), len(shared)


def verdict(gain: float, standard_error: float) -> str:
    """The rule every comparison in this project follows: a change counts as a gain (or a loss) only when
    its mean fold-by-fold difference exceeds twice its standard error."""
    if gain > 2 * standard_error:
        return "gain"
    if gain < -2 * standard_error:
        return "loss"
    return "within noise"


@dataclass
class Ablation:
    """What one change to the recipe did in cross-validation: the mean fold-by-fold gain in validation
    accuracy (points), its standard error, and the accuracies behind it."""

    label: str
    gain: float
    standard_error: float  # nan when the candidate was scored on one fold only
    folds: int
    val_acc: float
    train_acc: float | None  # mean accuracy on the run's own unaugmented training images, where recorded
    differences: tuple[float, ...] = ()  # the gain on each shared fold

    @property
    def verdict(self) -> str:
        """"gain", "loss" or "within noise" (`verdict`); with one fold there is no standard error, and only
        a change of more than a point counts (a fall to chance is still plainly a loss)."""
        return verdict(self.gain, self.standard_error if self.folds > 1 else 0.5)

    def __str__(self) -> str:
        spread = f"± {self.standard_error:.3f}" if self.folds > 1 else "(1 fold)"
        train = f"{self.train_acc:.2f}%" if self.train_acc is not None else "  -   "
        # A validation fold holds 10,000 digits, so a point is 100 of them.
        return (f"{self.label:44} {self.gain:+7.3f} {spread:8} points ({100 * self.gain:+6.1f} digits) over "
                f"{self.folds} folds  validation {self.val_acc:6.2f}%  train {train}")


def ablations(ledger: list[dict], labels: dict[str, str], baseline: str) -> list[Ablation]:
    """The paired gain of each candidate named in `labels` (ledger name -> label) over `baseline`, from the
    records that `benchmarks/crossval.py` writes to its ledger. A candidate scored on one fold only gets
    that fold's difference and no standard error."""
    base = {fold: r["val_acc"] for fold, r in ledger_runs(ledger, baseline).items()}
    rows = []
    for name, label in labels.items():
        records = ledger_runs(ledger, name)
        scores = {fold: r["val_acc"] for fold, r in records.items()}
        shared = sorted(scores.keys() & base.keys())
        if not shared:
            raise ValueError(f"the ledger has no fold of {name!r} paired with {baseline!r}")
        paired = paired_gain(scores, base) or (scores[shared[0]] - base[shared[0]], math.nan, 1)
        train = [r["train_acc"] for r in records.values() if "train_acc" in r]
        rows.append(Ablation(label, *paired, statistics.mean(r["val_acc"] for r in records.values()),
                             statistics.mean(train) if train else None,
                             tuple(scores[fold] - base[fold] for fold in shared)))
    return rows


def plot_ablations(rows: Sequence[Ablation], off_scale: float = -1.0) -> Figure:
    """Each change's gain in validation accuracy over the recipe, with ± 1 standard error (thick) and ± 2
    (thin) bars, coloured by `verdict`. A change that lost more than `-off_scale` points on some fold gets
    a panel of its own above, on a scale wide enough for it: one dot per fold, its mean as the bar."""
    broken = [row for row in rows if min(row.differences, default=row.gain) < off_scale]
    close = [row for row in rows if row not in broken]
    panels = [(panel_rows, panel_rows is broken) for panel_rows in (broken, close) if panel_rows]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 0.42 * len(rows) + 1.0 + 0.8 * len(panels)),
                             height_ratios=[len(panel_rows) + 0.6 for panel_rows, _ in panels], squeeze=False)
    for ax, (panel_rows, by_fold) in zip(axes[:, 0], panels):
        positions = range(len(panel_rows))[::-1]  # the first row on top
        for y, row in zip(positions, panel_rows):
            colour = {"gain": "tab:green", "loss": "tab:red", "within noise": "tab:grey"}[row.verdict]
            ax.barh(y, row.gain, color=colour, alpha=0.6)
            if by_fold:
                ax.plot(row.differences, [y] * len(row.differences), "o", color="black", markersize=4)
            elif row.folds > 1:
                ax.errorbar(row.gain, y, xerr=2 * row.standard_error, color="black", linewidth=0.8, capsize=3)
                ax.errorbar(row.gain, y, xerr=row.standard_error, color="black", linewidth=2.5)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(list(positions), [row.label for row in panel_rows])
        ax.grid(alpha=0.3, axis="x")
        if by_fold:
            # Linear within a point of zero, logarithmic beyond: a fold half a point down and one at chance
            # are both legible.
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xlim(-150, 1)
            ax.set_xticks([-100, -10, -1, 0], ["-100", "-10", "-1", "0"])
            ax.set_title("Without BatchNorm, fold by fold (dots: folds; bar: mean; log scale beyond 1 point)",
                         fontsize=10)
        else:
            low = min(r.gain - 2 * (r.standard_error if r.folds > 1 else 0) for r in panel_rows)
            high = max(r.gain + 2 * (r.standard_error if r.folds > 1 else 0) for r in panel_rows)
            margin = 0.1 * (high - low) + 0.01
            ax.set_xlim(min(low, 0) - margin, max(high, 0) + margin)
            ax.set_title("What each ingredient is worth: remove or replace it, and score the change", fontsize=10)
    axes[-1, 0].set_xlabel("gain in validation accuracy over the recipe (points; 0.1 point = 10 of the "
                           "10,000 digits of a fold)")
    fig.tight_layout()
    return fig



# ------------------------------------------------------------------------- 8. What the network sees


@torch.no_grad()
def first_layer_filters(model: nn.Module) -> torch.Tensor:
    """The first convolution's 3x3 filters (filters x 3 x 3, first input channel) as the ReLU after them
    sees them: multiplied by the scale of the BatchNorm that follows, when there is one.

    BatchNorm multiplies each channel by gamma / sqrt(variance); a negative gamma flips what a filter
    responds to, so the raw weights alone cannot say whether a filter looks for ink or for background.
    """
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convolutions:
        raise ValueError("the model has no convolution")
    conv, modules = convolutions[0], list(model.modules())
    weights = conv.weight.detach().float().cpu()[:, 0]
    following = modules[modules.index(conv) + 1]
    if isinstance(following, nn.BatchNorm2d) and following.running_var is not None:
        scale = following.weight.detach().float().cpu() / torch.sqrt(following.running_var.float().cpu() + following.eps)
        weights = weights * scale[:, None, None]
    return weights


def plot_first_layer_filters(model: nn.Module) -> Figure:
    """The first convolution's filters (`first_layer_filters`), one panel per filter, on one colour scale.
    The input is white ink (positive after normalisation) on black (slightly negative), so red weights
    raise the channel's output where there is ink and blue weights where there is none."""
    weights = first_layer_filters(model)
    limit = float(weights.abs().max())
    columns = min(8, len(weights))
    rows = math.ceil(len(weights) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.25), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for index, (ax, weight) in enumerate(zip(axes.flat, weights)):
        image = ax.imshow(weight.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"filter {index}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight x BatchNorm scale")
    return fig


def _one_digit(image, model: nn.Module) -> torch.Tensor:
    """`as_model_input` for exactly one digit."""
    batch = as_model_input(image, model)
    if len(batch) != 1:
        raise ValueError(f"expected one 28x28 digit, got {len(batch)}")
    return batch


@torch.inference_mode()
def stage_outputs(model: nn.Module, image: torch.Tensor) -> list[torch.Tensor]:
    """The feature maps (channels x height x width) of one digit (any form `as_model_input` takes) at the end of each resolution
    stage of a Net: the output of the last ConvBlock at 28x28, at 14x14 and at 7x7."""
    model.eval()
    x, last_at_size = _one_digit(image, model), {}
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, ConvBlock):
            last_at_size[x.shape[-1]] = x[0].cpu()
    return [last_at_size[size] for size in sorted(last_at_size, reverse=True)]


def plot_feature_maps(maps: Sequence[torch.Tensor], columns: int = 8) -> Figure:
    """Every channel of each stage's feature maps, a row group per stage, each map on its own scale
    (bright: strong response; after the ReLU, black is zero)."""
    rows_per_stage = [math.ceil(len(stage) / columns) for stage in maps]
    fig, axes = plt.subplots(sum(rows_per_stage), columns, figsize=(columns * 1.0, sum(rows_per_stage) * 1.05),
                             squeeze=False)
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
        ax.set_frame_on(False)
    row = 0
    for stage, rows in zip(maps, rows_per_stage):
        stage_axes = axes[row:row + rows].flat
        for channel, (ax, feature_map) in enumerate(zip(stage_axes, stage)):
            ax.imshow(feature_map.numpy(), cmap="gray")
            ax.set_title(str(channel), fontsize=7)
        axes[row, 0].set_ylabel(f"{stage.shape[-2]}x{stage.shape[-1]}\n{len(stage)} channels", fontsize=9)
        row += rows
    fig.tight_layout()
    return fig


@torch.inference_mode()
def occlusion_map(model: nn.Module, image: torch.Tensor, target: int, patch: int = 8,
                  stride: int = 2) -> torch.Tensor:
    """How much the probability of class `target` drops when a `patch` x `patch` square of the digit is
    hidden, for every position of the square (every `stride` pixels); returns 28 x 28, each pixel the
    mean drop over the squares that cover it. Positive: hiding that region lowers `target`'s probability,
    so the region was evidence for it.

    Hidden means set to 0 after normalisation, which is MNIST's average pixel, 33 on the 0-255 scale: a
    dark grey, close to the black background (0), far from the ink (up to 255). It is also the value that
    the convolutions' zero padding adds around the border.
    """
    if not 1 <= patch <= 28 or stride < 1:
        raise ValueError(f"patch must be in 1..28 and stride at least 1, got patch={patch}, stride={stride}")
    model.eval()
    original = _one_digit(image, model)
    starts = sorted(set(range(0, 28 - patch + 1, stride)) | {28 - patch})  # the last square reaches the edge
    corners = [(top, left) for top in starts for left in starts]
    occluded = original.repeat(len(corners), 1, 1, 1)
    for index, (top, left) in enumerate(corners):
        occluded[index, :, top:top + patch, left:left + patch] = 0.0
    probability = F.softmax(model(torch.cat([original, occluded])).float(), dim=1)[:, target].cpu()
    drop_sum, covered = torch.zeros(28, 28), torch.zeros(28, 28)
    for (top, left), drop in zip(corners, probability[0] - probability[1:]):
        drop_sum[top:top + patch, left:left + patch] += drop
        covered[top:top + patch, left:left + patch] += 1
    return drop_sum / covered


@torch.inference_mode()
def plot_occlusion(model: nn.Module, images: torch.Tensor, true: torch.Tensor, predicted: torch.Tensor,
                   count: int = 4, patch: int = 8) -> Figure:
    """For the first `count` misclassified digits: the digit, then where the evidence for the wrong answer
    and for the true digit lies (occlusion maps, red = evidence for that class, blue = against it)."""
    wrong = (true != predicted).nonzero().flatten()[:count].tolist()
    if not wrong:
        raise ValueError("no misclassified digits to explain")
    fig, axes = plt.subplots(len(wrong), 3, figsize=(7.5, 2.5 * len(wrong)), squeeze=False)
    for row, index in zip(axes, wrong):
        digit = images[index].cpu()
        probabilities = F.softmax(model(_one_digit(digit, model)).float(), dim=1)[0].cpu()
        maps = {label: occlusion_map(model, digit, label, patch) for label in (int(predicted[index]), int(true[index]))}
        limit = max(float(m.abs().max()) for m in maps.values()) or 1.0
        row[0].imshow(digit.squeeze().numpy(), cmap="gray")
        row[0].set_title(f"a {int(true[index])}, read as {int(predicted[index])}", fontsize=9)
        for ax, (label, heat), kind in zip(row[1:], maps.items(), ("wrong answer", "true digit")):
            heat_image = ax.imshow(heat.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.contour(digit.squeeze().numpy(), levels=[128], colors="black", linewidths=0.6)
            ax.set_title(f"evidence for {label}\n({kind}, p={float(probabilities[label]):.2f})", fontsize=8)
        for ax in row:
            ax.axis("off")
        fig.colorbar(heat_image, ax=list(row[1:]), shrink=0.85, label="drop in probability")
    return fig



# -------------------------------------------------------------------------- 9. Your own handwriting


MNIST_BOX = 20  # MNIST fitted each digit's ink into a 20x20 box, then centred it in 28x28
INK_THRESHOLD = 0.1  # pixels fainter than this do not count as ink when finding the digit's extent


def _area_weights(size_in: int, size_out: int) -> np.ndarray:
    """size_out x size_in matrix whose row i averages the input pixels that output pixel i covers, each
    weighted by the fraction of it inside (a box filter: anti-aliased when shrinking)."""
    edges = np.arange(size_out + 1) * size_in / size_out
    pixels = np.arange(size_in)
    overlap = np.minimum(edges[1:, None], pixels[None, :] + 1) - np.maximum(edges[:-1, None], pixels[None, :])
    return np.clip(overlap, 0, None) / (size_in / size_out)


def area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a 2-D image to height x width, each output pixel the average of the input area it covers."""
    return _area_weights(image.shape[0], height) @ image @ _area_weights(image.shape[1], width).T


def _check_ink(ink: np.ndarray) -> np.ndarray:
    ink = np.asarray(ink, dtype=np.float64)
    if ink.ndim != 2 or ink.size == 0 or ink.min() < 0 or ink.max() > 1:
        raise ValueError(f"expected a 2-D array of ink values in [0, 1] (1 = ink), got shape {ink.shape}"
                         + (f" and values {ink.min():g} to {ink.max():g}" if ink.size else ""))
    return ink


def downscale(ink: np.ndarray) -> np.ndarray:
    """A drawing shrunk to 28x28 as it stands, with no cropping or centring: the naive way to feed it in."""
    return area_resize(_check_ink(ink), IMAGE_SIZE, IMAGE_SIZE)


def prepare_like_mnist(ink: np.ndarray) -> np.ndarray:
    """A drawing (2-D, ink values in [0, 1]) prepared as MNIST's digits were: cropped to its ink, shrunk
    keeping its aspect ratio until the longer side is 20 pixels (anti-aliased by area averaging), and
    placed in 28x28 with its centre of mass at the centre. Raises ValueError for a drawing with no ink.

    docs/network.js does the same in the browser, step for step.
    """
    ink = _check_ink(ink)
    rows, columns = np.nonzero(ink > INK_THRESHOLD)
    if rows.size == 0:
        raise ValueError("the drawing is empty: draw a digit")
    digit = ink[rows.min():rows.max() + 1, columns.min():columns.max() + 1]
    scale = MNIST_BOX / max(digit.shape)
    # floor(x + 0.5), not round(): Python rounds halves to even, JavaScript's Math.round up.
    height, width = (max(1, math.floor(side * scale + 0.5)) for side in digit.shape)
    digit = area_resize(digit, height, width)
    mass = digit.sum()
    centre_row = (digit.sum(1) @ np.arange(height)) / mass
    centre_column = (digit.sum(0) @ np.arange(width)) / mass
    # Put the centre of mass on the middle of the 28x28 field (pixel coordinate 13.5), to the nearest pixel.
    top, left = math.floor(14 - centre_row), math.floor(14 - centre_column)
    image = np.zeros((IMAGE_SIZE, IMAGE_SIZE))
    # Ink that the shift would push past the border is cut off, as it would be in a 28x28 frame.
    r0, r1 = max(0, top), min(IMAGE_SIZE, top + height)
    c0, c1 = max(0, left), min(IMAGE_SIZE, left + width)
    image[r0:r1, c0:c1] = digit[r0 - top:r1 - top, c0 - left:c1 - left]
    return np.clip(image, 0.0, 1.0)


def _arc(centre_x: float, centre_y: float, radius_x: float, radius_y: float, start: float, end: float,
         points: int = 16) -> tuple[tuple[float, float], ...]:
    """Points along an elliptical arc, angles in degrees, measured clockwise from 3 o'clock (y points down)."""
    angles = np.radians(np.linspace(start, end, points))
    return tuple((round(centre_x + radius_x * math.cos(a), 4), round(centre_y + radius_y * math.sin(a), 4))
                 for a in angles)

# Each digit as a person might draw it with a mouse: strokes of (x, y) points in a unit square, y down.
DIGIT_STROKES: dict[int, tuple[tuple[tuple[float, float], ...], ...]] = {
    0: (_arc(0.5, 0.5, 0.3, 0.42, -90, 270, 24),),
    1: (((0.36, 0.22), (0.55, 0.06), (0.55, 0.94)),),
    2: (_arc(0.5, 0.32, 0.28, 0.24, 200, 400) + ((0.2, 0.92), (0.84, 0.92)),),
    3: (_arc(0.47, 0.29, 0.26, 0.21, 210, 450), _arc(0.47, 0.71, 0.3, 0.22, 270, 520)),
    4: (((0.32, 0.06), (0.16, 0.6), (0.84, 0.6)), ((0.66, 0.3), (0.66, 0.94))),
    5: (((0.8, 0.08), (0.3, 0.08), (0.26, 0.44)) + _arc(0.48, 0.66, 0.3, 0.26, 220, 510),),
    6: (_arc(0.62, 0.62, 0.38, 0.56, 270, 180, 10) + _arc(0.5, 0.7, 0.26, 0.22, 180, 540, 20),),
    7: (((0.16, 0.1), (0.84, 0.1), (0.4, 0.94)),),
    8: (_arc(0.5, 0.28, 0.22, 0.2, 90, 450, 20), _arc(0.5, 0.7, 0.28, 0.22, -90, 270, 20)),
    9: (_arc(0.5, 0.3, 0.26, 0.22, 0, 360, 20), ((0.76, 0.3), (0.7, 0.94))),
}


def render_strokes(strokes: Sequence[Sequence[tuple[float, float]]],
                   box: tuple[float, float, float, float] = (0.15, 0.1, 0.85, 0.9), line_width: int = 22,
                   size: int = 280) -> np.ndarray:
    """Draw strokes (points in a unit square) into the part `box` (left, top, right, bottom, as fractions)
    of a size x size canvas, with round pens of `line_width` pixels; returns ink values in [0, 1]."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = (edge * size for edge in box)
    for stroke in strokes:
        points = [(left + x * (right - left), top + y * (bottom - top)) for x, y in stroke]
        draw.line(points, fill=255, width=line_width, joint="curve")
        for x, y in (points[0], points[-1]):  # round ends, like a pen
            draw.ellipse((x - line_width / 2, y - line_width / 2, x + line_width / 2, y + line_width / 2), fill=255)
    return np.asarray(canvas, dtype=np.float64) / 255

# Ways a mouse-drawn digit differs from MNIST's, as render_strokes arguments.
UNLIKE_MNIST = {
    "as MNIST": dict(),
    "thin": dict(line_width=5),
    "thick": dict(line_width=56),
    "off-centre": dict(box=(0.02, 0.02, 0.5, 0.55)),
    "small": dict(box=(0.42, 0.4, 0.58, 0.62), line_width=8),
}


@torch.inference_mode()
def read_drawing(model: nn.Module, image: np.ndarray) -> torch.Tensor:
    """The model's probabilities for the ten digits, for one 28x28 image of ink values in [0, 1]."""
    model.eval()
    return F.softmax(model(_one_digit(image, model)), dim=1)[0].cpu()


def plot_drawing_preparation(model: nn.Module, drawings: dict[str, np.ndarray]) -> Figure:
    """For each named drawing: the canvas, what the network reads from it shrunk as it stands, and from it
    prepared like MNIST (`prepare_like_mnist`); one row each."""
    fig, axes = plt.subplots(len(drawings), 3, figsize=(6.6, 2.3 * len(drawings)), squeeze=False)
    for row, (name, ink) in zip(axes, drawings.items()):
        row[0].imshow(ink, cmap="gray", vmin=0, vmax=1)
        row[0].set_title(f"{name}: the canvas", fontsize=9)
        for ax, (how, image) in zip(row[1:], (("shrunk as it is", downscale(ink)),
                                              ("prepared like MNIST", prepare_like_mnist(ink)))):
            probabilities = read_drawing(model, image)
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{how}:\nread as {int(probabilities.argmax())} (p={float(probabilities.max()):.2f})",
                         fontsize=9)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    return fig


def drawing_readings(model: nn.Module,
                     ways: Mapping[str, dict] | None = None) -> dict[str, tuple[list[int], list[int]]]:
    """What the model reads from each digit of `DIGIT_STROKES` drawn each way (`render_strokes` arguments),
    shrunk as it stands and prepared like MNIST: way -> (ten readings, ten readings), digits 0 to 9 in order.
    `ways` defaults to `UNLIKE_MNIST`."""
    readings = {}
    for name, how in (UNLIKE_MNIST if ways is None else ways).items():
        drawings = [render_strokes(DIGIT_STROKES[digit], **how) for digit in range(NUM_CLASSES)]
        readings[name] = tuple([int(read_drawing(model, prepare(ink)).argmax()) for ink in drawings]
                               for prepare in (downscale, prepare_like_mnist))
    return readings


def right_answers(readings: Mapping[str, tuple[list[int], list[int]]]) -> dict[str, tuple[int, int]]:
    """For each way of drawing (`drawing_readings`): how many of the ten digits were read right shrunk as they
    stand, and how many prepared like MNIST."""
    return {way: tuple(sum(read == digit for digit, read in enumerate(reads)) for reads in pair)
            for way, pair in readings.items()}


def drawing_checks(readings: Mapping[str, tuple[list[int], list[int]]]) -> dict[str, float]:
    """What the notebook reads in the drawings' readings, each as a margin (in right answers of ten)."""
    right = right_answers(readings)
    return {
        "small drawings: at most 3 right shrunk as they are": 3 - right["small"][0],
        "small drawings: more than 3 right prepared like MNIST": right["small"][1] - 3.5,
        "off-centre drawings: at least 7 right shrunk as they are": right["off-centre"][0] - 7,
        "more read right prepared than shrunk, over all five ways":
            sum(r[1] for r in right.values()) - sum(r[0] for r in right.values()) - 0.5,
    }


# ----------------------------------------------------------------------------------- 10. Even smaller


def matches(record: dict, selection: Mapping) -> bool:
    """Whether a results.json record has every value of `selection`: its `name`, or a setting of its recipe."""
    return all((record["name"] if key == "name" else record["recipe"].get(key)) == value
               for key, value in selection.items())


def seed_table(records: list[dict], rows: Mapping[str, Mapping], epochs: int) -> str:
    """Last-epoch test accuracy per seed of the runs of each row (label -> the name and recipe settings its
    runs share, as `matches` reads them) trained for `epochs`, from the records that benchmarks/seeds.py
    writes to results.json, with the median and the lowest."""
    lines = [f"{'runs':44} {'parameters':>10} {'seeds':>9}  {'test accuracy per seed (%)':<34} {'median':>6} {'lowest':>6}"]
    for label, selection in rows.items():
        runs = sorted((r for r in records if matches(r, {**selection, "epochs": epochs})),
                      key=lambda r: r["recipe"]["seed"])
        if not runs:
            raise ValueError(f"results.json has no {epochs}-epoch run of {dict(selection)}")
        accuracies = [r["last_test_acc"] for r in runs]
        per_seed = " ".join(f"{a:.2f}" for a in accuracies)
        seeds = ",".join(str(r["recipe"]["seed"]) for r in runs)
        lines.append(f"{label:44} {runs[0]['parameters']:>10,} {seeds:>9}  {per_seed:<34} "
                     f"{statistics.median(accuracies):6.2f} {min(accuracies):6.2f}")
    return "\n".join(lines)



# ----------------------------------------------------------------- 11. Did we meet the constraints?


def check_constraints(history: History) -> tuple[str, bool]:
    """Say whether a run met the three constraints; returns the report and whether all hold."""
    checks = [
        (f"trainable parameters < {MAX_PARAMETERS:,}", history.parameters < MAX_PARAMETERS),
        (f"epochs < {MAX_EPOCHS}", history.epochs < MAX_EPOCHS),
        (f"last-epoch test accuracy >= {MIN_TEST_ACCURACY:.2f}%",
         bool(history.test_acc) and history.test_acc[-1] >= MIN_TEST_ACCURACY),
    ]
    report = "\n".join(f"{'HOLDS ' if ok else 'FAILS '} {text}" for text, ok in checks)
    return report, all(ok for _, ok in checks)
