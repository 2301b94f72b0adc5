"""A local mirror of the suite's downloads, for tests: small archives in the official formats (the files torchvision
and the loaders fetch), built from the offline copies under DATA_ROOT, served over HTTP on 127.0.0.1.

`Mirror.serve()` patches what a download goes through: every URL is sent to the local server under
/<host>/<path>, and the official checksums are swapped for the mirror files' own, so the real path runs:
download, checksum, unpack, decode, cache.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import pickle
import tarfile
import threading
import urllib.parse
import urllib.request
import zipfile
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import data

PER_CLASS = 2  # images per class and split: enough to check labels, few enough to build in a second


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class Mirror:
    """Files under `root/<host>/<path>`; `checksums` maps an official md5 (or sha256 or its prefix) to the
    mirror's."""

    def __init__(self, root: Path):
        self.root = root
        self.checksums: dict = {}
        self.requested: list = []

    def put(self, url: str, data: bytes, official: str | None = None) -> Path:
        parts = urllib.parse.urlsplit(url)
        path = self.root / parts.netloc / parts.path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if official:
            self.checksums[official] = md5(path) if len(official) == 32 else \
                hashlib.sha256(data).hexdigest()[:len(official)]
        return path

    @contextmanager
    def serve(self, monkeypatch):
        handler = partial(_QuietHandler, directory=str(self.root))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy

        def urlopen(url, *args, **kwargs):
            request = url if isinstance(url, urllib.request.Request) else urllib.request.Request(url)
            if not request.full_url.startswith(base):  # a redirect check may hand back the local address
                parts = urllib.parse.urlsplit(request.full_url)
                request.full_url = f"{base}/{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")
            self.requested.append("https://" + request.full_url[len(base) + 1:])  # as the official address
            return opener.open(request, *args, **kwargs)

        self._patch(monkeypatch, urlopen)
        try:
            yield base
        finally:
            server.shutdown()
            server.server_close()

    def _patch(self, monkeypatch, urlopen) -> None:
        import torch.hub
        import torchvision.datasets.utils as tv_utils

        monkeypatch.setattr(urllib.request, "urlopen", urlopen)
        monkeypatch.setattr(torch.hub, "urlopen", urlopen)
        check_md5, download = tv_utils.check_md5, torch.hub.download_url_to_file
        monkeypatch.setattr(tv_utils, "check_md5", lambda fpath, md5, **kw: check_md5(
            fpath, self.checksums.get(md5, md5), **kw))
        monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, hash_prefix=None, **kw: download(
            url, dst, self.checksums.get(hash_prefix, hash_prefix), **kw))
        sha256_matches = data.sha256_matches
        monkeypatch.setattr(data, "sha256_matches", lambda path, expected: sha256_matches(
            path, self.checksums.get(expected, expected)))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


# ----------------------------------------------------------------------------------------------
# The official formats


def _tar_gz(members: dict) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _image_folder_sample(tree: Path) -> tuple:
    """(HWC uint8 pixels, labels, class names) of the first PER_CLASS images of each class folder."""
    classes = sorted(p.name for p in tree.iterdir() if p.is_dir())
    pixels, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((tree / name).iterdir())[:PER_CLASS]:
            pixels.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(label)
    return np.stack(pixels), labels, classes


def _cifar_batch(pixels: np.ndarray, labels: list, label_key: str) -> bytes:
    rows = pixels.transpose(0, 3, 1, 2).reshape(len(pixels), -1)  # the official row: 1024 R, 1024 G, 1024 B
    return pickle.dumps({"data": rows, label_key: labels}, protocol=2)


def add_cifar(mirror: Mirror, data_root: Path, num_classes: int) -> dict:
    """cifar-10/100-python.tar.gz with the official batch files; returns the expected pixels (NCHW) and labels."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if num_classes == 10 else CIFAR100
    label_key = "labels" if num_classes == 10 else "fine_labels"
    expected, members = {}, {}
    for split, files in (("train", cls.train_list), ("test", cls.test_list)):
        pixels, labels, classes = _image_folder_sample(data_root / f"cifar{num_classes}" / split)
        expected[split] = (pixels.transpose(0, 3, 1, 2), labels)
        for (name, official), part in zip(files, np.array_split(np.arange(len(pixels)), len(files))):
            members[f"{cls.base_folder}/{name}"] = _cifar_batch(pixels[part], [labels[i] for i in part], label_key)
            mirror.checksums[official] = hashlib.md5(members[f"{cls.base_folder}/{name}"]).hexdigest()
    meta = pickle.dumps({cls.meta["key"]: classes}, protocol=2)
    members[f"{cls.base_folder}/{cls.meta['filename']}"] = meta
    mirror.checksums[cls.meta["md5"]] = hashlib.md5(meta).hexdigest()
    mirror.put(cls.url, _tar_gz(members), official=cls.tgz_md5)
    return expected


GTSRB_URL = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
GTSRB_MD5 = {"GTSRB-Training_fixed.zip": "513f3c79a4c5141765e10e952eaa2478",
             "GTSRB_Final_Test_Images.zip": "c7e4e6327067d32654124b0fe9e82185",
             "GTSRB_Final_Test_GT.zip": "fe31e9c9270bbcd7b84b7f21a9d9d9e5"}


def add_gtsrb(mirror: Mirror, data_root: Path, classes: int = 3) -> None:
    """The three official zips: training tracks of the first classes, and the first test images with their labels."""
    source = data_root / "gtsrb"
    train = {f"GTSRB/Training/{p.parent.name}/{p.name}": p.read_bytes()
             for c in range(classes) for p in sorted((source / "GTSRB/Training" / f"{c:05d}").glob("*.ppm"))[:4]}
    header, *rows = (source / "GT-final_test.csv").read_text().splitlines()
    rows = rows[:6]
    test = {f"GTSRB/Final_Test/Images/{row.split(';')[0]}":
            (source / "GTSRB/Final_Test/Images" / row.split(";")[0]).read_bytes() for row in rows}
    for name, members in (("GTSRB-Training_fixed.zip", train), ("GTSRB_Final_Test_Images.zip", test),
                          ("GTSRB_Final_Test_GT.zip", {"GT-final_test.csv": "\n".join([header, *rows]).encode()})):
        mirror.put(GTSRB_URL + name, _zip(members), official=GTSRB_MD5[name])


def add_pets(mirror: Mirror, data_root: Path) -> None:
    """images.tar.gz and annotations.tar.gz: the first image of every breed in each split's official list
    (torchvision names the breeds from the listed images, so all 37 must appear)."""
    from torchvision.datasets import OxfordIIITPet

    source = data_root / "oxford-iiit-pet"
    lists = {}
    for split in ("trainval", "test"):
        lines = (source / "annotations" / f"{split}.txt").read_text().splitlines()
        lists[split] = list({line.split()[1]: line for line in reversed(lines)}.values())[::-1]
    names = [line.split()[0] for lines in lists.values() for line in lines]
    images = {f"images/{n}.jpg": (source / "images" / f"{n}.jpg").read_bytes() for n in names}
    annotations = {f"annotations/{split}.txt": ("\n".join(lines) + "\n").encode() for split, lines in lists.items()}
    (images_url, images_md5), (annotations_url, annotations_md5) = OxfordIIITPet._RESOURCES
    mirror.put(images_url, _tar_gz(images), official=images_md5)
    mirror.put(annotations_url, _tar_gz(annotations), official=annotations_md5)


def add_flowers(mirror: Mirror, data_root: Path) -> None:
    """102flowers.tgz, imagelabels.mat and setid.mat; no Flowers images exist offline, so Pets photos stand in
    for the pixels (the format is what is tested)."""
    from scipy.io import savemat
    from torchvision.datasets import Flowers102

    photos = sorted((data_root / "oxford-iiit-pet" / "images").glob("*.jpg"))[:6]
    images = {f"jpg/image_{i:05d}.jpg": p.read_bytes() for i, p in enumerate(photos, 1)}
    files = Flowers102._file_dict
    mirror.put(Flowers102._download_url_prefix + files["image"][0], _tar_gz(images), official=files["image"][1])
    for key, content in (("label", {"labels": np.array([1, 2, 3, 1, 2, 3])}),
                         ("setid", {"trnid": np.array([1, 2, 3]), "valid": np.array([4]), "tstid": np.array([5, 6])})):
        buffer = io.BytesIO()
        savemat(buffer, content)
        mirror.put(Flowers102._download_url_prefix + files[key][0], buffer.getvalue(), official=files[key][1])


def add_lungs(mirror: Mirror, data_root: Path) -> str:
    """The course's npz with the first two pairs of each split; returns its URL (for LUNG_DATA_URL)."""
    with np.load(data_root / "lungs" / "lung_field_dataset.npz") as npz:
        arrays = {key: npz[key][:2] for key in npz.files}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    url = "https://lungs.example.org/course/lung_field_dataset.npz"
    mirror.put(url, buffer.getvalue())
    return url


def add_text(mirror: Mirror, data_root: Path, urls: dict) -> dict:
    """The corpora at their public addresses (Dickinson wrapped in Gutenberg's header and footer, as served)."""
    expected = {}
    for name, url in urls.items():
        body = (data_root / "text" / f"{'tinyshakespeare' if name == 'shakespeare' else name}.txt").read_text()[:5000]
        served = body if name == "shakespeare" else (
            f"The Project Gutenberg eBook\n*** START OF THE PROJECT GUTENBERG EBOOK POEMS ***\n{body}\n"
            "*** END OF THE PROJECT GUTENBERG EBOOK POEMS ***\nlicence text\n")
        mirror.put(url, served.encode(), official=data.TEXT_SHA256.get(name))
        expected[name] = body
    return expected


def add_backbone_weights(mirror: Mirror, name: str, weights: bytes) -> None:
    """torchvision's DEFAULT weights URL of backbone `name`, serving `weights` (a saved state dict; its hash
    prefix swapped)."""
    import re

    import torchvision.models as tvm

    url = tvm.get_model_weights(name).DEFAULT.url
    official = re.search(r"-([a-f0-9]*)\.", Path(url).name).group(1)
    mirror.put(url, weights, official=official)
