"""The loaders on the real data sets (prepared from ../shared/data); skipped only where absent."""
import numpy as np
import pytest
import torch

from helpers import data

from .conftest import require

pytestmark = pytest.mark.real_data


def test_cifar10_sizes_classes(data_root):
    require(data_root / "cifar10", "CIFAR-10")
    test = data.load_cifar(data_root, "test")
    assert test.images.shape == (10000, 3, 32, 32) and test.classes[0] == "airplane"
    assert test.class_counts().tolist() == [1000] * 10
    train = data.load_cifar(data_root, "train")
    assert len(train) == 50000 and train.class_counts().tolist() == [5000] * 10


def test_cifar100_reads_the_image_folder_with_official_label_ids(data_root):
    require(data_root / "cifar100", "CIFAR-100")
    test = data.load_cifar(data_root, "test", num_classes=100)
    assert test.images.shape == (10000, 3, 32, 32) and len(test.classes) == 100
    assert test.class_counts().tolist() == [100] * 100
    assert test.classes[:3] == ["apple", "aquarium_fish", "baby"] and test.classes[-1] == "worm"  # official ids 0-2, 99


def test_gtsrb_sizes_classes_tracks(data_root):
    require(data_root / "gtsrb", "GTSRB")
    train, test = data.load_gtsrb(data_root, "train"), data.load_gtsrb(data_root, "test")
    assert train.images.shape == (39209, 3, 32, 32) and len(test) == 12630
    assert len(train.class_counts()) == 43 and train.class_counts().min() == 210
    assert train.classes == test.classes and test.classes[14] == "stop"  # named, as a manifest stores them
    tracks = train.groups.unique(return_counts=True)[1]
    assert tracks.min() >= 1 and tracks.max() == 30 and len(tracks) > 1000
    t, v = data.group_holdout_split(train.groups)
    assert abs(len(v) / len(train) - 0.2) < 0.03
    assert len(train.labels[v].unique()) < 43  # a random track split leaves rare classes unvalidated ...
    t, v = data.stratified_group_split(train.groups, train.labels)
    assert len(train.labels[v].unique()) == 43 and abs(len(v) / len(train) - 0.2) < 0.03  # ... this one does not


def test_pets_sizes_classes(data_root):
    require(data_root / "oxford-iiit-pet", "Oxford-IIIT Pet")
    trainval = data.load_pets(data_root, "trainval", size=64)
    assert trainval.images.shape == (3680, 3, 64, 64) and len(trainval.classes) == 37
    test = data.load_pets(data_root, "test", size=64, target="binary-category")
    assert len(test) == 3669 and test.classes == ["Cat", "Dog"]
    assert 0.25 < test.labels.float().mean() < 0.75


def test_pets_species_per_breed_agree_with_the_binary_labels(data_root):
    require(data_root / "oxford-iiit-pet", "Oxford-IIIT Pet")
    is_dog = data.pets_is_dog(data_root)
    assert is_dog.dtype == torch.bool and int(is_dog.sum()) == 25 and int((~is_dog).sum()) == 12
    for split in ("trainval", "test"):
        breeds = data.load_pets(data_root, split, size=64)
        species = data.load_pets(data_root, split, size=64, target="binary-category")
        assert torch.equal(is_dog[breeds.labels], species.labels.bool())


def test_pets_square_keeps_the_whole_image(data_root):
    require(data_root / "oxford-iiit-pet", "Oxford-IIIT Pet")
    from PIL import Image
    from torchvision.datasets import OxfordIIITPet
    crop = data.load_pets(data_root, "test", size=64)
    whole = data.load_pets(data_root, "test", size=64, resize="square")
    assert whole.images.shape == crop.images.shape and whole.meta["resize"] == "square"
    assert torch.equal(whole.labels, crop.labels)
    path = OxfordIIITPet(str(data_root), split="test")._images[0]
    with Image.open(path) as image:
        original = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).flatten(0, 1)
        assert image.width != image.height
    # Squashing keeps every part of the picture, so its mean colour is the original's; the crop cuts a side off.
    mean = lambda images: images[0].float().mean((1, 2))
    assert (mean(whole.images) - original.mean(0)).abs().max() < 1.5
    assert (mean(crop.images) - original.mean(0)).abs().max() > (mean(whole.images) - original.mean(0)).abs().max()


def test_lungs_sizes_and_binary_masks(data_root):
    require(data_root / "lungs" / "lung_field_dataset.npz", "lung fields")
    sets = data.load_lungs(data_root)
    assert [len(sets[s]) for s in ("train", "val", "test")] == [112, 12, 123]
    assert sets["train"].images.shape[1:] == (1, 256, 256)
    assert set(sets["test"].masks.unique().tolist()) == {0, 1}
    assert sets["test"].resized(64).subset([0]).classes == ("background", "lung field")  # mask values 0, 1
    assert 0.1 < sets["train"].masks.float().mean() < 0.5  # lungs cover a fair part of a chest X-ray


def test_text_corpora(data_root):
    require(data_root / "text", "text corpora")
    shakespeare = data.load_text("shakespeare", data_root)
    assert len(shakespeare) == 1115394 and len(set(shakespeare)) == 65
    assert "Because I could not stop for Death" in data.load_text("dickinson", data_root)


def test_mobilenet_weights_load_strictly(data_root):
    import torchvision

    path = require(data_root / "weights" / "mobilenet_v2_imagenet1k.pth", "MobileNetV2 weights")
    model = torchvision.models.mobilenet_v2(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def test_offline_mobilenet_v2_weights_recognise_pets_as_imagenet_cats_and_dogs(data_root):
    """The ImageNet classifier itself, before any fine-tuning: pet photos must land in ImageNet's dog
    (151-268) and domestic-cat (281-285) classes, which random or mismatched weights never do."""
    from helpers import transfer

    require(data_root / "weights" / transfer.weights_file("mobilenet_v2"), "MobileNetV2 ImageNet weights")
    backbone, source = transfer.load_pretrained("mobilenet_v2", data_root=data_root, download=False)
    assert source.endswith("mobilenet_v2_imagenet1k.pth")
    pets = data.load_pets(data_root, "test", size=128, target="binary-category").limit(96, seed=0)
    loader = data.TensorLoader(pets, 96, mean=transfer.IMAGENET_MEAN, std=transfer.IMAGENET_STD)
    images, is_dog = next(iter(loader))
    with torch.no_grad():
        top = backbone.eval()(images).argmax(1)
    predicted_dog = (top >= 151) & (top <= 268)
    predicted_cat = (top >= 281) & (top <= 285)
    assert (predicted_dog | predicted_cat).float().mean() > 0.85
    assert (predicted_dog[(predicted_dog | predicted_cat)] == is_dog.bool()[(predicted_dog | predicted_cat)]) \
        .float().mean() > 0.9
