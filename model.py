"""A compact CNN for MNIST: convolution blocks, max-pool transitions and global average pooling."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

IMAGE_SIZE = 28
NUM_CLASSES = 10
# Normalised MNIST pixels lie between -0.43 and 2.83; an input far outside that was not normalised.
NORMALISED_LIMIT = 10.0


def whole_number(value, name: str, minimum: int = 1) -> int:
    """`value` as an int if it is a whole number (int, NumPy integer) of at least `minimum`; a ValueError
    that names `name` otherwise. A bool is refused: `True` as a width is a slip, not a 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a whole number, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return int(value)


def fraction(value, name: str, low: float = 0.0, high: float = 1.0) -> float:
    """`value` as a float if it is a real number in [low, high); a ValueError that names `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not low <= value < high:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}), got {value!r}")
    return float(value)


class ConvBlock(nn.Sequential):
    """3x3 convolution -> BatchNorm -> ReLU (-> Dropout, when dropout > 0), keeping the spatial size.

    `batch_norm=False` leaves the BatchNorm out (and gives the convolution a bias instead), to show
    what BatchNorm does. `padded=False` leaves the padding out, so that the block trims one pixel from
    every side, and `kernel_size=1` makes it a 1x1 convolution with its own BatchNorm and ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, batch_norm: bool = True,
                 kernel_size: int = 3, padded: bool = True) -> None:
        dropout = fraction(dropout, "dropout")
        if kernel_size not in (1, 3):
            raise ValueError(f"kernel_size must be 1 or 3, got {kernel_size!r}")
        # With BatchNorm, no bias: BatchNorm subtracts the mean and adds its own shift.
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2 if padded else 0,
                            bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        # A Dropout(0) would do nothing but still be listed in the model summary.
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class MaxPoolingBlock(nn.Sequential):
    """2x2 max-pool (halves height and width) then a 1x1 convolution that sets the channel count."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        )


def stage_widths(n_channels: int) -> tuple[int, int, int]:
    """Channel widths of the three resolution stages (28x28, 14x14, 7x7) for a base width."""
    n_channels = whole_number(n_channels, "n_channels")
    return 2 * n_channels, 2 * n_channels, 3 * n_channels


class Net(nn.Module):
    """Three stages of ConvBlocks (one at 28x28, three at 14x14, two at 7x7) joined by MaxPoolingBlocks,
    then global average pooling and a Linear layer.

    The full-resolution stage is one convolution from the single input channel: few weights, though it
    runs over all 784 pixels. Most of the parameters sit at 7x7, in the two widest convolutions; most of the
    multiply-adds at 14x14, where three convolutions run over 196 pixels each (`layer_costs` counts both).
    `dropout` (off by default: it cost accuracy in cross-validation) follows every ConvBlock; the reference
    design had Dropout in its last two blocks only. `batch_norm=False` builds the same network without
    BatchNorm, for comparison.

    The 1x1 convolution of each MaxPoolingBlock has no nonlinearity after it, so it is a linear map that
    folds into the 3x3 convolution that follows: it sets the channel count but adds no expressiveness.
    """

    def __init__(self, in_channels: int = 1, n_channels: int = 8, dropout: float = 0.0,
                 batch_norm: bool = True) -> None:
        super().__init__()
        self.in_channels = whole_number(in_channels, "in_channels")
        self.n_channels = whole_number(n_channels, "n_channels")
        w1, w2, w3 = stage_widths(self.n_channels)
        self.features = nn.Sequential(
            ConvBlock(in_channels, w1, dropout, batch_norm),  # 28x28: edges and strokes
            MaxPoolingBlock(w1, w2),  # -> 14x14
            ConvBlock(w2, w2, dropout, batch_norm),  # 14x14: parts of digits
            ConvBlock(w2, w2, dropout, batch_norm),
            ConvBlock(w2, w2, dropout, batch_norm),
            MaxPoolingBlock(w2, w3),  # -> 7x7: whole digits
            ConvBlock(w3, w3, dropout, batch_norm),
            ConvBlock(w3, w3, dropout, batch_norm),
            nn.AdaptiveAvgPool2d(1),  # global average pooling: one number per channel
        )
        self.classifier = nn.Linear(w3, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch N x in_channels x 28 x 28 of float images to N x 10 class logits."""
        check_images(x, self.in_channels)
        return self.classifier(self.features(x).flatten(1))


def check_images(x: torch.Tensor, in_channels: int = 1) -> None:
    """Raise a ValueError that says what was expected unless `x` is a batch N x in_channels x 28 x 28 of
    normalised float32 images: finite, and within the range normalisation gives."""
    expected = f"a float32 tensor of shape N x {in_channels} x {IMAGE_SIZE} x {IMAGE_SIZE}, normalised"
    prepare = "prepare images with utils.as_model_input (or utils.normalize for uint8 tensors)"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected {expected}, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise ValueError(f"expected {expected}, got dtype {x.dtype} ({prepare}, or call .float() on floats)")
    if x.dim() != 4 or tuple(x.shape[1:]) != (in_channels, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected {expected}, got shape {tuple(x.shape)}")
    # One check, read back once: a NaN or a raw 0-255 pixel would otherwise give a confident wrong answer.
    if bool((~torch.isfinite(x) | (x.abs() > NORMALISED_LIMIT)).any()):
        found = "NaN or infinite values" if not bool(torch.isfinite(x).all()) else (
            f"values up to {float(x.abs().max()):g}, which look like raw 0-255 pixels")
        raise ValueError(f"expected {expected}, got {found}: {prepare}")


class PublicSmallNet(nn.Module):
    """A public design under 8,000 parameters (7,918), rebuilt from its published description
    (snehanshu-raj/ERA on GitHub, assignment 6, Model 3): the yardstick for this project's small networks.

    Three padded ConvBlocks of 10 channels at 28x28, a max-pool, four unpadded ConvBlocks (14 -> 12 -> 10
    -> 8 -> 6 pixels, 16, 16, 8 and 8 channels), two 1x1 ConvBlocks (8 and 16 channels), global average
    pooling, and a 1x1 convolution without bias to the 10 classes. Unlike `Net`, its 1x1 convolutions
    each have their own BatchNorm and ReLU, and most of its compute is at 28x28.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBlock(1, 10), ConvBlock(10, 10), ConvBlock(10, 10),  # 28x28
            nn.MaxPool2d(kernel_size=2, stride=2),  # -> 14x14
            ConvBlock(10, 16, padded=False), ConvBlock(16, 16, padded=False),  # -> 12x12 -> 10x10
            ConvBlock(16, 8, padded=False), ConvBlock(8, 8, padded=False),  # -> 8x8 -> 6x6
            ConvBlock(8, 8, kernel_size=1), ConvBlock(8, 16, kernel_size=1),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Conv2d(16, NUM_CLASSES, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch N x 1 x 28 x 28 of float images to N x 10 class logits."""
        check_images(x)
        return self.classifier(self.features(x)).flatten(1)


TRANSITIONS = ("linear", "activated", "none")


@dataclass(frozen=True)
class Shape:
    """Where a network of the family spends its parameters: the widths of its 3x3 ConvBlocks at each
    resolution, what follows each 2x2 max-pool, whether the convolutions after the first pool are padded,
    optional 1x1 ConvBlocks before global average pooling, and whether the last layer has a bias.

    `Net` is Shape((16,), (16, 16, 16), (24, 24)); the public design of `PublicSmallNet` is
    Shape((10, 10, 10), (16, 16, 8, 8), (), "none", padded=False, head=(8, 16), head_bias=False).
    """

    at_28: tuple[int, ...]  # ConvBlocks at 28x28 (always padded)
    at_14: tuple[int, ...]  # after the first max-pool
    at_7: tuple[int, ...] = ()  # after a second max-pool; () for none
    transition: str = "linear"  # after each pool: a 1x1 convolution to the next width, with BatchNorm and ReLU, or none
    padded: bool = True  # False: the 3x3 convolutions after the first pool trim a pixel from every side
    head: tuple[int, ...] = ()  # 1x1 ConvBlocks just before global average pooling
    head_bias: bool = True  # the last layer's bias (the public design's 1x1 head has none)

    def __post_init__(self) -> None:
        for name in ("at_28", "at_14", "at_7", "head"):
            widths = tuple(whole_number(width, name) for width in getattr(self, name))
            object.__setattr__(self, name, widths)
        if not self.at_28 or not self.at_14:
            raise ValueError(f"a shape needs at least one ConvBlock at 28x28 and one at 14x14, got {self}")
        if self.transition not in TRANSITIONS:
            raise ValueError(f"transition must be one of {TRANSITIONS}, got {self.transition!r}")
        size = IMAGE_SIZE // 2 - (0 if self.padded else 2 * len(self.at_14))  # after the first pool
        if self.at_7:
            size = size // 2 - (0 if self.padded else 2 * len(self.at_7))
        if size < 1:
            raise ValueError(f"{self} shrinks the maps to nothing before the head")


class ShapedNet(nn.Module):
    """The network a `Shape` describes: ConvBlocks at 28x28, a max-pool (and transition), ConvBlocks at 14x14,
    optionally another max-pool (and transition) and ConvBlocks at 7x7, 1x1 ConvBlocks, global average
    pooling and a linear layer to the 10 classes."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.shape = shape
        layers, channels = [], 1
        for width in shape.at_28:
            layers.append(ConvBlock(channels, width))
            channels = width
        for stage in (shape.at_14, shape.at_7):
            if not stage:
                continue
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            if shape.transition == "linear":  # the first ConvBlock's width, set by a bare 1x1 convolution
                layers.append(nn.Conv2d(channels, stage[0], kernel_size=1, bias=False))
                channels = stage[0]
            elif shape.transition == "activated":
                layers.append(ConvBlock(channels, stage[0], kernel_size=1))
                channels = stage[0]
            for width in stage:
                layers.append(ConvBlock(channels, width, padded=shape.padded))
                channels = width
        for width in shape.head:
            layers.append(ConvBlock(channels, width, kernel_size=1))
            channels = width
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, NUM_CLASSES, bias=shape.head_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch N x 1 x 28 x 28 of float images to N x 10 class logits."""
        check_images(x)
        return self.classifier(self.features(x).flatten(1))


# Named points of the family: the two it must contain, and the shapes cross-validation screens (benchmarks/).
SHAPES = {
    "net": Shape((16,), (16, 16, 16), (24, 24)),
    "public": Shape((10, 10, 10), (16, 16, 8, 8), (), "none", padded=False, head=(8, 16), head_bias=False),
    # Under 20,000 parameters: where the width sits, 1 to 3 convolutions at 28x28, the transitions, depth at 7x7.
    "net-activated": Shape((16,), (16, 16, 16), (24, 24), "activated"),
    "28x2-14x2": Shape((16, 16), (16, 16), (24, 24)),
    "28x2-14x2-activated": Shape((16, 16), (16, 16), (24, 24), "activated"),
    "28x3-14x2-bare": Shape((16, 16, 16), (16, 16), (24, 24), "none"),
    "28x3-narrow-bare": Shape((12, 12, 12), (16, 16, 16), (24, 24), "none"),
    "wide-14": Shape((16,), (20, 20, 20), (20, 20)),
    "deep-7": Shape((16,), (16, 16, 16), (20, 20, 20)),
    "28x2-7x3-activated": Shape((16, 16), (16, 16), (20, 20, 20), "activated"),
    # Under 8,000 parameters.
    "small-wide-7-activated": Shape((10,), (12, 12), (16, 16), "activated"),
    "small-28x3-bare": Shape((8, 8, 8), (12, 12), (16, 16), "none"),
    "small-28x3-10-bare": Shape((10, 10, 10), (12, 12), (14, 14), "none"),
    "small-unpadded": Shape((10, 10, 10), (12, 12, 12, 12), (), "none", padded=False),
    # Under 8,000, around small-unpadded: wider at the end, a 1x1 head, two convolutions at 28x28, activated.
    "small-unpadded-14": Shape((10, 10, 10), (12, 12, 14, 14), (), "none", padded=False),
    "small-unpadded-head": Shape((10, 10, 10), (12, 12, 12, 12), (), "none", padded=False, head=(16,)),
    "small-28x2-unpadded": Shape((10, 10), (14, 14, 14, 14), (), "none", padded=False),
    "small-unpadded-activated": Shape((10, 10, 10), (12, 12, 12, 12), (), "activated", padded=False),
}


def activated_transitions(net: Net) -> Net:
    """`net` with BatchNorm and ReLU after the 1x1 convolution of each MaxPoolingBlock, so that it is a layer
    of its own rather than a linear map folded into the 3x3 convolution after it."""
    for index, block in enumerate(net.features):
        if isinstance(block, MaxPoolingBlock):
            channels = block[1].out_channels
            net.features[index] = nn.Sequential(*block, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
    return net


def without_1x1_transitions(net: Net) -> Net:
    """`net` whose MaxPoolingBlocks are bare max-pools: the 3x3 convolution after each pool reads the pooled
    channels directly, as the linear 1x1 convolution could be folded into it."""
    channels = net.in_channels
    for index, block in enumerate(net.features):
        if isinstance(block, MaxPoolingBlock):
            net.features[index] = block[0]
        elif isinstance(block, ConvBlock):
            conv = block[0]
            if conv.in_channels != channels:
                block[0] = nn.Conv2d(channels, conv.out_channels, 3, padding=1, bias=conv.bias is not None)
            channels = conv.out_channels
    return net


class Residual(nn.Module):
    """x + block(x): a skip connection around a block that keeps the shape."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def residual_blocks(net: Net) -> Net:
    """`net` with a skip connection around every ConvBlock whose input and output shapes match (the three at
    14x14 and the two at 7x7): no extra parameters, a shorter path for the gradient."""
    for index, block in enumerate(net.features):
        if isinstance(block, ConvBlock) and block[0].in_channels == block[0].out_channels:
            net.features[index] = Residual(block)
    return net


def wide_first_convolution(net: Net) -> Net:
    """`net` whose first convolution is 5x5 instead of 3x3: a wider look at each stroke where parameters
    are cheapest (one input channel)."""
    first = net.features[0][0]
    net.features[0][0] = nn.Conv2d(first.in_channels, first.out_channels, kernel_size=5, padding=2, bias=False)
    return net


def flatten_head(net: Net) -> Net:
    """`net` whose head flattens the last 7x7 maps into one Linear layer instead of averaging each channel:
    the classifier then has a weight for every position of every channel."""
    channels = net.classifier.in_features
    net.features[-1] = nn.Flatten()
    net.classifier = nn.Linear(channels * 7 * 7, net.classifier.out_features)
    return net


# Every network a run can train, by the name a Recipe gives it: Net, the public design, and the variants
# of Net that cross-validation scored (What each ingredient buys). Each takes a width and a Dropout rate.
NETWORKS: dict[str, Callable[[int | None, float], nn.Module]] = {
    "Net": lambda width, dropout: Net(n_channels=width, dropout=dropout),
    "PublicSmallNet": lambda width, dropout: PublicSmallNet(),
    "Net-no-bn": lambda width, dropout: Net(n_channels=width, dropout=dropout, batch_norm=False),
    "Net-no-bn-kaiming": lambda width, dropout: kaiming_init(Net(n_channels=width, dropout=dropout,
                                                                 batch_norm=False)),
    "Net-activated-1x1": lambda width, dropout: activated_transitions(Net(n_channels=width, dropout=dropout)),
    "Net-no-1x1": lambda width, dropout: without_1x1_transitions(Net(n_channels=width, dropout=dropout)),
    "Net-residual": lambda width, dropout: residual_blocks(Net(n_channels=width, dropout=dropout)),
    "Net-5x5-first": lambda width, dropout: wide_first_convolution(Net(n_channels=width, dropout=dropout)),
    "Net-flatten-head": lambda width, dropout: flatten_head(Net(n_channels=width, dropout=dropout)),
    **{f"shape:{name}": (lambda width, dropout, shape=shape: ShapedNet(shape)) for name, shape in SHAPES.items()},
}
# Networks of one fixed width and no Dropout: a Recipe gives them width None and dropout 0.
FIXED_NETWORKS = ("PublicSmallNet", *(f"shape:{name}" for name in SHAPES))
DEFAULT_WIDTH = 8  # the width of the others when none is given: Net's 18,538 parameters


def check_network(network: str, width: int | None, dropout: float) -> tuple[int | None, float]:
    """The width and Dropout rate checked against the network named: a ValueError that says what was
    expected, rather than a setting the network would ignore. Returns them as int (None: the network has one
    fixed width; a width of None for another network means DEFAULT_WIDTH) and float."""
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {list(NETWORKS)}, got {network!r}")
    dropout = fraction(dropout, "dropout")
    if network in FIXED_NETWORKS:
        if width is not None or dropout:
            raise ValueError(f"{network} has one fixed width and no Dropout: expected width None and dropout 0, "
                             f"got width {width!r} and dropout {dropout!r}")
        return None, dropout
    return whole_number(DEFAULT_WIDTH if width is None else width, "width"), dropout


def build_network(network: str = "Net", width: int | None = None, dropout: float = 0.0) -> nn.Module:
    """The network named (a key of NETWORKS) at this width (None: its default) and Dropout rate, e.g.
    `build_network("Net", 8)` is `Net(n_channels=8)`."""
    width, dropout = check_network(network, width, dropout)
    return NETWORKS[network](width, dropout)


def kaiming_init(model: nn.Module) -> nn.Module:
    """Give every convolution and linear layer He (Kaiming) normal weights and zero biases; returns the model.

    A ReLU zeroes half of its input, so weights drawn with variance 2 / fan_in keep the spread of the
    activations roughly constant from layer to layer: what a network without BatchNorm needs to train.
    """
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return model


class ReferenceBlock(nn.Sequential):
    """The reference design's block: 3x3 convolution without padding -> ReLU -> BatchNorm -> Dropout."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 3), nn.ReLU(), nn.BatchNorm2d(out_channels),
                         nn.Dropout(dropout))


class ReferenceNet(nn.Module):
    """The reference design this project grew from (19,866 parameters): 28 -> 20 in four unpadded blocks,
    a 1x1 convolution to 16 channels and a max-pool, 10 -> 4 in three blocks, AvgPool(4), Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ReferenceBlock(1, 16), ReferenceBlock(16, 16), ReferenceBlock(16, 16), ReferenceBlock(16, 32),
            nn.Conv2d(32, 16, 1), nn.MaxPool2d(2),
            ReferenceBlock(16, 16), ReferenceBlock(16, 16, 0.1), ReferenceBlock(16, 32, 0.1),
            nn.AvgPool2d(4),
        )
        self.fc = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch N x 1 x 28 x 28 of float images to N x 10 log-probabilities."""
        return torch.log_softmax(self.fc(self.features(x).flatten(1)), dim=1)


@dataclass
class LayerCost:
    """Parameters and multiply-adds per image of the layers that read inputs of one size."""

    input_size: str
    parameters: int
    multiply_adds: int


@torch.no_grad()
def layer_costs(model: nn.Module, input_size: int = IMAGE_SIZE) -> list[LayerCost]:
    """Parameters and multiply-adds for one image, grouped by the spatial size of each layer's input
    (convolutions, BatchNorm), with the linear head last; measured by running one image through `model`.

    A convolution costs (output pixels) x (output channels) x (input channels x kernel area) multiply-adds;
    a linear layer in x out. BatchNorm, ReLU and pooling are counted in parameters but not in
    multiply-adds (they are a few operations per activation, not per weight).
    """
    costs: dict[str, LayerCost] = {}

    def record(layer: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        size = "head" if isinstance(layer, nn.Linear) else f"{inputs[0].shape[-2]}x{inputs[0].shape[-1]}"
        if isinstance(layer, nn.Conv2d):
            adds = output[0].numel() * layer.weight[0].numel()
        elif isinstance(layer, nn.Linear):
            adds = layer.weight.numel()
        else:
            adds = 0
        cost = costs.setdefault(size, LayerCost(size, 0, 0))
        cost.parameters += sum(p.numel() for p in layer.parameters(recurse=False) if p.requires_grad)
        cost.multiply_adds += adds

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        model(torch.zeros(1, 1, input_size, input_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return [cost for cost in costs.values() if cost.parameters or cost.multiply_adds]


def cost_table(models: dict[str, nn.Module]) -> str:
    """Parameters and multiply-adds per image of each named model, by input size, as a plain-text table."""
    lines = []
    for name, model in models.items():
        costs = layer_costs(model)
        total_params, total_adds = sum(c.parameters for c in costs), sum(c.multiply_adds for c in costs)
        lines += [f"{name}", f"  {'input size':<10} {'parameters':>10} {'multiply-adds':>14} {'share':>6}"]
        lines += [f"  {c.input_size:<10} {c.parameters:>10,} {c.multiply_adds:>14,} "
                  f"{100 * c.multiply_adds / total_adds:>5.1f}%" for c in costs]
        lines += [f"  {'total':<10} {total_params:>10,} {total_adds:>14,}", ""]
    return "\n".join(lines).rstrip()


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class LayerGeometry:
    """Where one spatial layer sits: its output size, jump (input pixels per output step) and receptive field."""

    name: str
    output_size: int
    jump: int
    receptive_field: int


def receptive_fields(model: nn.Module, input_size: int = IMAGE_SIZE) -> list[LayerGeometry]:
    """Walk the model's convolution and pooling layers in order and compute each one's geometry.

    For a layer with kernel k, stride s and padding p:
    output = (input + 2p - k) // s + 1,  receptive field += (k - 1) * jump,  jump *= s.
    """
    size, jump, rf = input_size, 1, 1
    rows = [LayerGeometry("input", size, jump, rf)]
    for name, layer in model.named_modules():
        if isinstance(layer, nn.AdaptiveAvgPool2d):
            k, s, p = size, 1, 0  # global pooling: one window over the whole map
        elif isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = (first_size(layer.kernel_size), first_size(layer.stride), first_size(layer.padding))
        else:
            continue
        size = (size + 2 * p - k) // s + 1
        rf += (k - 1) * jump
        jump *= s
        rows.append(LayerGeometry(f"{name} ({type(layer).__name__})", size, jump, rf))
    return rows


def first_size(value: int | tuple[int, ...]) -> int:
    """The first element of a PyTorch size argument, which may be an int or a tuple."""
    return value[0] if isinstance(value, tuple) else value


def receptive_field_table(model: nn.Module, input_size: int = IMAGE_SIZE) -> str:
    """The geometry of every spatial layer as a plain-text table."""
    rows = receptive_fields(model, input_size)
    width = max(len(row.name) for row in rows)
    lines = [f"{'layer':<{width}}  {'output':>9}  {'jump':>4}  {'receptive field':>15}"]
    lines += [f"{r.name:<{width}}  {f'{r.output_size}x{r.output_size}':>9}  {r.jump:>4}  "
              f"{f'{r.receptive_field}x{r.receptive_field}':>15}" for r in rows]
    return "\n".join(lines)
