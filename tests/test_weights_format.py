"""docs/weights_format.py: a Net with BatchNorm folded in, written as the page's weight file and read back;
docs/export_weights.py: what it refuses to write."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import export_weights
import utils
from export_weights import check_can_overwrite, check_exportable
from model import Net
from weights_format import browser_weights, decode_tensor, encode_tensor, folded_layers, net_from_browser_weights

COMMITTED_WEIGHTS = Path(__file__).resolve().parent.parent / "docs" / "weights.json"


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


# ------------------------------------------------------------------------------------ export_weights.py


def test_an_untrained_net_is_not_exported_without_force():
    weights = browser_weights(Net())  # untrained: it reads about 10% of the test digits right
    with pytest.raises(ValueError, match=r"scores 9\.80% on the test digits, below the 99\.00% .*--force exports it"):
        check_exportable(weights, test_accuracy=9.8, force=False)
    check_exportable(weights, test_accuracy=9.8, force=True)
    check_exportable(weights, test_accuracy=99.0, force=False)


@pytest.mark.parametrize("force", [False, True])
def test_a_net_with_a_nan_weight_is_never_exported(force):
    weights = browser_weights(Net(n_channels=4))
    values = decode_tensor(weights["layers"][3]["weight"]).copy()
    values[0, 0, 1, 1] = np.nan
    weights["layers"][3]["weight"] = encode_tensor(values)
    with pytest.raises(ValueError, match=r"NaN or infinite numbers \(layer 3 \(conv\) weight\)"):
        check_exportable(weights, test_accuracy=99.5, force=force)


def export_error(capsys, *argv: str) -> str:
    """What export_weights.py says, exiting with a usage error (status 2), when run with `argv`."""
    with pytest.raises(SystemExit) as exit_:
        export_weights.main(list(argv))
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("content", [b"my notes on the run\n", b'{"format": "some-other-net/2"}', b"[1, 2]",
                                     bytes(range(256))], ids=["text", "other format", "JSON list", "binary"])
def test_a_file_at_out_that_is_not_a_weight_file_is_never_overwritten(tmp_path, capsys, content):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content)
    with pytest.raises(ValueError, match="notes.txt exists and is not a weight file of format 's6-mnist-net/1'"):
        check_can_overwrite(notes)
    # The script refuses before it looks at the model (here there is none) or scores it, --force or not.
    message = export_error(capsys, "--model", str(tmp_path / "no-model.pt"), "--out", str(notes), "--force")
    assert "notes.txt exists and is not a weight file" in message
    assert notes.read_bytes() == content


def test_an_existing_weight_file_may_be_overwritten(tmp_path):
    out = tmp_path / "weights.json"
    out.write_text(json.dumps(browser_weights(Net(n_channels=2))))
    check_can_overwrite(out)
    check_can_overwrite(tmp_path / "nothing-here-yet.json")


@pytest.mark.parametrize("model", ["no-model.pt", "."], ids=["missing", "a folder"])
def test_a_model_path_that_is_not_a_file_is_a_usage_error_not_a_traceback(tmp_path, capsys, model):
    message = export_error(capsys, "--model", str(tmp_path / model), "--out", str(tmp_path / "w.json"))
    assert f"no model file at {tmp_path / model}: run the notebook first" in message


def not_a_saved_model(path):
    raise ValueError(f"{path} is not a model saved by utils.save_model")


def net_with_a_changed_block(path):
    net = Net()
    net.features[2] = nn.Sequential(net.features[2], nn.Identity())
    return net


# utils.load_model itself on a file cut short, then stand-ins for it (a ValueError, as it raises for a file
# that is not a saved model) and for what it could load that the page cannot run.
@pytest.mark.parametrize("load_model, expected", [
    (utils.load_model, "model.pt"),
    (not_a_saved_model, "model.pt is not a model saved by utils.save_model"),
    (lambda path: nn.Linear(24, 10), "model.pt holds a Linear, expected a Net (model.py)"),
    (net_with_a_changed_block, "model.pt holds a Net whose layers the weight file cannot describe (cannot fold a "
                               "Sequential"),
], ids=["cut short", "not a saved model", "not a Net", "a changed Net"])
def test_a_model_file_that_cannot_be_exported_is_a_usage_error_not_a_traceback(tmp_path, capsys, monkeypatch,
                                                                                 load_model, expected):
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04")  # the start of what torch.save writes
    monkeypatch.setattr(export_weights, "load_model", load_model)
    out = tmp_path / "weights.json"
    assert expected in export_error(capsys, "--model", str(tmp_path / "model.pt"), "--out", str(out))
    assert not out.exists()


def test_export_writes_the_weight_file_over_an_old_one_and_says_where(tmp_path, capsys, monkeypatch):
    committed = json.loads(COMMITTED_WEIGHTS.read_text())  # a trained Net: it scores what the file says
    monkeypatch.setattr(export_weights, "load_model", lambda path: net_from_browser_weights(committed))
    out = tmp_path / "weights.json"
    out.write_text(json.dumps(browser_weights(Net(n_channels=2))))  # an old export, to be replaced
    (tmp_path / "model.pt").write_bytes(b"")
    export_weights.main(["--model", str(tmp_path / "model.pt"), "--out", str(out)])
    assert capsys.readouterr().out.startswith(f"wrote {out}: ")
    written = json.loads(out.read_text())
    assert written["test_accuracy"] == committed["test_accuracy"]
    assert written["layers"] == committed["layers"]
