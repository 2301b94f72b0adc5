"""The Colab path: an empty DATA_ROOT, each loader downloads the official archive (here from a local server holding
archives in the official formats, built from the offline copies), verifies its checksum, unpacks, decodes and
caches it; a second call reads the local copy without asking the network."""
import ast
import io
import json
from pathlib import Path

import pytest
import torch

from helpers import data, transfer
from tests import official_archives as archives
from tests.conftest import require

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    served = archives.Mirror(tmp_path / "mirror")
    with served.serve(monkeypatch) as base:
        served.base = base
        yield served


def downloads(mirror, host: str) -> int:
    """How many distinct files were asked of `host` (torchvision asks once for redirects, then for the file)."""
    return len({url for url in mirror.requested if host in url})


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_downloads_verifies_and_reads_the_official_batches(mirror, data_root, tmp_path, num_classes):
    require(data_root / f"cifar{num_classes}", f"CIFAR-{num_classes}")
    expected = archives.add_cifar(mirror, data_root, num_classes)
    root = tmp_path / "empty"
    for split in ("train", "test"):
        got = data.load_cifar(root, split, download=True, num_classes=num_classes)
        pixels, labels = expected[split]
        assert torch.equal(got.images, torch.from_numpy(pixels)) and got.labels.tolist() == labels
        assert len(got.classes) == num_classes
    assert downloads(mirror, "www.cs.toronto.edu") >= 1
    assert_no_network(mirror, lambda: data.load_cifar(root, "test", download=True, num_classes=num_classes))


def assert_no_network(mirror, load) -> None:
    """A second load finds the local copy and asks the network nothing."""
    before = len(mirror.requested)
    load()
    assert len(mirror.requested) == before


def test_cifar_download_with_a_wrong_checksum_fails_with_the_fix(mirror, data_root, tmp_path):
    require(data_root / "cifar10", "CIFAR-10")
    archives.add_cifar(mirror, data_root, 10)
    mirror.checksums.clear()  # the official md5 cannot match the mirror's archive
    with pytest.raises(data.DataMissingError, match="download is corrupt"):
        data.load_cifar(tmp_path / "empty", "train", download=True)
    assert downloads(mirror, "www.cs.toronto.edu") == 1  # it was fetched, then refused


def test_gtsrb_downloads_unpacks_decodes_and_caches(mirror, data_root, tmp_path):
    require(data_root / "gtsrb", "GTSRB")
    archives.add_gtsrb(mirror, data_root)
    root = tmp_path / "empty"
    train = data.load_gtsrb(root, "train", download=True)
    test = data.load_gtsrb(root, "test", download=True)
    assert train.images.shape == (12, 3, 32, 32) and train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert train.groups.tolist() == [0] * 4 + [1000] * 4 + [2000] * 4  # <class>/<track>: one track per class here
    assert test.images.shape == (6, 3, 32, 32) and test.labels.tolist()[:2] == [16, 1]
    cached = sorted(p.name for p in (root / ".cache").iterdir())
    assert cached == [f"gtsrb-{split}-32-v{data.CACHE_VERSION}.pt" for split in ("test", "train")]
    assert downloads(mirror, "sid.erda.dk") == 3  # the three official zips
    assert_no_network(mirror, lambda: data.load_gtsrb(root, "test", download=True))


def test_pets_download_gives_breeds_species_and_images(mirror, data_root, tmp_path):
    require(data_root / "oxford-iiit-pet", "Oxford-IIIT Pet")
    archives.add_pets(mirror, data_root)
    root = tmp_path / "empty"
    trainval = data.load_pets(root, "trainval", size=64, download=True)
    binary = data.load_pets(root, "test", size=64, target="binary-category", download=True)
    assert trainval.images.shape == (37, 3, 64, 64) and trainval.labels.tolist() == list(range(37))
    assert binary.classes == ["Cat", "Dog"] and binary.labels.sum() == 25  # 12 cat and 25 dog breeds
    assert data.pets_is_dog(root).sum() == 25
    assert downloads(mirror, "www.robots.ox.ac.uk") == 2
    assert_no_network(mirror, lambda: data.load_pets(root, "test", size=64, download=True))


def test_flowers_download_reads_the_official_mat_files(mirror, data_root, tmp_path):
    pytest.importorskip("scipy")
    require(data_root / "oxford-iiit-pet", "Oxford-IIIT Pet (its photos stand in for flowers)")
    archives.add_flowers(mirror, data_root)
    flowers = data.load_flowers102(tmp_path / "empty", "train", size=32, download=True)
    assert flowers.images.shape == (3, 3, 32, 32) and flowers.labels.tolist() == [0, 1, 2]


def test_lungs_download_from_the_course_link(mirror, data_root, tmp_path, monkeypatch):
    require(data_root / "lungs", "JSRT lungs")
    url = archives.add_lungs(mirror, data_root)
    root = tmp_path / "empty"
    monkeypatch.delenv("LUNG_DATA_URL", raising=False)
    with pytest.raises(data.DataMissingError, match="LUNG_DATA_URL"):
        data.load_lungs(root, download=True)
    monkeypatch.setenv("LUNG_DATA_URL", url)
    splits = data.load_lungs(root, download=True)
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "val": 2, "test": 2}
    assert splits["train"].images.shape[1:] == (1, 256, 256) and set(splits["train"].masks.unique().tolist()) <= {0, 1}
    assert_no_network(mirror, lambda: data.load_lungs(root, download=True))


def test_a_lungs_link_to_a_web_page_is_refused_with_the_fix(mirror, tmp_path, monkeypatch):
    mirror.put("https://lungs.example.org/login", b"<html>sign in</html>")
    monkeypatch.setenv("LUNG_DATA_URL", "https://lungs.example.org/login")
    with pytest.raises(data.DataMissingError, match="not an npz file.*LUNG_DATA_URL is the course's link"):
        data.load_lungs(tmp_path, download=True)
    assert not list((tmp_path / "lungs").iterdir())  # nothing half-downloaded is left to be read later


def test_text_corpora_download_and_lose_the_gutenberg_wrapper(mirror, data_root, tmp_path):
    require(data_root / "text", "the text corpora")
    expected = archives.add_text(mirror, data_root, data.TEXT_URLS)
    root = tmp_path / "empty"
    assert data.load_text("shakespeare", root, download=True) == expected["shakespeare"]
    assert data.load_text("dickinson", root, download=True) == expected["dickinson"].strip() + "\n"
    assert_no_network(mirror, lambda: data.load_text("shakespeare", root, download=True))


@pytest.mark.parametrize("name, served", [("shakespeare", None), ("dickinson", b"<html>rate limited</html>")])
def test_a_corrupt_text_download_is_refused_and_not_kept(mirror, data_root, tmp_path, name, served):
    require(data_root / "text", "the text corpora")
    archives.add_text(mirror, data_root, data.TEXT_URLS)
    mirror.checksums.clear()  # the published SHA-256 cannot match the mirror's shortened copy
    if served:
        mirror.put(data.TEXT_URLS[name], served)
    with pytest.raises(data.DataMissingError, match="is corrupt: it(s SHA-256| is not a Project Gutenberg)"):
        data.load_text(name, tmp_path, download=True)
    assert not list((tmp_path / "text").iterdir())


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "resnet34", "resnet50"])
def test_backbone_weights_download_through_torchvision(mirror, data_root, tmp_path, monkeypatch, name):
    """MobileNetV2 serves the offline ImageNet weights; the ResNets (no offline copy) random weights of their
    shapes: what is tested is the download, hash check and load, not the values."""
    if name == "mobilenet_v2":
        require(data_root / "weights", "the MobileNetV2 weights")
        served = torch.load(data_root / "weights" / "mobilenet_v2_imagenet1k.pth", weights_only=True)
    else:
        served = transfer.build_backbone(name).state_dict()
    buffer = io.BytesIO()
    torch.save(served, buffer)
    archives.add_backbone_weights(mirror, name, buffer.getvalue())
    monkeypatch.delenv("HELPERS_DRY_RUN", raising=False)  # a dry run would skip the download
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(transfer.WEIGHTS_ENV, raising=False)
    model, source = transfer.load_pretrained(name, data_root=tmp_path / "empty")
    assert source.endswith("(download)") and downloads(mirror, "download.pytorch.org") == 1
    key = next(iter(served))
    assert torch.equal(model.state_dict()[key], served[key].float())
    assert_no_network(mirror, lambda: transfer.load_pretrained(name, data_root=tmp_path / "empty"))


def _loader_calls(source: str) -> list:
    """Every call of a helpers.data loader in a piece of code, as (name, keywords)."""
    loaders = {"load_cifar", "load_gtsrb", "load_pets", "load_lungs", "load_text", "load_flowers102", "pets_is_dog",
               "load_pretrained"}
    return [(node.func.attr, {k.arg: ast.unparse(k.value) for k in node.keywords})
            for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr in loaders]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_real_data_cell_asks_for_the_download(path):
    """A fresh Colab runtime has no DATA_ROOT: each notebook (or the study object it builds) must reach the
    download path above, not stop at DataMissingError."""
    cells = [c["source"] for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    sources = ["".join(s) for s in cells]
    if path.name.startswith("02"):  # notebook 02 loads through its study object
        sources.append(Path(data.__file__).with_name("transfer_study.py").read_text())
    calls = [call for source in sources if not source.lstrip().startswith("%") for call in _loader_calls(source)]
    assert calls, f"{path.name} loads no data through helpers.data"
    downloads_by_default = {"load_pretrained"}
    refused = [name for name, keywords in calls
               if keywords.get("download", "True" if name in downloads_by_default else None) in (None, "False")]
    assert not refused, f"{path.name}: {refused} called without download=True"


def test_the_mirror_serves_what_it_was_given(mirror, tmp_path):
    mirror.put("https://example.org/a/b.bin", b"\x00\x01")
    import urllib.request

    with urllib.request.urlopen("https://example.org/a/b.bin") as response:
        assert response.read() == b"\x00\x01"
    assert mirror.requested == ["https://example.org/a/b.bin"]
