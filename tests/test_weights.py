"""Committed weights stand alone: `helpers.load_model(name)` rebuilds each from weights/manifest.json (constructor
config, preprocessing) and, on real test data, reproduces the metric the manifest stores."""
import json
import math

import pytest
import torch

from helpers import data, load_model, models, results, text
from helpers.repro import PROJECT_ROOT
from helpers.training import Classification, Segmentation, evaluate
from helpers.weights import ManifestError, Preprocess, transform_from_repr
from tests.conftest import require

MANIFEST = results.read_manifest(PROJECT_ROOT / "weights")
SLICE = 2000  # test images per classifier: enough for a binomial standard error of about 0.5 points


def binomial_tolerance(p: float, n: int) -> float:
    """Four standard errors of an accuracy measured on n of the test images (the stored one used all)."""
    return 4 * math.sqrt(max(p * (1 - p), 1e-4) / n)


def batches(images, targets, preprocess, size=256):
    return [(preprocess(images[i:i + size]), targets[i:i + size]) for i in range(0, len(images), size)]


def test_preprocess_matches_what_the_loaders_do():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    loader = data.TensorLoader(data.ImageSet(images, torch.zeros(4, dtype=torch.long), ["a"]), 4,
                               augment=transform_from_repr("CenterCrop(size=28)"), mean=[0.5] * 3, std=[0.25] * 3)
    from helpers.weights import preprocessing_of

    stored = preprocessing_of(loader)
    assert stored == {"mean": [0.5] * 3, "std": [0.25] * 3, "evaluate": "CenterCrop(size=28)", "input_size": 32,
                      "classes": ["a"]}
    assert torch.equal(Preprocess(**stored)(images), next(iter(loader))[0])


def test_preprocess_decodes_files_framed_as_the_model_saw_them(tmp_path):
    from PIL import Image

    wide = torch.zeros(3, 8, 16, dtype=torch.uint8)
    wide[:, :, 4:12] = 255  # a white centre square on a wide black image
    Image.fromarray(wide.permute(1, 2, 0).numpy()).save(tmp_path / "wide.png")
    cropped = Preprocess(input_size=8, resize="short_side").decode([tmp_path / "wide.png"])
    squashed = Preprocess(input_size=8).decode([tmp_path / "wide.png"])  # no resize recorded: whole image
    assert cropped.shape == squashed.shape == (1, 3, 8, 8)
    assert cropped.min() > 200 and squashed[..., 0].max() < 50  # the crop keeps the centre; squashing keeps the sides
    with pytest.raises(ValueError, match="no input_size"):
        Preprocess().decode([tmp_path / "wide.png"])


def test_preprocess_refuses_what_it_cannot_rebuild():
    with pytest.raises(ManifestError, match="only CenterCrop"):
        transform_from_repr("RandomCrop(size=28)")  # an augmentation never runs at evaluation
    with pytest.raises(ValueError, match="uint8"):
        Preprocess()(torch.zeros(1, 3, 8, 8))


def test_weights_saved_before_they_described_themselves_name_their_fix(tmp_path):
    results.save_weights(models.TrafficSignCNN(), "03_old", tmp_path, notebook="03", preprocessing={"input_size": 32})
    manifest = results.read_manifest(tmp_path)
    manifest["03_old"]["config"] = None  # how entries were written before the constructor config was kept
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="re-running notebook 03"):
        load_model("03_old", tmp_path)


def test_unknown_weights_list_the_known_ones():
    with pytest.raises(ManifestError, match="known: .*03_challenge_final0"):
        load_model("03_nope")


def _classification_slice(name, data_root, split="test", num_classes=10):
    notebook = name[:2]
    if split == "val":  # notebook 03's validation tracks: its stratified split of the training set, seed 2023
        assert notebook == "03", f"{name}: no validation split known for notebook {notebook}; add one here"
        require(data_root / "gtsrb", "GTSRB")
        train = data.load_gtsrb(data_root, "train")
        val = train.subset(data.stratified_group_split(train.groups, train.labels, fraction=0.2, seed=2023)[1])
        return val.subset(torch.randperm(len(val), generator=torch.Generator().manual_seed(0))[:SLICE])
    if notebook == "01":
        require(data_root / f"cifar{num_classes}", f"CIFAR-{num_classes}")
        test = data.load_cifar(data_root, "test", num_classes=num_classes)
    else:
        require(data_root / "gtsrb", "GTSRB")
        test = data.load_gtsrb(data_root, "test")
    return test.subset(torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:SLICE])


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_weights_load_alone_and_reproduce_their_metric(name, data_root):
    model, preprocess = load_model(name)
    metric = MANIFEST[name]["metric"]
    assert metric, f"{name} stores no metric"
    with torch.no_grad():
        if name.startswith(("01", "03")):
            split = "test" if "test_acc" in metric else "val"  # selection runs are never tested
            test = _classification_slice(name, data_root, split, num_classes=len(preprocess.classes))
            assert preprocess.classes == list(test.classes)
            acc = evaluate(model, batches(test.images, test.labels, preprocess), Classification())["acc"]
            assert abs(acc - metric[f"{split}_acc"]) <= binomial_tolerance(metric[f"{split}_acc"], len(test))
        elif name.startswith("02"):  # the 37 breeds, framed as the model's images were
            require(data_root / "oxford-iiit-pet", "Oxford-IIIT Pet")
            test = data.load_pets(data_root, "test", size=preprocess.input_size, resize=preprocess.resize)
            test = test.subset(torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:SLICE])
            acc = evaluate(model, batches(test.images, test.labels, preprocess, 64), Classification())["acc"]
            assert abs(acc - metric["test_acc"]) <= binomial_tolerance(metric["test_acc"], len(test))
        elif name.startswith("04"):
            require(data_root / "lungs", "JSRT lungs")
            test = data.load_lungs(data_root)["test"]  # all 123 images: masks at full resolution
            assert preprocess.classes == list(test.classes)
            dice = evaluate(model, batches(test.images, test.masks, preprocess, 16), Segmentation())["dice"]
            assert abs(dice - metric["test_dice"]) < 2e-3
        elif name.startswith("05"):
            require(data_root / "text", "tiny-shakespeare")
            _, _, test_text = text.contiguous_split(data.load_text("shakespeare", data_root))
            windows = text.SlidingWindows(preprocess.encode(test_text), 64, context=128, stride=128)
            loss = evaluate(model, windows, text.NextSymbol())["loss"]
            assert abs(loss - metric["test_loss"]) < 0.02
        else:
            pytest.fail(f"{name}: no test data branch for notebook {name[:2]} here; add one")


def test_weights_saved_without_preprocessing_are_refused_with_the_fix(tmp_path):
    results.save_weights(models.TrafficSignCNN(), "03_x", tmp_path, notebook="03")
    assert "preprocessing" not in results.read_manifest(tmp_path)["03_x"]
    with pytest.raises(ManifestError, match="pass `preprocessing=`"):
        load_model("03_x", tmp_path)
    results.save_weights(models.TrafficSignCNN(), "03_y", tmp_path, notebook="03", preprocessing={"input_size": 32})
    model, preprocess = load_model("03_y", tmp_path)
    assert preprocess.input_size == 32 and not model.training
