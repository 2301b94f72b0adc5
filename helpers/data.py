"""Data sets: one registry, torchvision's own layouts, uint8 tensors cached once, splits, stand-ins.

Image data sets are decoded once into a single uint8 tensor (N, C, H, W) and cached under
`DATA_ROOT/.cache/`, so an epoch does no per-image PIL work; batching and augmentation then run on
whole tensors on the training device (see `TensorLoader` and `helpers.augment`).
"""
from __future__ import annotations

import hashlib
import os
import re
import sysconfig
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .repro import PROJECT_ROOT, make_generator
from .results import sha256

DATA_ENV = "DATA_ROOT"
CACHE_VERSION = 1


class DataMissingError(FileNotFoundError):
    """The data set is not where it was looked for; the message says where, in what layout, and how to get it."""


@dataclass(frozen=True)
class DatasetInfo:
    layout: str
    how_to_get: str


DATASETS = {
    "cifar10": DatasetInfo(
        "DATA_ROOT/cifar-10-batches-py/ (torchvision CIFAR10) or DATA_ROOT/cifar10/{train,test}/<class>/*.jpg "
        "(ImageFolder)",
        "pass download=True (torchvision downloads it), or `bash ../shared/data/prepare.sh data` offline"),
    "cifar100": DatasetInfo(
        "DATA_ROOT/cifar-100-python/ (torchvision CIFAR100) or DATA_ROOT/cifar100/{train,test}/<fine class>/*.jpg "
        "(ImageFolder; folder names sorted = the official label ids)",
        "pass download=True (torchvision downloads it), or `bash ../shared/data/prepare.sh data` offline"),
    "gtsrb": DatasetInfo(
        "DATA_ROOT/gtsrb/GTSRB/Training/000NN/*.ppm, DATA_ROOT/gtsrb/GTSRB/Final_Test/Images/*.ppm and "
        "DATA_ROOT/gtsrb/GT-final_test.csv (torchvision GTSRB)",
        "pass download=True (torchvision downloads it), or `bash ../shared/data/prepare.sh data` offline"),
    "pets": DatasetInfo(
        "DATA_ROOT/oxford-iiit-pet/images/*.jpg and DATA_ROOT/oxford-iiit-pet/annotations/{trainval,test}.txt "
        "(torchvision OxfordIIITPet)",
        "pass download=True (torchvision downloads it), or `bash ../shared/data/prepare.sh data` offline"),
    "flowers102": DatasetInfo("DATA_ROOT/flowers-102/jpg/*.jpg, imagelabels.mat, setid.mat (torchvision Flowers102)",
                              "pass download=True (torchvision downloads it); not available offline"),
    "lungs": DatasetInfo(
        "DATA_ROOT/lungs/lung_field_dataset.npz with x_train, y_train, x_val, y_val, x_test, y_test (N,256,256,1)",
        "set the environment variable LUNG_DATA_URL to the course's download link and pass download=True, or copy "
        "the course's npz there (`bash ../shared/data/prepare.sh data` offline)"),
    "shakespeare": DatasetInfo("DATA_ROOT/text/tinyshakespeare.txt",
                               "pass download=True, or `bash ../shared/data/prepare.sh data` offline"),
    "dickinson": DatasetInfo("DATA_ROOT/text/dickinson.txt",
                             "pass download=True, or `bash ../shared/data/prepare.sh data` offline"),
}

TEXT_URLS = {
    "shakespeare": "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    "dickinson": "https://www.gutenberg.org/cache/epub/12242/pg12242.txt",
}
# The canonical char-rnn file. Gutenberg re-generates its header and footer, so Dickinson is checked by its markers.
TEXT_SHA256 = {"shakespeare": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"}
GUTENBERG_START = r"\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG"
LUNG_ARRAYS = {f"{kind}_{split}" for kind in ("x", "y") for split in ("train", "val", "test")}


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """DATA_ROOT parameter, else the DATA_ROOT environment variable, else `data/` in the project."""
    if data_root is None:
        data_root = os.environ.get(DATA_ENV) or PROJECT_ROOT / "data"
    return Path(data_root).expanduser().resolve()


def missing(name: str, path: Path, cause: Exception | None = None) -> DataMissingError:
    info = DATASETS[name]
    failed = f" (download failed: {cause})" if isinstance(cause, OSError) else ""
    if isinstance(cause, RuntimeError) and "corrupt" in str(cause):  # torchvision's checksum check
        failed = (f" (the download is corrupt: its checksum does not match; delete the archive under {path} and "
                  f"run again, or fetch it by hand)")
    return DataMissingError(f"{name}: nothing usable at {path}{failed}.\n  expected layout: {info.layout}\n"
                            f"  how to get it: {info.how_to_get}\n  (DATA_ROOT is set by the notebook parameter "
                            f"DATA_ROOT or the environment variable {DATA_ENV}; default ./data)")


def _torchvision(name: str, path: Path, make):
    """A torchvision data set, or DataMissingError naming the path and the fix; offline, a download
    raises URLError (an OSError), a missing or corrupt folder RuntimeError."""
    try:
        return make()
    except (RuntimeError, OSError) as error:
        raise missing(name, path, error) from error


# ----------------------------------------------------------------------------------------------
# Image sets as tensors


@dataclass
class ImageSet:
    """A whole image data set in memory: uint8 images (N, C, H, W), int64 labels, class names.

    `groups` (optional) ties samples that must stay on one side of a split, e.g. GTSRB tracks.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list
    groups: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> "ImageSet":
        index = torch.as_tensor(index, dtype=torch.long)
        groups = None if self.groups is None else self.groups[index]
        return ImageSet(self.images[index], self.labels[index], self.classes, groups, dict(self.meta))

    def limit(self, n: int | None, seed: int = 2023) -> "ImageSet":
        """A seeded random subset of n samples (all when n is None or larger than the set)."""
        if n is None or n >= len(self):
            return self
        return self.subset(torch.randperm(len(self), generator=make_generator(seed))[:n].sort().values)

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=len(self.classes))


def _load_image(path: str, size: int | None, resize: str) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        if size is not None:
            image = _resize(image, size, resize)
        return np.asarray(image, dtype=np.uint8)


RESIZE_MODES = ("short_side", "square")
# The 43 GTSRB classes by number (the benchmark's sign names, shortened): the data files only number them.
GTSRB_SIGN_NAMES = (
    "speed limit 20", "speed limit 30", "speed limit 50", "speed limit 60", "speed limit 70", "speed limit 80",
    "end of speed limit 80", "speed limit 100", "speed limit 120", "no passing", "no passing over 3.5 t",
    "right of way at next crossing", "priority road", "yield", "stop", "no vehicles", "over 3.5 t prohibited",
    "no entry", "general caution", "curve left", "curve right", "double curve", "bumpy road", "slippery road",
    "road narrows on the right", "road work", "traffic signals", "pedestrians", "children crossing",
    "bicycles crossing", "beware of ice/snow", "wild animals crossing", "end of all limits", "turn right ahead",
    "turn left ahead", "ahead only", "straight or right", "straight or left", "keep right", "keep left",
    "roundabout", "end of no passing", "end of no passing over 3.5 t")


def check_resize(resize: str) -> None:
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize={resize!r}: choose 'short_side' (centre crop) or 'square' (whole image squashed)")


def _resize(image: Image.Image, size: int, resize: str) -> Image.Image:
    if resize == "square":
        return image.resize((size, size), Image.BILINEAR)
    # "short_side": one scale factor keeps the aspect ratio, then a centre square crop.
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def decode_images(paths: list, size: int | None = None, resize: str = "square") -> torch.Tensor:
    """Decode image files into one uint8 (N, 3, H, W) tensor; threads, since PIL releases the GIL."""
    check_resize(resize)
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(lambda p: _load_image(p, size, resize), paths))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"images differ in size {sorted(shapes)[:3]}...; pass size= to resize them")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def source_key(samples: list) -> str:
    """A digest of every source file's name, size and modification time: replacing files under the same
    names (e.g. the 32x32 GTSRB copy by full-resolution images) changes it."""
    digest = hashlib.sha256()
    for sample in samples:
        stat = os.stat(sample)
        digest.update(f"{sample}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return f"{len(samples)}:{digest.hexdigest()}"


def _cached(root: Path, key: str, samples: list, build) -> dict:
    """Load a decoded set from DATA_ROOT/.cache when it was built from the same files (source_key);
    rebuild it otherwise."""
    source = source_key(samples)
    path = root / ".cache" / f"{key}-v{CACHE_VERSION}.pt"
    if path.exists():
        cached = torch.load(path, weights_only=False)
        if cached.get("source") == source:
            return cached
    cached = dict(build(), source=source)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(cached, tmp)
    os.replace(tmp, path)
    return cached


def load_cifar(root=None, split: str = "train", download: bool = False, num_classes: int = 10) -> ImageSet:
    """CIFAR-10/100 from torchvision's binary layout (downloaded when absent and `download`), or from an
    ImageFolder tree DATA_ROOT/cifar10|cifar100/<split>/<class>/ when the binary layout is absent."""
    from torchvision.datasets import CIFAR10, CIFAR100

    root = resolve_data_root(root)
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: CIFAR has 'train' and 'test'")
    if num_classes not in (10, 100):
        raise ValueError(f"num_classes={num_classes}: CIFAR has 10 or 100 classes")
    name, cls, folder = (("cifar10", CIFAR10, "cifar-10-batches-py") if num_classes == 10
                         else ("cifar100", CIFAR100, "cifar-100-python"))
    tree = root / name / split
    if not (root / folder).exists() and tree.is_dir():
        return _load_image_folder(root, tree, f"{name}-{split}")
    if not (root / folder).exists() and not download:
        raise missing(name, root)
    dataset = _torchvision(name, root, lambda: cls(root=str(root), train=split == "train", download=download))
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.as_tensor(dataset.targets, dtype=torch.long), list(dataset.classes))


def _load_image_folder(root: Path, tree: Path, key: str) -> ImageSet:
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(tree))
    paths = [p for p, _ in folder.samples]
    built = _cached(root, key, paths, lambda: dict(images=decode_images(paths),
                                                   labels=torch.tensor(folder.targets, dtype=torch.long)))
    return ImageSet(built["images"], built["labels"], list(folder.classes))


def load_gtsrb(root=None, split: str = "train", size: int = 32, download: bool = False) -> ImageSet:
    """GTSRB resized to size x size; training samples carry their track id in `groups`."""
    from torchvision.datasets import GTSRB

    root = resolve_data_root(root)
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: GTSRB has 'train' and 'test'")
    dataset = _torchvision("gtsrb", root / "gtsrb", lambda: GTSRB(str(root), split=split, download=download))
    paths = [p for p, _ in dataset._samples]
    labels = torch.tensor([t for _, t in dataset._samples], dtype=torch.long)
    built = _cached(root, f"gtsrb-{split}-{size}", paths, lambda: dict(images=decode_images(paths, size)))
    groups = torch.tensor([_gtsrb_track(p) for p in paths], dtype=torch.long) if split == "train" else None
    return ImageSet(built["images"], labels, list(GTSRB_SIGN_NAMES), groups)


def _gtsrb_track(path: str) -> int:
    """Training files are named <class>/<track>_<image>.ppm; a track is one physical sign."""
    match = re.search(r"(\d{5})[/\\](\d{5})_\d{5}\.ppm$", path)
    if not match:
        raise ValueError(f"unexpected GTSRB training file name {path}")
    return int(match.group(1)) * 1000 + int(match.group(2))


def load_pets(root=None, split: str = "trainval", size: int = 160, target: str = "category",
              download: bool = False, resize: str = "short_side") -> ImageSet:
    """Oxford-IIIT Pet at `size` x `size`.

    resize="short_side": shorter side scaled to `size` (aspect kept), then centre-cropped square;
    "square": the whole image squashed to the square (nothing cut off, aspect not kept).
    target="category" gives the 37 breeds, "binary-category" cat (0) vs dog (1).
    """
    from torchvision.datasets import OxfordIIITPet

    root = resolve_data_root(root)
    if target not in ("category", "binary-category"):
        raise ValueError(f"target={target!r}: choose 'category' (37 breeds) or 'binary-category' (cat/dog)")
    check_resize(resize)  # before any file is read
    dataset = _torchvision("pets", root / "oxford-iiit-pet",
                           lambda: OxfordIIITPet(str(root), split=split, target_types=target, download=download))
    paths = [str(p) for p in dataset._images]
    key = f"pets-{split}-{size}" + ("-square" if resize == "square" else "")
    built = _cached(root, key, paths, lambda: dict(images=decode_images(paths, size, resize=resize)))
    if target == "category":
        labels, classes = dataset._labels, list(dataset.classes)
    else:
        labels, classes = dataset._bin_labels, list(dataset.bin_classes)
    return ImageSet(built["images"], torch.tensor(labels, dtype=torch.long), classes,
                    meta={"size": size, "resize": resize})


def pets_is_dog(root=None, download: bool = False) -> torch.Tensor:
    """Per breed (37), True for a dog breed; read from the official list's species column, no image decoded."""
    from torchvision.datasets import OxfordIIITPet

    root = resolve_data_root(root)
    dataset = _torchvision("pets", root / "oxford-iiit-pet",
                           lambda: OxfordIIITPet(str(root), split="trainval", download=download))
    is_dog = torch.zeros(len(dataset.classes), dtype=torch.bool)
    is_dog[torch.tensor(dataset._labels)] = torch.tensor(dataset._bin_labels).bool()
    return is_dog


def load_flowers102(root=None, split: str = "train", size: int = 160, download: bool = False) -> ImageSet:
    """Oxford Flowers-102 (102 classes), shorter side scaled to `size` and centre-cropped square."""
    from torchvision.datasets import Flowers102

    root = resolve_data_root(root)
    dataset = _torchvision("flowers102", root / "flowers-102",
                           lambda: Flowers102(str(root), split=split, download=download))
    paths = [str(p) for p in dataset._image_files]
    built = _cached(root, f"flowers102-{split}-{size}", paths,
                    lambda: dict(images=decode_images(paths, size, resize="short_side")))
    return ImageSet(built["images"], torch.tensor(dataset._labels, dtype=torch.long),
                    [str(c) for c in range(102)], meta={"size": size})


# ----------------------------------------------------------------------------------------------
# Lung fields (the course's npz) and text corpora


@dataclass
class SegmentationSet:
    """uint8 images (N, 1, H, W) in 0..255 and uint8 binary masks (N, 1, H, W)."""

    images: torch.Tensor
    masks: torch.Tensor
    ids: list
    meta: dict = field(default_factory=dict)
    classes: tuple = ("background", "lung field")  # mask value 0 and 1: what a manifest names

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> torch.Tensor:  # what TensorLoader batches alongside the images
        return self.masks

    def subset(self, index) -> "SegmentationSet":
        index = torch.as_tensor(index)
        return replace(self, images=self.images[index], masks=self.masks[index],
                       ids=[self.ids[i] for i in index.tolist()], meta=dict(self.meta))

    def resized(self, size: int, masks: bool = True) -> "SegmentationSet":
        """Images (and, unless `masks=False`, masks) area-averaged to size x size; masks re-binarised at 0.5.
        Keep the masks at full size for evaluation: the metrics then judge the up-sampled prediction."""
        masks_now = (F.interpolate(self.masks.float(), size=(size, size), mode="area") >= 0.5).to(torch.uint8) \
            if masks else self.masks
        return replace(self, images=area_resize(self.images, size), masks=masks_now, ids=list(self.ids),
                       meta=dict(self.meta))


def area_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images area-averaged to size x size and rounded back to uint8 (what a model trained on them saw)."""
    shrunk = F.interpolate(images.float(), size=(size, size), mode="area")
    return shrunk.round().clamp(0, 255).to(torch.uint8)


def load_lungs(root=None, download: bool = False) -> dict:
    """The course's lung-field npz as {'train', 'val', 'test'} SegmentationSets (floats or uint8 accepted)."""
    root = resolve_data_root(root)
    path = root / "lungs" / "lung_field_dataset.npz"
    if not path.exists() and download and os.environ.get("LUNG_DATA_URL"):
        _download(os.environ["LUNG_DATA_URL"], path, check=_lung_npz_problem,
                  fix="check that LUNG_DATA_URL is the course's link to lung_field_dataset.npz")
    if not path.exists():
        raise missing("lungs", path)
    with np.load(path) as npz:
        return {split: SegmentationSet(_to_uint8_image(npz[f"x_{split}"]), _to_binary_mask(npz[f"y_{split}"]),
                                       [str(i) for i in npz[f"id_{split}"]] if f"id_{split}" in npz
                                       else [str(i) for i in range(len(npz[f"x_{split}"]))])
                for split in ("train", "val", "test")}


def _lung_npz_problem(path: Path) -> str | None:
    try:
        with np.load(path) as npz:
            absent = sorted(LUNG_ARRAYS - set(npz.files))
    except (OSError, ValueError, zipfile.BadZipFile):
        return "it is not an npz file (a web page?)"
    return f"it lacks the arrays {', '.join(absent)}" if absent else None


def _channel_first(array: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(-1)
    return tensor.permute(0, 3, 1, 2).contiguous()


def _to_uint8_image(array: np.ndarray) -> torch.Tensor:
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
        array = array * 255.0 if array.max() <= 1.0 else array
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    return _channel_first(array)


def _to_binary_mask(array: np.ndarray) -> torch.Tensor:
    threshold = 0.5 if array.dtype != np.uint8 and array.max() <= 1.0 else (127 if array.max() > 1 else 0)
    return _channel_first((array > threshold).astype(np.uint8))


def load_text(name: str = "shakespeare", root=None, download: bool = False) -> str:
    """A text corpus: 'shakespeare', 'dickinson', 'python-stdlib', or a path to any text file."""
    if name == "python-stdlib":
        return python_stdlib_corpus()
    if name not in TEXT_URLS:
        path = Path(name).expanduser()
        if not path.is_file():
            raise DataMissingError(f"text corpus {name!r}: not a known corpus ({', '.join(TEXT_URLS)}, "
                                   f"python-stdlib) and no file at {path.resolve()}")
        return path.read_text(encoding="utf-8")
    root = resolve_data_root(root)
    path = root / "text" / f"{'tinyshakespeare' if name == 'shakespeare' else name}.txt"
    if not path.exists() and download:
        _download(TEXT_URLS[name], path, sha256=TEXT_SHA256.get(name),
                  check=_gutenberg_problem if name == "dickinson" else None)
        if name == "dickinson":
            path.write_text(_gutenberg_body(path.read_text(encoding="utf-8")), encoding="utf-8")
    if not path.exists():
        raise missing(name, path)
    return path.read_text(encoding="utf-8")


def _gutenberg_problem(path: Path) -> str | None:
    text = path.read_text(encoding="utf-8", errors="replace")
    return None if re.search(GUTENBERG_START, text) else \
        "it is not a Project Gutenberg book (no START marker)"


def _gutenberg_body(text: str) -> str:
    start = re.search(GUTENBERG_START + r".*?\*\*\*", text)
    end = re.search(r"\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG", text)
    return text[start.end() if start else 0:end.start() if end else len(text)].strip() + "\n"


def python_stdlib_corpus(max_chars: int = 2_000_000) -> str:
    """The Python standard library's own source: a real corpus present on every machine."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return "".join(parts)[:max_chars]


def sha256_matches(path: Path, expected: str) -> bool:
    return sha256(path) == expected  # one name for the test mirror to patch


def _download(url: str, path: Path, sha256: str | None = None, check=None,
              fix: str = "put the file there by hand (see README, 'Data')") -> None:
    """Fetch `url` to `path` through a .part file, kept only when its SHA-256 and `check` (a callable
    returning what is wrong, or None) accept it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    try:
        urllib.request.urlretrieve(url, tmp)
    except OSError as error:
        raise DataMissingError(f"could not download {url} to {path}: {error}. Offline? Put the file there by "
                               f"hand (see README, 'Data').") from error
    problem = "its SHA-256 is not the published one" if sha256 and not sha256_matches(tmp, sha256) else \
        check(tmp) if check else None
    if problem:
        tmp.unlink()
        raise DataMissingError(f"the download of {url} is corrupt: {problem}; nothing was kept at {path}. "
                               f"Run again, or {fix}.")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Splits


def holdout_split(n: int, fraction: float = 0.2, seed: int = 2023) -> tuple:
    """The course rule: shuffle with the seed and hold out the last `fraction` of the samples."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction} must lie strictly between 0 and 1")
    order = torch.randperm(n, generator=make_generator(seed))
    n_val = round(n * fraction)
    return order[:n - n_val].sort().values, order[n - n_val:].sort().values


def kfold_split(n: int, folds: int = 5, seed: int = 2023) -> list:
    """(train, val) index pairs of k-fold cross-validation: one seeded shuffle cut into `folds` near-equal
    parts, each part the validation set once; every sample is validated exactly once."""
    if not 2 <= folds <= n:
        raise ValueError(f"folds={folds} must lie between 2 and the number of samples ({n})")
    parts = torch.randperm(n, generator=make_generator(seed)).tensor_split(folds)
    return [(torch.cat(parts[:k] + parts[k + 1:]).sort().values, part.sort().values) for k, part in enumerate(parts)]


def group_holdout_split(groups: torch.Tensor, fraction: float = 0.2, seed: int = 2023) -> tuple:
    """Like `holdout_split`, but whole groups (e.g. the 30 images of one GTSRB track) move together."""
    unique = torch.unique(groups)
    _, held_groups = holdout_split(len(unique), fraction, seed)
    held = torch.isin(groups, unique[held_groups])
    return torch.nonzero(~held).flatten(), torch.nonzero(held).flatten()


def stratified_group_split(groups: torch.Tensor, labels: torch.Tensor, fraction: float = 0.2,
                           seed: int = 2023) -> tuple:
    """`group_holdout_split` done class by class: each class holds out round(fraction x its groups) of its own
    groups, at least one when it has two or more, so every such class is validated (a random split by group
    can leave a rare class without any validation group). Each group must carry a single label."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction} must lie strictly between 0 and 1")
    groups = groups.cpu()
    pairs = torch.unique(torch.stack([groups, labels.cpu()], 1), dim=0)  # (group, label), sorted by group
    if len(pairs) != len(torch.unique(groups)):
        raise ValueError("a group holds images of several classes: split by group without stratifying")
    unique, group_labels = pairs[:, 0], pairs[:, 1]
    held_groups = []
    for k, c in enumerate(torch.unique(group_labels).tolist()):
        members = unique[group_labels == c]
        n_val = max(1, round(len(members) * fraction)) if len(members) > 1 else 0
        order = torch.randperm(len(members), generator=make_generator(seed + k))
        held_groups.append(members[order[len(members) - n_val:]])
    held = torch.isin(groups, torch.cat(held_groups))
    return torch.nonzero(~held).flatten(), torch.nonzero(held).flatten()


# ----------------------------------------------------------------------------------------------
# Synthetic stand-ins for the smoke profile (same shapes and dtypes as the real sets)


def synthetic_images(n: int, num_classes: int, size: int = 32, channels: int = 3, seed: int = 2023,
                     group_size: int | None = None) -> ImageSet:
    """Images whose class is a colour plus a smooth pattern, under noise: learnable within a few steps,
    and the colour survives flips and crops. The class templates depend only on the number of classes
    and the image shape, so sets drawn with different seeds (train, test) share their classes. With `group_size`,
    runs of that many consecutive images form groups of one class each (like GTSRB's tracks); without, each image
    draws its own class and groups of 10 are mere ids."""
    classes = make_generator(num_classes * 1_000 + channels)
    colours = torch.rand(num_classes, channels, 1, 1, generator=classes)
    patterns = torch.rand(num_classes, channels, 4, 4, generator=classes)
    generator = make_generator(seed)
    patterns = torch.nn.functional.interpolate(patterns, size=(size, size), mode="bilinear", align_corners=False)
    templates = 0.6 * colours + 0.4 * patterns
    labels = torch.randint(num_classes, (n,), generator=generator)
    if group_size:
        labels = labels[torch.arange(n) // group_size * group_size]
    noise = torch.rand(n, channels, size, size, generator=generator)
    images = (0.7 * templates[labels] + 0.3 * noise).mul(255).round().to(torch.uint8)
    groups = torch.arange(n) // (group_size or 10)
    return ImageSet(images, labels, [f"class{c}" for c in range(num_classes)], groups, {"synthetic": True})


def synthetic_lungs(n: int = 8, size: int = 64, seed: int = 2023) -> SegmentationSet:
    """Two bright ellipses ('lungs') on a noisy background, with their masks."""
    generator = make_generator(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    masks = []
    for _ in range(n):
        cy, ry, rx = (0.1 * torch.randn(3, generator=generator)).tolist()
        left = ((xx + 0.45) / (0.3 + rx)) ** 2 + ((yy - cy) / (0.6 + ry)) ** 2 <= 1
        right = ((xx - 0.45) / (0.3 + rx)) ** 2 + ((yy - cy) / (0.6 + ry)) ** 2 <= 1
        masks.append(left | right)
    masks = torch.stack(masks).unsqueeze(1).to(torch.uint8)
    noise = torch.rand(n, 1, size, size, generator=generator)
    images = (80 + 120 * masks + 50 * noise).clamp(0, 255).to(torch.uint8)
    return SegmentationSet(images, masks, [f"synthetic{i}" for i in range(n)], {"synthetic": True})


def synthetic_text(n_chars: int = 20_000, seed: int = 2023) -> str:
    """Pseudo-English from a small word list: a corpus with real structure for the smoke profile."""
    generator = make_generator(seed)
    words = ("the king shall speak of love and death to thee my lord what light through yonder window "
             "breaks").split()
    picks = torch.randint(len(words), (n_chars // 4,), generator=generator).tolist()
    lines, line = [], []
    for i, pick in enumerate(picks):
        line.append(words[pick])
        if i % 9 == 8:
            lines.append(" ".join(line).capitalize() + ".")
            line = []
    return ("\n".join(lines) + "\n")[:n_chars]


# ----------------------------------------------------------------------------------------------
# Batches straight from tensors on the training device


class TensorLoader:
    """Mini-batches from a uint8 image tensor kept on the training device.

    The whole set moves to the device once; every epoch draws one permutation and the augmentation
    runs on whole batches there. All random numbers come from a private CPU generator, so the batch
    order and augmentations are identical on CPU and CUDA and can be saved in a checkpoint.
    """

    def __init__(self, data: ImageSet, batch_size: int, *, shuffle: bool = False, drop_last: bool = False,
                 augment=None, mean=None, std=None, device="cpu", seed: int = 2023, sample_weights=None):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last, self.augment = batch_size, shuffle, drop_last, augment
        # Over-sampling: each epoch draws len(data) indices with replacement, in proportion to these weights.
        self.sample_weights = None if sample_weights is None else torch.as_tensor(sample_weights, dtype=torch.double)
        if self.sample_weights is not None and len(self.sample_weights) != len(self.labels):
            raise ValueError(f"{len(self.sample_weights)} sample weights for {len(self.labels)} samples")
        self.normalise = mean is not None or std is not None or self.images.dtype == torch.uint8
        channels = self.images.shape[1]
        self.mean = torch.as_tensor(mean if mean is not None else [0.0] * channels).view(1, -1, 1, 1).to(self.device)
        self.std = torch.as_tensor(std if std is not None else [1.0] * channels).view(1, -1, 1, 1).to(self.device)
        self.generator = make_generator(seed)
        self.meta = describe(data)
        self.classes = list(data.classes) if getattr(data, "classes", None) else None

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self, n: int) -> torch.Tensor:
        if self.sample_weights is not None:
            return torch.multinomial(self.sample_weights, n, replacement=True, generator=self.generator)
        return torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)

    def __iter__(self):
        n = len(self.labels)
        order = self._order(n).to(self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start:start + self.batch_size]
            images, labels = self.images[index], self.labels[index]
            if images.dtype == torch.uint8:  # images; float inputs (cached features) pass through as they are
                images = images.float() / 255
            if self.augment is not None:  # on the [0, 1] scale, so fills and jitter mean the same everywhere
                images, labels = self.augment(images, labels, self.generator)
            yield ((images - self.mean) / self.std if self.normalise else images), labels

    def sample_inputs(self, n: int, seed: int = 2023) -> torch.Tensor:
        """A seeded random sample of `n` samples as the model sees them, without augmentation and without drawing
        from the loader's own stream (e.g. to fit a whitening layer: data sets stored class by class make the first
        n samples one class)."""
        index = torch.randperm(len(self.labels), generator=make_generator(seed))[:n].to(self.device)
        images = self.images[index]
        images = images.float() / 255 if images.dtype == torch.uint8 else images
        return (images - self.mean) / self.std if self.normalise else images

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def loader_triple(train, val, test, batch_size: int, eval_batch_size: int, *, device="cpu", seed: int = 2023,
                  augment=None, evaluate=None, mean=None, std=None, drop_last: bool = True,
                  sample_weights=None) -> tuple:
    """(train, val, test) loaders: the training one shuffled and augmented on its own seeded stream,
    the others in order with the evaluation transform; val or test may be None (no loader)."""
    common = dict(mean=mean, std=std, device=device)
    loaders = [TensorLoader(train, batch_size, shuffle=True, drop_last=drop_last, augment=augment, seed=seed,
                            sample_weights=sample_weights, **common)]
    loaders += [None if s is None else TensorLoader(s, eval_batch_size, augment=evaluate, **common)
                for s in (val, test)]
    return tuple(loaders)


def describe(data) -> dict:
    """What a results record says about the data a model trained on: how many samples, the input side in
    pixels (for cached activations: of the images they came from) and whether it is a synthetic stand-in."""
    meta = getattr(data, "meta", {}) or {}
    images = data.images
    side = meta.get("input_size") or (images.shape[-1] if images.dtype == torch.uint8 and images.ndim == 4 else None)
    return {"samples": len(data.labels), "input_size": None if side is None else int(side),
            "synthetic": bool(meta.get("synthetic", False))}


def channel_stats(images: torch.Tensor) -> tuple:
    """Per-channel mean and std of uint8 images on the [0, 1] scale (compute on the training split only)."""
    x = images.float().div_(255)
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()
