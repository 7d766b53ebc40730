"""The weight file of the handwriting page (docs/index.html, docs/network.js): a trained `Net` with each
BatchNorm folded into the convolution before it, as plain JSON.

`export_weights.py` writes it, and the tests read it back into PyTorch to check the page's arithmetic.
"""
from __future__ import annotations

import base64

import numpy as np
import torch
from torch import nn

from model import ConvBlock, MaxPoolingBlock, Net, first_size, count_parameters

BROWSER_FORMAT = "s6-mnist-net/1"  # the weight-file layout docs/network.js reads


@torch.no_grad()
def folded_layers(model: Net) -> list[dict]:
    """The layers of a `Net` in eval mode as plain descriptions, each BatchNorm folded into the convolution
    before it, so that a forward pass needs only convolution, ReLU, max-pool, mean and linear.

    In eval mode BatchNorm computes gamma * (x - mean) / sqrt(var + eps) + beta, an affine map per channel, so
    a convolution followed by it is one convolution with weights scaled by s = gamma / sqrt(var + eps) and a
    bias beta - mean * s. Dropout does nothing in eval mode and is left out.
    """
    layers: list[dict] = []

    def conv(layer: nn.Conv2d, batch_norm: nn.BatchNorm2d | None, relu: bool) -> dict:
        weight = layer.weight.detach().float()
        bias = layer.bias.detach().float() if layer.bias is not None else None
        if batch_norm is not None:
            scale = batch_norm.weight / torch.sqrt(batch_norm.running_var + batch_norm.eps)
            weight = weight * scale[:, None, None, None]
            bias = batch_norm.bias - batch_norm.running_mean * scale + (bias * scale if bias is not None else 0)
        return dict(kind="conv", weight=weight.cpu(), bias=None if bias is None else bias.float().cpu(),
                    padding=first_size(layer.padding), relu=relu, stage_end=False)

    for block in model.features:
        if isinstance(block, ConvBlock):
            batch_norm = next((m for m in block if isinstance(m, nn.BatchNorm2d)), None)
            layers.append(conv(block[0], batch_norm, relu=True))
        elif isinstance(block, MaxPoolingBlock):
            layers[-1]["stage_end"] = True  # the last ConvBlock before a max-pool ends a resolution stage
            layers.append(dict(kind="maxpool", size=first_size(block[0].kernel_size)))
            layers.append(conv(block[1], None, relu=False))
        elif isinstance(block, nn.AdaptiveAvgPool2d):
            layers[-1]["stage_end"] = True
            layers.append(dict(kind="mean"))
        else:
            raise ValueError(f"cannot fold a {type(block).__name__}: expected the blocks of a Net")
    layers.append(dict(kind="linear", weight=model.classifier.weight.detach().float().cpu(),
                       bias=model.classifier.bias.detach().float().cpu()))
    return layers


def encode_tensor(values: torch.Tensor | np.ndarray) -> dict:
    """A tensor as the weight file stores it: its shape, and its numbers as base64 little-endian float32."""
    values = np.asarray(values)
    return dict(shape=list(values.shape), data=base64.b64encode(values.astype("<f4").tobytes()).decode("ascii"))


def decode_tensor(entry: dict) -> np.ndarray:
    """The numbers of a tensor stored by `encode_tensor`, in its shape; raises ValueError when the file holds
    more or fewer than the shape needs."""
    data = base64.b64decode(entry["data"])
    count = int(np.prod(entry["shape"]))
    if len(data) != 4 * count:
        raise ValueError(f"a tensor of shape {list(entry['shape'])} needs {count} numbers ({4 * count} bytes), "
                         f"the file has {len(data)} bytes")
    return np.frombuffer(data, dtype="<f4").reshape(entry["shape"])


def browser_weights(model: Net, **about) -> dict:
    """A `Net` as the JSON-ready weight file of the browser page: its folded layers (`folded_layers`), each
    tensor as `encode_tensor` stores it, and whatever `about` says (accuracy, source)."""
    layers = folded_layers(model.eval())
    tensors = ("weight", "bias")
    numbers = sum(layer[key].numel() for layer in layers for key in tensors if layer.get(key) is not None)
    return dict(format=BROWSER_FORMAT, n_channels=model.n_channels,
                parameters=count_parameters(model), folded_parameters=numbers, **about,
                layers=[{key: encode_tensor(value) if key in tensors and value is not None else value
                         for key, value in layer.items()} for layer in layers])


@torch.no_grad()
def net_from_browser_weights(weights: dict) -> Net:
    """The `Net` (in eval mode) that computes what a browser weight file describes: its convolutions take
    the folded weights, its BatchNorms become the identity plus the folded bias. Raises ValueError, saying
    what differs, for a file that does not describe a Net."""
    if not isinstance(weights, dict) or weights.get("format") != BROWSER_FORMAT:
        found = weights.get("format") if isinstance(weights, dict) else type(weights).__name__
        raise ValueError(f"expected a weight file of format {BROWSER_FORMAT!r}, got {found!r}")
    model = Net(n_channels=weights["n_channels"]).eval()
    expected = folded_layers(model)
    layers = weights["layers"]
    if [layer["kind"] for layer in layers] != [layer["kind"] for layer in expected]:
        raise ValueError(f"the weight file's layers {[l['kind'] for l in layers]} are not those of "
                         f"Net(n_channels={weights['n_channels']})")

    def decode(entry: dict, shape: torch.Size) -> torch.Tensor:
        if list(entry["shape"]) != list(shape):
            raise ValueError(f"expected a tensor of shape {list(shape)}, got {entry['shape']}")
        return torch.from_numpy(decode_tensor(entry).copy())

    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    batch_norms = iter(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    stored = iter(layer for layer in layers if layer["kind"] == "conv")
    for convolution in convolutions:
        layer = next(stored)
        convolution.weight.copy_(decode(layer["weight"], convolution.weight.shape))
        if convolution.kernel_size == (1, 1):  # a MaxPoolingBlock's 1x1 convolution has no bias
            if layer["bias"] is not None:
                raise ValueError("expected no bias on a 1x1 convolution, but the weight file has one")
        else:  # a ConvBlock: its BatchNorm, made the identity, adds the folded bias
            batch_norm = next(batch_norms)
            batch_norm.weight.fill_(1.0)
            batch_norm.bias.copy_(decode(layer["bias"], batch_norm.bias.shape))
            batch_norm.running_mean.zero_()
            batch_norm.running_var.fill_(1.0 - batch_norm.eps)
    linear = layers[-1]
    model.classifier.weight.copy_(decode(linear["weight"], model.classifier.weight.shape))
    model.classifier.bias.copy_(decode(linear["bias"], model.classifier.bias.shape))
    return model
