import pytest
import torch

from helpers import augment as A
from helpers.repro import make_generator


def batch(n=6, c=3, h=8, w=8):
    images = torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w) / (n * c * h * w)
    return images, torch.arange(n)


@pytest.mark.parametrize("augmentation", [
    A.Flip(), A.Translate(0.25), A.RandomCrop(8, padding=2), A.RandomAffine(10, (0.9, 1.1), 5, 0.1),
    A.BrightnessContrast(0.2, 0.2), A.Compose(A.Flip(), A.Translate(0.1)), A.RandomResample(p=0.7),
])
def test_augmentations_keep_shapes_labels_and_are_seeded(augmentation):
    images, labels = batch()
    out1, lab1 = augmentation(images, labels, make_generator(0))
    out2, _ = augmentation(images, labels, make_generator(0))
    assert out1.shape == images.shape and out1.dtype == images.dtype
    assert torch.equal(lab1, labels)
    assert torch.equal(out1, out2)


def test_flip_mirrors_exactly_and_only_allowed_classes():
    images, labels = batch(n=64)
    out, _ = A.Flip(p=1.0, classes=[1, 3])(images, labels, make_generator(0))
    for i in range(64):
        expected = images[i].flip(-1) if labels[i] in (1, 3) else images[i]
        assert torch.equal(out[i], expected)


def test_translate_moves_content_by_whole_pixels_and_fills_zero():
    images = torch.zeros(200, 1, 10, 10)
    images[:, :, 5, 5] = 1.0
    out, _ = A.Translate(0.2)(images, torch.zeros(200, dtype=torch.long), make_generator(1))
    assert torch.all(out.sum(dim=(1, 2, 3)) == 1)  # the dot stays inside for shifts up to 2 px
    rows, cols = torch.nonzero(out[:, 0], as_tuple=True)[1:]
    assert rows.min() == 3 and rows.max() == 7 and cols.min() == 3 and cols.max() == 7


def test_random_crop_size_and_center_crop_content():
    images, labels = batch(h=32, w=32)
    out, _ = A.RandomCrop(28)(images, labels, make_generator(0))
    assert out.shape[-2:] == (28, 28)
    assert torch.equal(A.center_crop(images, 28), images[..., 2:30, 2:30])
    with pytest.raises(ValueError, match="larger than the images"):
        A.RandomCrop(40)(images, labels, make_generator(0))


def test_identity_affine_is_identity():
    images, labels = batch()
    out, _ = A.RandomAffine(0, (1.0, 1.0), 0, 0)(images, labels, make_generator(0))
    assert torch.allclose(out, images, atol=1e-5)


def test_flip_swaps_mirror_pair_labels():
    images, _ = batch(n=4)
    labels = torch.tensor([33, 34, 5, 12])
    out, new = A.Flip(p=1.0, classes=[12], swaps={33: 34, 34: 33})(images, labels, make_generator(0))
    assert new.tolist() == [34, 33, 5, 12]
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[2], images[2])


def test_per_image_standardize():
    images = torch.rand(5, 3, 8, 8) * torch.arange(1, 6).view(5, 1, 1, 1)
    out, _ = A.PerImageStandardize()(images, torch.zeros(5), None)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), torch.zeros(5), atol=1e-5)
    assert torch.allclose(out.std(dim=(1, 2, 3)), torch.ones(5), atol=1e-2)


def test_shifted_views_move_content_one_way_each():
    images = torch.zeros(1, 1, 9, 9)
    images[0, 0, 4, 4] = 1.0
    views = A.shifted_views(images, pixels=2)
    centres = [tuple(torch.nonzero(v[0, 0])[0].tolist()) for v in views]
    assert centres == [(6, 4), (2, 4), (4, 6), (4, 2)]


def test_mixup_and_cutmix_mix_labels_by_the_mixed_amount():
    from helpers import augment as A
    g = torch.Generator().manual_seed(0)
    images = torch.stack([torch.full((3, 8, 8), float(i)) for i in range(6)])
    labels = torch.arange(6)
    for aug in (A.MixUp(6, alpha=0.4), A.CutMix(6, alpha=1.0)):
        mixed, soft = aug(images, labels, g)
        assert soft.shape == (6, 6)
        torch.testing.assert_close(soft.sum(1), torch.ones(6))
        # each image's mean is the label-weighted mean of the sources' values (value i for image i)
        torch.testing.assert_close(mixed.mean(dim=(1, 2, 3)), soft @ torch.arange(6.0))


def test_beta_samples_have_the_right_mean_and_variance():
    from helpers.augment import _beta
    g = torch.Generator().manual_seed(1)
    for alpha in (0.2, 1.0, 2.0):
        x = torch.tensor([_beta(alpha, g) for _ in range(4000)])
        assert x.mean().item() == pytest.approx(0.5, abs=0.02)
        assert x.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.1)


def test_random_erasing_fills_one_box_per_chosen_image():
    from helpers import augment as A
    g = torch.Generator().manual_seed(2)
    images = torch.full((64, 3, 16, 16), 2.0)
    out, _ = A.RandomErasing(p=0.5, scale=(0.1, 0.2))(images, torch.zeros(64), g)
    erased = (out != 2.0).any(1)
    fraction = erased.flatten(1).float().mean(1)
    chosen = fraction > 0
    assert 0.3 < chosen.float().mean() < 0.7
    assert ((fraction[chosen] > 0.04) & (fraction[chosen] < 0.3)).all()
    for mask in erased[chosen]:  # one rectangle: its bounding box is fully erased
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        assert mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()


def test_random_resample_changes_only_the_chosen_images_and_keeps_a_flat_image_flat():
    images, labels = batch(n=64)
    out, _ = A.RandomResample(p=0.5, scale=(0.5, 0.5))(images, labels, make_generator(3))
    changed = (out - images).abs().flatten(1).amax(1) > 1e-6
    assert 10 < changed.sum() < 54  # about half, drawn per image
    flat = torch.full((4, 3, 8, 8), 0.25)
    for method in A.RESIZE_FILTERS:
        assert torch.allclose(A.resample(flat, 3, method), flat, atol=1e-6), method


def test_resample_at_full_size_is_the_identity_and_filters_differ_when_shrinking():
    images, _ = batch(n=2, h=16, w=16)
    assert torch.allclose(A.resample(images, 16, "bilinear"), images, atol=1e-6)
    nearest, smooth = (A.resample(images, 7, m) for m in ("nearest", "bilinear-antialias"))
    assert not torch.allclose(nearest, smooth, atol=1e-3)


def test_random_resample_names_the_filters_it_knows():
    with pytest.raises(ValueError, match="choose from"):
        A.RandomResample(filters=("lanczos",))
