"""A compact CNN for MNIST: convolution blocks, max-pool transitions and global average pooling."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

IMAGE_SIZE = 28
NUM_CLASSES = 10


class ConvBlock(nn.Sequential):
    """3x3 convolution -> BatchNorm -> ReLU (-> Dropout, when dropout > 0), keeping the spatial size.

    `batch_norm=False` leaves the BatchNorm out (and gives the convolution a bias instead), to show
    what BatchNorm does. `padded=False` leaves the padding out, so that the block trims one pixel from
    every side, and `kernel_size=1` makes it a 1x1 convolution with its own BatchNorm and ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, batch_norm: bool = True,
                 kernel_size: int = 3, padded: bool = True) -> None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
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
    if not isinstance(n_channels, int) or n_channels < 1:
        raise ValueError(f"n_channels must be a positive int, got {n_channels!r}")
    return 2 * n_channels, 2 * n_channels, 3 * n_channels


class Net(nn.Module):
    """Three stages of ConvBlocks (one at 28x28, three at 14x14, two at 7x7) joined by MaxPoolingBlocks,
    then global average pooling and a Linear layer.

    The full-resolution stage is one convolution from the single input channel: it is cheap in
    parameters and time even at 2 x n_channels wide. Most parameters sit at 14x14 and 7x7, where running
    them is cheap. `dropout` (off by default: it cost accuracy in cross-validation) follows every
    ConvBlock; the reference design had Dropout in its last two blocks only. `batch_norm=False` builds
    the same network without BatchNorm, for comparison.

    The 1x1 convolution of each MaxPoolingBlock has no nonlinearity after it, so it is a linear map that
    folds into the 3x3 convolution that follows: it sets the channel count but adds no expressiveness.
    """

    def __init__(self, in_channels: int = 1, n_channels: int = 8, dropout: float = 0.0,
                 batch_norm: bool = True) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        self.in_channels, self.n_channels = in_channels, n_channels
        w1, w2, w3 = stage_widths(n_channels)
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
    """Raise a ValueError that says what was expected unless `x` is a float batch N x in_channels x 28 x 28."""
    expected = f"a float tensor of shape N x {in_channels} x {IMAGE_SIZE} x {IMAGE_SIZE}"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected {expected}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"expected {expected}, got dtype {x.dtype} (normalise images to float first)")
    if x.dim() != 4 or tuple(x.shape[1:]) != (in_channels, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected {expected}, got shape {tuple(x.shape)}")


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


ARCHITECTURES = ("Net", "PublicSmallNet")


def build_network(architecture: str = "Net", n_channels: int = 8, dropout: float = 0.0) -> nn.Module:
    """The network a notebook run trains: `Net(n_channels, dropout)`, or `PublicSmallNet()`.

    `PublicSmallNet` has one fixed width, so `n_channels` does not apply to it, and no Dropout: a `dropout`
    other than 0 with it raises a ValueError rather than being ignored.
    """
    if architecture == "Net":
        return Net(n_channels=n_channels, dropout=dropout)
    if architecture == "PublicSmallNet":
        if dropout:
            raise ValueError(f"PublicSmallNet has no Dropout: expected dropout 0, got {dropout!r}")
        return PublicSmallNet()
    raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")


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
