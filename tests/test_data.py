import os
import urllib.error
import urllib.request

import pytest
import torch

from helpers import augment as A
from helpers import data


def test_holdout_split_sizes_disjoint_seeded():
    train, val = data.holdout_split(1000, 0.2, seed=2023)
    assert len(train) == 800 and len(val) == 200
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    again = data.holdout_split(1000, 0.2, seed=2023)
    assert torch.equal(val, again[1])
    assert not torch.equal(val, data.holdout_split(1000, 0.2, seed=1)[1])


def test_holdout_split_is_the_last_fifth_of_a_seeded_shuffle():
    order = torch.randperm(50, generator=data.make_generator(2023))
    assert data.holdout_split(50, 0.2, 2023)[1].tolist() == sorted(order[40:].tolist())


def test_group_split_keeps_groups_whole():
    groups = torch.arange(300) // 30
    train, val = data.group_holdout_split(groups, 0.2, seed=2023)
    assert set(groups[train].tolist()).isdisjoint(groups[val].tolist())
    assert len(val) == 60 and len(train) + len(val) == 300


def test_stratified_group_split_validates_every_class_with_two_groups():
    groups = torch.arange(330) // 30                     # 11 groups of 30
    labels = torch.tensor([0] * 8 + [1] * 2 + [2])[groups]  # class 0: 8 groups, class 1: 2, class 2: 1
    train, val = data.stratified_group_split(groups, labels, 0.2, seed=2023)
    assert set(groups[train].tolist()).isdisjoint(groups[val].tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(330))
    held = labels[val].unique(return_counts=True)
    assert held[0].tolist() == [0, 1] and held[1].tolist() == [60, 30]  # round(1.6) = 2 groups; at least 1; none
    assert torch.equal(val, data.stratified_group_split(groups, labels, 0.2, seed=2023)[1])
    assert not torch.equal(val, data.stratified_group_split(groups, labels, 0.2, seed=7)[1])


def test_stratified_group_split_refuses_a_group_of_two_classes():
    groups, labels = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1])
    with pytest.raises(ValueError, match="several classes"):
        data.stratified_group_split(groups, labels)


def test_bad_fraction_is_refused():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        data.holdout_split(10, 1.0)


def test_kfold_split_validates_every_sample_once():
    folds = data.kfold_split(103, 5, seed=2023)
    vals = [val.tolist() for _, val in folds]
    assert sorted(sum(vals, [])) == list(range(103))
    assert sorted(len(v) for v in vals) == [20, 20, 21, 21, 21]
    for train, val in folds:
        assert set(train.tolist()).isdisjoint(val.tolist()) and len(train) + len(val) == 103
    assert [v.tolist() for _, v in data.kfold_split(103, 5, seed=2023)] == vals
    assert [v.tolist() for _, v in data.kfold_split(103, 5, seed=1)] != vals


def test_kfold_split_refuses_impossible_fold_counts():
    for folds in (1, 11):
        with pytest.raises(ValueError, match="between 2 and the number of samples"):
            data.kfold_split(10, folds)


def test_synthetic_images_shapes_types_and_determinism():
    a = data.synthetic_images(20, 43, size=32, seed=5)
    b = data.synthetic_images(20, 43, size=32, seed=5)
    assert a.images.shape == (20, 3, 32, 32) and a.images.dtype == torch.uint8
    assert a.labels.dtype == torch.long and len(a.classes) == 43
    assert torch.equal(a.images, b.images)


def test_synthetic_lungs_and_text():
    lungs = data.synthetic_lungs(4, size=48)
    assert lungs.images.shape == lungs.masks.shape == (4, 1, 48, 48)
    assert set(lungs.masks.unique().tolist()) == {0, 1}
    text = data.synthetic_text(5000)
    assert len(text) == 5000 and "\n" in text


def test_image_set_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        data.ImageSet(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long), ["a"])


def test_limit_is_a_seeded_subset():
    full = data.synthetic_images(100, 4)
    small = full.limit(10, seed=1)
    assert len(small) == 10 and full.limit(None) is full
    assert torch.equal(small.images, full.limit(10, seed=1).images)


def test_tensor_loader_covers_every_sample_once_per_epoch():
    images = data.synthetic_images(50, 5)
    loader = data.TensorLoader(images, 8, shuffle=True, seed=3)
    seen = torch.cat([labels for _, labels in loader])
    assert len(loader) == 7 and len(seen) == 50
    assert torch.equal(seen.sort().values, images.labels.sort().values)
    assert len(data.TensorLoader(images, 8, drop_last=True)) == 6


def test_tensor_loader_scales_normalises_and_resumes_its_stream():
    images = data.synthetic_images(40, 5)
    loader = data.TensorLoader(images, 10, shuffle=True, augment=A.Flip(), mean=[0.5] * 3, std=[0.25] * 3, seed=1)
    first, _ = next(iter(loader))
    assert first.dtype == torch.float32 and first.min() >= -2.0 and first.max() <= 2.0
    state = loader.state_dict()
    epoch_a = [x for x, _ in loader]
    loader.load_state_dict(state)
    epoch_b = [x for x, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(epoch_a, epoch_b))


def test_sample_inputs_are_a_seeded_sample_normalised_without_augmentation_or_draws():
    images = data.synthetic_images(40, 5)
    order = images.labels.argsort()  # stored class by class, as the ImageFolder copies are
    images = data.ImageSet(images.images[order], images.labels[order], images.classes)
    loader = data.TensorLoader(images, 40, augment=A.Flip(1.0), mean=[0.5] * 3, std=[0.25] * 3, seed=1)
    state = loader.state_dict()["generator"]
    sample = loader.sample_inputs(20, seed=7)
    assert torch.equal(sample, loader.sample_inputs(20, seed=7)) and not torch.equal(sample, loader.sample_inputs(20))
    assert torch.equal(loader.state_dict()["generator"], state)  # the loader's stream is untouched
    scaled = (images.images.float() / 255 - 0.5) / 0.25
    assert all(any(torch.allclose(row, other) for other in scaled) for row in sample)  # not flipped
    assert len({tuple(row.flatten()[:4].tolist()) for row in sample}) == 20  # distinct samples
    classes_seen = {int(images.labels[int(torch.nonzero((scaled == row).flatten(1).all(1))[0])]) for row in sample}
    assert len(classes_seen) > 1  # not the first class only


def test_missing_data_names_path_layout_and_fix(tmp_path):
    with pytest.raises(data.DataMissingError) as error:
        data.load_gtsrb(tmp_path, "train")
    message = str(error.value)
    assert str(tmp_path / "gtsrb") in message and "GTSRB/Training" in message and "download=True" in message
    for loader in (lambda: data.load_cifar(tmp_path), lambda: data.load_lungs(tmp_path),
                   lambda: data.load_pets(tmp_path), lambda: data.load_text("shakespeare", tmp_path)):
        with pytest.raises(data.DataMissingError, match=str(tmp_path)):
            loader()


def test_pets_resize_mode_is_checked_before_any_file_is_read(tmp_path):
    with pytest.raises(ValueError, match="'short_side' .*'square'"):
        data.load_pets(tmp_path, resize="stretch")
    with pytest.raises(ValueError, match="'short_side' .*'square'"):  # the decoder no longer crops an unknown mode
        data.decode_images([str(tmp_path / "absent.jpg")], 32, resize="stretch")
    with pytest.raises(data.DataMissingError, match=str(tmp_path)):
        data.pets_is_dog(tmp_path)


def test_synthetic_sets_drawn_with_different_seeds_share_their_classes():
    train, test = data.synthetic_images(400, 10, seed=1), data.synthetic_images(200, 10, seed=2)
    assert not torch.equal(train.images[:200], test.images)
    means = torch.stack([train.images[train.labels == c].float().mean(0) for c in range(10)])
    nearest = torch.cdist(test.images.float().flatten(1), means.flatten(1)).argmin(1)
    assert (nearest == test.labels).float().mean() > 0.95  # a test set of other classes would score ~0.1


def test_failed_download_is_missing_data_not_a_url_error(monkeypatch, tmp_path):
    """Offline, torchvision's download raises URLError: notebooks catch DataMissingError to use a stand-in."""
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    for loader, where in ((lambda: data.load_cifar(tmp_path, num_classes=100, download=True), tmp_path),
                          (lambda: data.load_flowers102(tmp_path, download=True), tmp_path / "flowers-102")):
        with pytest.raises(data.DataMissingError, match="download failed") as error:
            loader()
        assert str(where) in str(error.value) and "how to get it" in str(error.value)


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_ROOT", str(tmp_path))
    assert data.resolve_data_root(None) == tmp_path.resolve()
    assert data.resolve_data_root("/elsewhere") == data.Path("/elsewhere")
    monkeypatch.delenv("DATA_ROOT")
    assert data.resolve_data_root(None).name == "data"


def test_lungs_accept_float_images_and_masks(tmp_path):
    import numpy as np

    (tmp_path / "lungs").mkdir()
    x = np.random.default_rng(0).random((3, 16, 16, 1)).astype(np.float32)
    y = (x > 0.5).astype(np.float32)
    np.savez(tmp_path / "lungs" / "lung_field_dataset.npz", **{f"{k}_{s}": v for s in ("train", "val", "test")
                                                               for k, v in (("x", x), ("y", y))})
    sets = data.load_lungs(tmp_path)
    assert sets["train"].images.dtype == torch.uint8 and sets["train"].images.shape == (3, 1, 16, 16)
    assert sets["test"].images.max() > 200
    assert torch.equal(sets["val"].masks, torch.from_numpy(y > 0.5).permute(0, 3, 1, 2).to(torch.uint8))


def test_text_corpora_from_path_and_stdlib(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("hello world\n")
    assert data.load_text(str(path)) == "hello world\n"
    assert "def " in data.load_text("python-stdlib")[:100_000]
    with pytest.raises(data.DataMissingError, match="not a known corpus"):
        data.load_text(str(tmp_path / "nope.txt"))


def test_gutenberg_body_strips_licence():
    text = "header\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nPoem.\n*** END OF THE PROJECT GUTENBERG EBOOK X"
    assert data._gutenberg_body(text) == "Poem.\n"


def test_the_decode_cache_is_keyed_on_file_contents_not_only_names(tmp_path):
    from PIL import Image

    def write(value):
        for c in ("cat", "dog"):
            folder = tmp_path / "cifar10" / "train" / c
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), (value, value, value)).save(folder / "0001.png")
    write(10)
    first = data.load_cifar(tmp_path, "train")
    assert (tmp_path / ".cache").is_dir() and int(first.images[0, 0, 0, 0]) == 10
    again = data.load_cifar(tmp_path, "train")  # served from the cache
    assert torch.equal(again.images, first.images)
    write(200)  # the same names, new pixels
    for path in (tmp_path / "cifar10" / "train").rglob("*.png"):
        os.utime(path, ns=(1, 10**18))  # a later mtime even on file systems with coarse timestamps
    assert int(data.load_cifar(tmp_path, "train").images[0, 0, 0, 0]) == 200


def test_segmentation_sets_say_they_are_synthetic_through_subsets_and_resizing():
    lungs = data.synthetic_lungs(4, size=32, seed=0)
    loader = data.TensorLoader(lungs.subset([0, 1]).resized(16), 2)
    assert loader.meta == {"samples": 2, "input_size": 16, "synthetic": True}


def test_stratified_group_split_refuses_a_bad_fraction():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        data.stratified_group_split(torch.arange(4), torch.zeros(4, dtype=torch.long), 1.0)
