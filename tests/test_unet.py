"""Notebook 04's building blocks: the U-Net and its switches, the segmentation loss/metrics, paired
augmentation and the receptive-field helpers."""
import pytest
import torch
from torch import nn

from helpers import augment as A
from helpers import data, models, receptive_field as rf
from helpers.training import Segmentation, overlap_scores, soft_dice


def bolts_unet_parameters(num_classes, channels, layers, start):
    """Parameter count of the Bolts U-Net, worked out from its structure (conv3x3 with bias + BN)."""
    double = lambda a, b: (9 * a * b + b) + 2 * b + (9 * b * b + b) + 2 * b
    total, width = double(channels, start), start
    for _ in range(layers - 1):
        total, width = total + double(width, 2 * width), 2 * width
    for _ in range(layers - 1):
        total += (4 * width * (width // 2) + width // 2) + double(width, width // 2)
        width //= 2
    return total + width * num_classes + num_classes


def test_default_unet_matches_the_reference_size():
    model = models.UNet(num_classes=2, input_channels=3)
    n = models.count_parameters(model)
    assert n == bolts_unet_parameters(2, 3, 5, 64)
    assert 30.95e6 < n < 31.1e6  # "~31.0 M"
    assert models.count_parameters(models.UNet(1, 1, num_layers=3, features_start=8)) == \
        bolts_unet_parameters(1, 1, 3, 8)


@pytest.mark.parametrize("upsampling", ["transpose", "nearest", "bilinear"])
@pytest.mark.parametrize("size", [(64, 64), (37, 53), (100, 72), (17, 17)])
def test_output_has_the_input_size(upsampling, size):
    model = models.UNet(num_classes=3, input_channels=1, num_layers=5, features_start=4, upsampling=upsampling)
    assert model(torch.zeros(2, 1, *size)).shape == (2, 3, *size)


def leaf_types(model):
    return [type(m).__name__ for m in model.modules() if not list(m.children())]


def test_nearest_switch_only_replaces_the_up_convolutions():
    base = models.UNet(1, 1, features_start=8)
    nearest = models.UNet(1, 1, features_start=8, upsampling="nearest")
    ups = [m for m in nearest.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 4 and all(u.mode == "nearest" and u.scale_factor == 2 for u in ups)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in nearest.modules())
    expected = sum((["Upsample", "Conv2d"] if t == "ConvTranspose2d" else [t] for t in leaf_types(base)), [])
    assert leaf_types(nearest) == expected
    # 2x2 transposed conv (4·c·c/2 weights) becomes a 1x1 conv (c·c/2 weights): exactly 3·c·c/2 fewer each
    saved = sum(3 * c * (c // 2) for c in (128, 64, 32, 16))
    assert models.count_parameters(base) - models.count_parameters(nearest) == saved


def test_elu_switch_only_replaces_activations():
    base, elu = models.UNet(1, 1, features_start=8), models.UNet(1, 1, features_start=8, activation="elu")
    assert leaf_types(elu) == ["ELU" if t == "ReLU" else t for t in leaf_types(base)]
    assert "ReLU" not in leaf_types(elu) and leaf_types(base).count("ReLU") == 18
    assert models.count_parameters(base) == models.count_parameters(elu)


def test_bilinear_flag_is_bolts_spelling_and_bad_switches_are_refused():
    assert models.UNet(1, 1, features_start=4, bilinear=True).config["upsampling"] == "bilinear"
    with pytest.raises(ValueError, match="transpose, bilinear, nearest"):
        models.UNet(1, 1, upsampling="cubic")
    with pytest.raises(ValueError, match="relu, elu"):
        models.UNet(1, 1, activation="gelu")


def test_overlap_scores_and_soft_dice():
    truth = torch.zeros(3, 1, 4, 4)
    truth[0, :, :2] = 1          # 8 pixels
    truth[1, :, :, :1] = 1       # 4 pixels
    predicted = torch.zeros(3, 1, 4, 4)
    predicted[0, :, :1] = 1      # 4 of the 8: Dice 2·4/12, IoU 4/8
    predicted[1] = truth[1]      # perfect
    scores = overlap_scores(predicted, truth)  # image 2: both empty, scores 1
    assert torch.allclose(scores["dice"], torch.tensor([8 / 12, 1.0, 1.0]))
    assert torch.allclose(scores["iou"], torch.tensor([0.5, 1.0, 1.0]))
    assert torch.allclose(scores["pixel_acc"], torch.tensor([12 / 16, 1.0, 1.0]))
    assert torch.allclose(soft_dice(truth, truth, smooth=0.0)[:2], torch.ones(2))


def test_segmentation_task_scores_at_the_masks_resolution():
    task = Segmentation()
    masks = torch.zeros(2, 1, 16, 16)
    masks[:, :, 4:12, 4:12] = 1
    logits = torch.nn.functional.interpolate(masks * 20 - 10, size=(8, 8), mode="area")
    metrics = task.metrics(logits, masks.to(torch.uint8))
    assert metrics["dice"].shape == (2,) and torch.allclose(metrics["dice"], torch.ones(2))
    assert task.loss(logits, masks) < task.loss(-logits, masks)
    assert task.monitor == "val_dice" and task.mode == "max"


def test_paired_affine_moves_image_and_mask_together():
    images = torch.zeros(4, 1, 32, 32)
    images[:, :, 8:20, 10:22] = 1.0
    masks = images.to(torch.uint8)
    warp = A.RandomAffine(degrees=10, scale=(0.9, 1.1), translate=0.1, masks=True)
    out_images, out_masks = warp(images, masks, torch.Generator().manual_seed(0))
    assert out_masks.dtype == torch.uint8 and set(out_masks.unique().tolist()) <= {0, 1}
    agreement = ((out_images > 0.5) == out_masks.bool()).float().mean()
    assert agreement > 0.98 and not torch.equal(out_masks, masks)


def test_segmentation_set_resizes_and_subsets():
    lungs = data.synthetic_lungs(4, size=64)
    small = lungs.resized(32)
    assert small.images.shape == (4, 1, 32, 32) and small.masks.shape == (4, 1, 32, 32)
    assert abs(small.masks.float().mean() - lungs.masks.float().mean()) < 0.02
    assert lungs.resized(32, masks=False).masks.shape == (4, 1, 64, 64)
    assert lungs.subset([2, 0]).ids == ["synthetic2", "synthetic0"]
    images, masks = next(iter(data.TensorLoader(small, 2)))
    assert images.shape == masks.shape == (2, 1, 32, 32)


# ---- receptive fields -------------------------------------------------------------------------

def test_receptive_field_of_known_stacks():
    conv3 = rf.Layer("conv", 3)
    assert rf.receptive_field([conv3, conv3])[-1]["size"] == 5
    assert rf.receptive_field([conv3, rf.Layer("pool", 2, 2), conv3])[-1]["size"] == 8
    assert rf.receptive_field([rf.Layer("conv", 3, dilation=2)])[-1]["size"] == 5
    vgg16 = []
    for convs in (2, 2, 3, 3, 3):
        vgg16 += [conv3] * convs + [rf.Layer("pool", 2, 2)]
    assert rf.receptive_field(vgg16[:-1])[-1]["size"] == 196   # conv5_3 of VGG-16
    assert rf.receptive_field(vgg16)[-1]["size"] == 212        # pool5
    up = rf.receptive_field([conv3, rf.Layer("pool", 2, 2), rf.Layer("up", 2, 2, upsampling=True), conv3])
    assert [r["size"] for r in up] == [3, 4, 4, 6] and up[-1]["jump"] == 1


def test_layers_of_a_model_in_order():
    model = nn.Sequential(nn.Conv2d(1, 2, 5), nn.ReLU(), nn.BatchNorm2d(2), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3),
                          nn.Upsample(scale_factor=2, mode="nearest"))
    assert [(l.kernel, l.stride, l.upsampling) for l in rf.layers_of(model)] == \
        [(5, 1, False), (2, 2, False), (3, 1, False), (2, 2, True)]
    assert rf.theoretical_receptive_field(model) == 1 + 4 + 1 + 4


def test_unet_receptive_field_analytic_and_bounds_the_gradient():
    default = models.UNet(1, 1)
    assert rf.receptive_field(rf.layers_of(default.layers[:5]))[-1]["size"] == 140  # bottleneck
    assert rf.theoretical_receptive_field(default) == 200
    torch.manual_seed(0)
    for upsampling in ("transpose", "nearest"):
        small = models.UNet(1, 1, num_layers=3, features_start=4, upsampling=upsampling).double()
        field = rf.effective_receptive_field(small, torch.randn(2, 1, 96, 96, dtype=torch.float64))
        assert rf.theoretical_receptive_field(small) == 44
        assert rf.support(field) == (44, 44)  # the gradient reaches exactly as far as the theory says
        assert field.max() == 1 and 1 <= rf.extent(field, 0.5) <= rf.extent(field, 0.95) <= 44


def test_extent_of_a_point_and_a_uniform_field():
    point = torch.zeros(9, 9)
    point[4, 4] = 1
    assert rf.extent(point) == 1 and rf.support(point) == (1, 1)
    assert rf.extent(torch.ones(9, 9), mass=1.0) == 9
