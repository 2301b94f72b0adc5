import torch
from torch import nn

from helpers import models


def test_traffic_sign_cnn_linear_layer_takes_512_inputs():
    model = models.TrafficSignCNN()
    assert model.classifier.in_features == 512
    assert model.features(torch.zeros(2, 3, 28, 28)).shape == (2, 512)
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 43)
    assert models.count_parameters(model) == (3 * 64 * 25 + 64) + (64 * 32 * 25 + 32) + (512 * 43 + 43)


def test_batch_norm_sits_between_bias_free_conv_and_activation():
    model = models.TrafficSignCNN(batch_norm=True)
    assert models.batch_norm_placement(model) == [("Conv2d", "BatchNorm2d", "ELU")] * 2
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    assert models.count_parameters(model) == models.count_parameters(models.TrafficSignCNN()) - 96 + 2 * (64 + 32)


def test_signnet_shapes_and_size():
    model = models.SignNet(widths=(32, 64, 128), convs=2)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 43)
    assert model(torch.zeros(1, 3, 28, 28)).shape == (1, 43)  # global pooling: any input size
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 6 and all(c.bias is None for c in convs)
    assert models.batch_norm_placement(model)[0] == ("Conv2d", "BatchNorm2d", "ReLU")
    expected = sum(9 * a * b + 2 * b for a, b in [(3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)])
    assert models.count_parameters(model) == expected + 128 * 43 + 43


def test_spatial_transformer_starts_as_the_identity_and_learns_a_warp():
    stn = models.SpatialTransformer(3)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(stn(x), x, atol=1e-5)
    stn(x).sum().backward()
    assert stn.localise[-1].weight.grad.abs().sum() > 0  # the warp parameters receive gradient
    with_stn = models.SignNet(spatial_transformer=True)
    assert isinstance(with_stn.features[0], models.SpatialTransformer)
    assert with_stn(x).shape == (2, 43)


def test_layer_table_follows_the_forward_pass_and_adds_up():
    baseline = models.layer_table(models.TrafficSignCNN(batch_norm=False), (3, 28, 28))
    assert [r["layer"] for r in baseline] == ["Conv2d 3→64, 5×5", "ELU", "MaxPool2d 2×2", "Conv2d 64→32, 5×5", "ELU",
                                             "MaxPool2d 2×2", "Flatten", "Linear 512→43"]
    assert [r["output"] for r in baseline][-2:] == ["512", "43"] and baseline[2]["output"] == "64×12×12"
    assert sum(r["params"] for r in baseline) == models.count_parameters(models.TrafficSignCNN()) == 78_155
    with_bn = models.layer_table(models.TrafficSignCNN(batch_norm=True), (3, 28, 28))
    assert with_bn[0]["layer"] == "Conv2d 3→64, 5×5, no bias" and with_bn[1]["layer"] == "BatchNorm2d 64"
