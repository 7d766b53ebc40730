"""docs/weights_format.py: a Net with BatchNorm folded in, written as the page's weight file and read back."""
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from model import Net

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs"))
from weights_format import browser_weights, folded_layers, net_from_browser_weights  # noqa: E402


def test_folding_batch_norm_into_the_convolutions_keeps_what_the_network_computes():
    torch.manual_seed(0)
    model = Net()
    for layer in model.modules():  # statistics and affine parameters far from BatchNorm's initial ones
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean.uniform_(-1, 1)
            layer.running_var.uniform_(0.2, 3)
            nn.init.uniform_(layer.weight, -1, 2)
            nn.init.uniform_(layer.bias, -1, 1)
    model.eval()
    layers = folded_layers(model)
    assert [layer["kind"] for layer in layers] == ["conv", "maxpool", "conv", "conv", "conv", "conv", "maxpool",
                                                    "conv", "conv", "conv", "mean", "linear"]
    assert [i for i, layer in enumerate(layers) if layer.get("stage_end")] == [0, 5, 9]
    rebuilt = net_from_browser_weights(browser_weights(model))
    images = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(rebuilt(images), model(images), atol=1e-5)


def test_a_browser_weight_file_that_does_not_describe_a_net_is_refused():
    weights = browser_weights(Net(n_channels=4))
    with pytest.raises(ValueError, match="format 's6-mnist-net/1', got 'other'"):
        net_from_browser_weights(dict(weights, format="other"))
    with pytest.raises(ValueError, match="expected a tensor of shape \\[10, 1, 3, 3\\], got \\[8, 1, 3, 3\\]"):
        net_from_browser_weights(dict(weights, n_channels=5, layers=weights["layers"]))
    with pytest.raises(ValueError, match="are not those of Net"):
        net_from_browser_weights(dict(weights, layers=weights["layers"][1:]))


def test_export_then_import_gives_back_the_exported_weights():
    model = Net(n_channels=3).eval()
    weights = json.loads(json.dumps(browser_weights(model, test_accuracy=0.0)))
    rebuilt = net_from_browser_weights(weights)
    assert json.dumps(browser_weights(rebuilt, test_accuracy=0.0)) == json.dumps(weights)
