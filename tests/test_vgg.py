"""helpers.vgg: the CIFAR-10 baseline's exact size, and that each switch changes only what it names."""
import json
import math

import pytest
import torch
import torch.nn as nn

from helpers.models import count_parameters
from helpers import vgg
from helpers.vgg import (AirNet, BasicBlock, CifarNet, Residual, ResNet9, SqueezeExcite, norm_layer, output_shape,
                          resnet_steps)


def test_baseline_matches_the_tutorial_model():
    model = CifarNet()
    # Keras summary of Brownlee's 3-block VGG: 896+9,248+18,496+36,928+73,856+147,584+262,272+1,290
    assert count_parameters(model) == 550_570
    assert output_shape(model) == (2, 10)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm2d)) for m in model.modules())


def test_he_uniform_initialisation_bounds():
    torch.manual_seed(0)
    conv = CifarNet().features[0].body[0][0]
    bound = math.sqrt(6 / (3 * 3 * 3))
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(conv.bias) == 0


def test_dropout_and_batch_norm_switches():
    dropped = CifarNet(dropout=(0.2, 0.3, 0.4, 0.5))
    assert [m.p for m in dropped.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.3, 0.4, 0.5]
    assert count_parameters(dropped) == 550_570
    bn = CifarNet(norm="batch")
    conv_biases = 32 + 32 + 64 + 64 + 128 + 128
    assert count_parameters(bn) == 550_570 - conv_biases + 2 * conv_biases  # bias dropped, BN scale + shift
    order = CifarNet(norm="batch", dropout=(0.2, 0.3, 0.4, 0.5), dropout_order="dropout_bn")
    block = order.features[0]
    assert [type(m) for m in block.body[0]] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in block.body[1]] == [nn.Conv2d, nn.Dropout, nn.BatchNorm2d, nn.ReLU]
    rates = lambda net: [m.p for m in net.modules() if isinstance(m, nn.Dropout)]  # a true reordering: same layers
    assert rates(order) == rates(CifarNet(norm="batch", dropout=(0.2, 0.3, 0.4, 0.5))) == [0.2, 0.3, 0.4, 0.5]
    with pytest.raises(ValueError, match="dropout needs 4 rates"):
        CifarNet(dropout=(0.1, 0.2))


@pytest.mark.parametrize("kind, groups", [("layer", 1), ("instance", 32), ("group", 4)])
def test_norm_variants_are_group_norms(kind, groups):
    layer = norm_layer(kind, 32)
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == groups
    x = torch.randn(3, 32, 5, 5) * 4 + 2
    y = layer(x).view(3, groups, -1)
    torch.testing.assert_close(y.mean(-1), torch.zeros(3, groups), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="norm="):
        norm_layer("weight", 8)


def test_resnet_steps_change_one_thing_each():
    steps = {name: CifarNet(**kwargs) for name, kwargs in resnet_steps().items()}
    for model in steps.values():
        assert output_shape(model) == (2, 10)
    gap = steps["gap_head"]
    dense_head, gap_head = 2048 * 128 + 128 + 128 * 10 + 10, 128 * 10 + 10
    assert count_parameters(steps["vgg"]) - count_parameters(gap) == dense_head - gap_head
    assert not any(isinstance(m, nn.MaxPool2d) for m in steps["strided"].modules())
    assert count_parameters(steps["strided"]) == count_parameters(gap)  # same weights, strides instead of pools
    blocks = [m for m in steps["residual"].modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 3 and isinstance(blocks[0].shortcut, nn.Identity)  # stem already gives 32 channels
    assert all(isinstance(b.shortcut, nn.Sequential) for b in blocks[1:])  # projections where shapes change
    assert len([m for m in steps["residual_4_blocks"].modules() if isinstance(m, BasicBlock)]) == 4


def test_basic_block_is_identity_plus_residual():
    block = BasicBlock(8, 8, 1, norm="batch").eval()
    nn.init.zeros_(block.norm2.weight)  # residual branch switched off
    x = torch.randn(2, 8, 6, 6).abs()
    torch.testing.assert_close(block(x), x)


def test_squeeze_excitation_and_patchify_stem():
    plain = CifarNet(**resnet_steps()["residual"])
    se = CifarNet(**resnet_steps()["residual"], se=True)
    gates = [m for m in se.modules() if isinstance(m, SqueezeExcite)]
    extra = sum(c * max(4, c // 8) * 2 + max(4, c // 8) + c for c in (32, 64, 128))
    assert len(gates) == 3 and count_parameters(se) - count_parameters(plain) == extra
    patch = CifarNet(widths=(64, 128, 256), head="gap", residual=True, norm="batch", stem="patchify", patch=2)
    assert output_shape(patch) == (2, 10)
    assert patch.features[0].kernel_size == (2, 2) and patch.features[0].stride == (2, 2)
    with pytest.raises(ValueError, match="stem="):
        CifarNet(stem="pyramid")


def test_resnet9_layout_size_and_residual_identity():
    model = ResNet9()
    # Page's ResNet-9: conv+BN weights of 8 convolutions (3x3, no bias) and a bias-free 512 -> 10 head
    convs = [(3, 64), (64, 128), (128, 128), (128, 128), (128, 256), (256, 512), (512, 512), (512, 512)]
    assert count_parameters(model) == sum(9 * a * b + 2 * b for a, b in convs) + 512 * 10 == 6_573_120
    assert output_shape(model) == (2, 10) and output_shape(ResNet9((8, 16, 32, 64), 100)) == (2, 100)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    se = ResNet9((8, 16, 32, 64), se=True)
    assert sum(isinstance(m, SqueezeExcite) for m in se.modules()) == 2
    pair = Residual(8).eval()
    nn.init.zeros_(pair.body[1][1].weight)  # second unit's BN scale 0 and shift 0: ReLU(0) = 0 branch
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(pair(x), x)
    with pytest.raises(ValueError, match="4 widths"):
        ResNet9((8, 16, 32))


def test_forward_flops_of_the_baseline_by_hand():
    from helpers.bench import forward_flops
    convs = [(32, 32, 3), (32, 32, 32), (16, 64, 32), (16, 64, 64), (8, 128, 64), (8, 128, 128)]
    expected = sum(2 * s * s * c_out * c_in * 9 for s, c_out, c_in in convs) + 2 * (2048 * 128 + 128 * 10)
    assert forward_flops(CifarNet()) == expected == 77_793_792


@pytest.mark.parametrize("name", ["baseline", "resnet", "resnet9", "airnet"])
def test_every_benchmark_model_builds_and_counts_its_flops(name):
    from helpers import bench
    assert set(bench.MODELS) == {"baseline", "resnet", "resnet9", "airnet"}
    assert bench.forward_flops(bench.MODELS[name]()) > 1e7


def test_cifar_benchmark_prints_both_pipelines_and_writes_its_record(capsys, tmp_path):
    from helpers import bench
    bench.main(["cifar", "--seconds", "0.2", "--batch", "32", "--device", "cpu", "--data-root", str(tmp_path),
                "--workers", "0", "--model", "airnet", "--write", str(tmp_path / "bench.json")])
    out = capsys.readouterr().out
    assert "synthetic stand-in" in out and "speed-up" in out and "matmul ceiling" in out
    (record,) = json.loads((tmp_path / "bench.json").read_text()).values()
    assert record["model"] == "airnet" and record["cpu_model"] and record["precision"] == "float32"
    assert record["train_flops_per_image"] == 3 * bench.forward_flops(AirNet())
    # a 0.2 s run on a busy machine can even beat the 2 s matmul estimate: only signs are stable here
    rows = record["pipelines"]
    assert len(rows) == 2 and all(r["images_per_s"] > 0 and r["fraction"] > 0 for r in rows)


def test_patch_whitening_gives_patches_unit_covariance():
    torch.manual_seed(0)
    mixing = torch.randn(3, 3)
    images = torch.einsum("ij,njhw->nihw", mixing, torch.randn(64, 3, 16, 16)) + 2.0  # correlated channels
    layer = vgg.PatchWhitening(3, 2).fit(images)
    out = torch.nn.functional.conv2d(images, layer.weight)[:, :12]  # the positive half, no bias
    covariance = torch.cov(out.permute(1, 0, 2, 3).reshape(12, -1))
    assert torch.allclose(covariance, torch.eye(12), atol=0.05)
    assert not layer.weight.requires_grad and layer.bias.requires_grad


def test_airnet_shapes_parameters_and_identity_start():
    model = vgg.AirNet()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    conv = model.features[2]
    assert torch.equal(conv.weight[:24, :, 1, 1], torch.eye(24)) and conv.weight[:24, :, 0, 0].abs().sum() == 0
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 6 and not any(n.weight.requires_grad for n in norms)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    convs = 24 * 64 * 9 + 64 * 64 * 9 + 64 * 256 * 9 + 256 * 256 * 9 * 3
    assert trainable == convs + 24 + 2 * (64 + 256 + 256) + 256 * 10  # + whitening bias, BN shifts, head


def test_airnet_se_adds_one_gate_per_stage():
    plain, gated = vgg.AirNet(), vgg.AirNet(se=True)
    gates = [m for m in gated.modules() if isinstance(m, SqueezeExcite)]
    assert len(gates) == 3 and gated(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    extra = sum(2 * w * (w // 8) + w // 8 + w for w in (64, 256, 256))  # two 1x1 convs with biases per gate
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert count(gated) - count(plain) == extra and gated.config["se"] and not plain.config["se"]


def test_airnet_param_groups_speed_up_only_the_batch_norm_shifts():
    model = vgg.AirNet()
    main, shifts = vgg.airnet_param_groups(model, lr=0.5, weight_decay=0.01, bias_scaler=64)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {id(p) for p in shifts["params"]} == {id(n.bias) for n in norms}
    decay_per_step = lambda group: group["lr"] * group["weight_decay"]
    assert shifts["lr"] == 32.0 and decay_per_step(shifts) == pytest.approx(decay_per_step(main))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(main["params"]) + len(shifts["params"]) == len(trainable) and main["lr"] == 0.5
