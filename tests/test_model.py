"""Tests of the building blocks, Net and the receptive-field walk."""
import pytest
import torch
from torch import nn

from model import (ConvBlock, MaxPoolingBlock, Net, PublicSmallNet, build_network, count_parameters, kaiming_init,
                   receptive_fields, stage_widths)


def test_conv_block_keeps_size_and_orders_conv_bn_relu_dropout():
    block = ConvBlock(3, 5, dropout=0.1)
    assert [type(layer) for layer in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Dropout]
    assert block(torch.randn(2, 3, 14, 14)).shape == (2, 5, 14, 14)


def test_conv_block_without_dropout_has_no_dropout_layer():
    assert [type(layer) for layer in ConvBlock(3, 5)] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]


def test_net_without_batch_norm_has_none_and_gives_its_convolutions_a_bias():
    plain = Net(batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert all(block[0].bias is not None for block in plain.features if isinstance(block, ConvBlock))
    assert all(block[0].bias is None for block in Net().features if isinstance(block, ConvBlock))
    assert plain(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_conv_block_unpadded_trims_a_pixel_per_side_and_1x1_keeps_the_size():
    assert ConvBlock(3, 5, padded=False)(torch.randn(2, 3, 14, 14)).shape == (2, 5, 12, 12)
    pointwise = ConvBlock(3, 5, kernel_size=1)
    assert pointwise[0].kernel_size == (1, 1) and pointwise(torch.randn(2, 3, 6, 6)).shape == (2, 5, 6, 6)
    with pytest.raises(ValueError, match="kernel_size must be 1 or 3"):
        ConvBlock(3, 5, kernel_size=5)


def test_public_small_net_has_its_published_size_and_shapes():
    net = PublicSmallNet()
    assert count_parameters(net) == 7_918  # as published
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    # 28 -> 14 after the pool, then four unpadded blocks: 12, 10, 8, 6.
    assert net.features[:-3](torch.randn(1, 1, 28, 28)).shape == (1, 8, 6, 6)
    with pytest.raises(ValueError, match="N x 1 x 28 x 28"):
        net(torch.randn(2, 28, 28))


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_conv_block_rejects_a_dropout_that_is_not_a_probability(dropout):
    with pytest.raises(ValueError, match="dropout"):
        ConvBlock(3, 5, dropout=dropout)


def test_max_pooling_block_halves_size_and_sets_channels():
    block = MaxPoolingBlock(8, 4)
    assert block(torch.randn(2, 8, 14, 14)).shape == (2, 4, 7, 7)
    assert block[1].kernel_size == (1, 1)


def test_net_outputs_logits_for_each_image():
    assert Net()(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_default_net_is_under_twenty_thousand_parameters():
    assert count_parameters(Net()) < 20_000


@pytest.mark.parametrize("width", [4, 8, 12])
def test_n_channels_scales_every_stage(width):
    net = Net(n_channels=width)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert {conv.out_channels for conv in convs} == set(stage_widths(width))
    assert net.classifier.in_features == stage_widths(width)[-1]
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_parameter_count_grows_with_width():
    counts = [count_parameters(Net(n_channels=w)) for w in (4, 5, 8)]
    assert counts == sorted(counts) and len(set(counts)) == 3


def test_in_channels_is_honoured():
    assert Net(in_channels=3)(torch.randn(2, 3, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("bad, message", [
    (torch.randn(1, 28, 28), "shape"),
    (torch.randn(2, 3, 28, 28), "shape"),
    (torch.randn(2, 1, 32, 32), "shape"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "dtype"),
    ([[0.0]], "list"),
])
def test_wrong_input_raises_value_error_saying_what_was_expected(bad, message):
    with pytest.raises(ValueError, match="N x 1 x 28 x 28") as error:
        Net()(bad)
    assert message in str(error.value)


@pytest.mark.parametrize("width", [0, -1, 2.5, True])
def test_bad_width_is_rejected(width):
    with pytest.raises(ValueError, match="n_channels"):
        Net(n_channels=width)


def test_receptive_field_matches_hand_computation():
    # conv3 (pad 0): 28->26, rf 3; maxpool2: 13, rf 4, jump 2; conv3 (pad 1): 13, rf 8; conv1x1: rf 8.
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 1))
    rows = [(r.output_size, r.jump, r.receptive_field) for r in receptive_fields(net)]
    assert rows == [(28, 1, 1), (26, 1, 3), (13, 2, 4), (13, 2, 8), (13, 2, 8)]


def test_default_net_sees_the_whole_digit_before_pooling():
    rows = receptive_fields(Net())
    last_conv = [r for r in rows if "Conv2d" in r.name][-1]
    assert last_conv.output_size == 7 and last_conv.jump == 4
    assert last_conv.receptive_field >= 28
    assert rows[-1].output_size == 1


def test_dropout_follows_every_conv_block():
    net = Net(dropout=0.2)
    blocks = [m for m in net.modules() if isinstance(m, ConvBlock)]
    assert len(blocks) == 6
    assert all(isinstance(block[-1], nn.Dropout) and block[-1].p == 0.2 for block in blocks)


def test_kaiming_init_gives_weights_the_variance_two_over_fan_in_and_zero_biases():
    torch.manual_seed(0)
    net = kaiming_init(Net(batch_norm=False))
    conv = net.features[2][0]  # a 16 -> 16 3x3 convolution: fan_in 144
    assert conv.weight.var().item() == pytest.approx(2 / 144, rel=0.1)
    assert all((m.bias == 0).all() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
               and m.bias is not None)


def test_layer_costs_add_up_to_the_parameter_count_and_put_most_compute_at_14x14():
    from model import ReferenceNet, cost_table, layer_costs

    net, reference = layer_costs(Net()), layer_costs(ReferenceNet())
    assert sum(c.parameters for c in net) == count_parameters(Net()) == 18_538
    assert sum(c.parameters for c in reference) == count_parameters(ReferenceNet()) == 19_866
    adds = {c.input_size: c.multiply_adds for c in net}
    # 16 -> 16 channels, 3x3, at 14x14: 196 pixels x 16 outputs x 144 weights, three times, plus the 1x1.
    assert adds["14x14"] == 3 * 196 * 16 * 144 + 196 * 16 * 16
    assert adds["14x14"] > sum(adds.values()) / 2
    assert sum(c.multiply_adds for c in reference) > 2 * sum(adds.values())
    assert "18,538" in cost_table({"Net": Net()}) and "19,866" in cost_table({"reference": ReferenceNet()})


def test_build_network_gives_the_named_network_and_refuses_what_it_cannot_honour():
    assert count_parameters(build_network("Net", 5)) == count_parameters(Net(n_channels=5))
    assert isinstance(build_network("PublicSmallNet"), PublicSmallNet)
    with pytest.raises(ValueError, match="no Dropout"):
        build_network("PublicSmallNet", dropout=0.1)
    with pytest.raises(ValueError, match="one fixed width"):
        build_network("PublicSmallNet", 8)
    with pytest.raises(ValueError, match="network must be one of"):
        build_network("ResNet")


@pytest.mark.parametrize("name, parameters", [("Net-no-bn", 18_426), ("Net-activated-1x1", 18_618),
                                              ("Net-no-1x1", 16_170), ("Net-flatten-head", 30_058),
                                              ("Net-residual", 18_538), ("Net-5x5-first", 18_794)])
def test_the_variants_cross_validation_scored_change_what_their_names_say(name, parameters):
    network = build_network(name)
    assert count_parameters(network) == parameters and network(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    if name == "Net-activated-1x1":
        blocks = [b for b in network.features if isinstance(b, nn.Sequential) and isinstance(b[0], nn.MaxPool2d)]
        assert len(blocks) == 2 and all([type(m) for m in b] == [nn.MaxPool2d, nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
                                        for b in blocks)
    if name == "Net-no-1x1":
        assert not any(isinstance(m, MaxPoolingBlock) for m in network.modules())
    if name == "Net-flatten-head":
        assert network.classifier.in_features == 24 * 7 * 7


def test_widths_take_any_whole_number_and_refuse_a_bool():
    import numpy as np

    assert Net(n_channels=np.int64(6)).n_channels == 6
    with pytest.raises(ValueError, match="n_channels must be a whole number, got True"):
        Net(n_channels=True)


@pytest.mark.parametrize("bad, message", [
    (torch.randn(2, 1, 28, 28, dtype=torch.float64), "dtype torch.float64"),
    (torch.rand(2, 1, 28, 28) * 255, "which look like raw 0-255 pixels: prepare images with utils.as_model_input"),
    (torch.full((2, 1, 28, 28), float("nan")), "NaN or infinite values"),
])
def test_input_that_was_not_prepared_is_refused_with_how_to_prepare_it(bad, message):
    with pytest.raises(ValueError, match="normalised") as error:
        Net()(bad)
    assert message in str(error.value)


def test_the_shape_family_holds_net_and_the_public_design_layer_for_layer():
    from model import SHAPES, ShapedNet, layer_costs

    net, public = ShapedNet(SHAPES["net"]), ShapedNet(SHAPES["public"])
    assert [p.shape for p in net.parameters()] == [p.shape for p in Net().parameters()]
    assert count_parameters(net) == 18_538 and count_parameters(public) == 7_918
    assert sorted(p.numel() for p in public.parameters()) == sorted(p.numel() for p in PublicSmallNet().parameters())
    for twin, original in ((net, Net()), (public, PublicSmallNet())):
        # Layer for layer the same parameters and compute (PublicSmallNet's head is a 1x1 convolution, the
        # family's a Linear layer without bias: the same 160 weights).
        assert [(c.parameters, c.multiply_adds) for c in layer_costs(twin)] == [
            (c.parameters, c.multiply_adds) for c in layer_costs(original)]
    torch.manual_seed(0)
    first = ShapedNet(SHAPES["net"])
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), Net().parameters()))  # the same draws


def test_every_named_shape_builds_and_a_shape_that_cannot_work_is_refused():
    from model import SHAPES, Shape

    for name in SHAPES:
        network = build_network(f"shape:{name}")
        assert network(torch.randn(2, 1, 28, 28)).shape == (2, 10) and count_parameters(network) < 20_000
    with pytest.raises(ValueError, match="transition must be one of"):
        Shape((8,), (8,), transition="relu")
    with pytest.raises(ValueError, match="shrinks the maps to nothing"):
        Shape((8,), (8,) * 7, padded=False)
    with pytest.raises(ValueError, match="at least one ConvBlock at 28x28"):
        Shape((), (8,))
