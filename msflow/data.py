"""MedMNIST data: a registry of the 2D sets, checked loading, and synthetic files for tests.

The registry is read from ``medmnist.INFO`` (channels, classes, label names, split sizes, URL and MD5
per size). Files live in a data root chosen, in this order, by the ``root`` argument, the
``MSFLOW_DATA`` environment variable, or medmnist's own default (``~/.medmnist``). Every file is
checked against medmnist's MD5 before use. The one exception is a root written by
:func:`write_synthetic`: it carries a ``synthetic.json`` manifest with the MD5 of each file it made,
files are checked against that, and every split loaded from it is marked ``synthetic`` so that no
result computed on it can pass for a real one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ENV_ROOT = "MSFLOW_DATA"
"""Environment variable naming the data root."""

SPLITS = ("train", "val", "test")
SIZES = (28, 64, 128, 224)
STUDY_DATASETS = ("pneumoniamnist", "bloodmnist", "dermamnist", "retinamnist")
"""The four datasets of the paper."""

# The reference flips Blood, Derma and Retina at random and leaves the chest X-rays alone.
_FLIP_BY_DEFAULT = {"bloodmnist", "dermamnist", "retinamnist"}
_MANIFEST = "synthetic.json"


class DataError(RuntimeError):
    """Base class of the data errors, all of which say what to do."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A MedMNIST file is missing and could not be downloaded."""


class DataIntegrityError(DataError):
    """A file exists but its checksum or content is not what MedMNIST published."""


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata of one MedMNIST 2D classification set.

    Attributes:
        flag: medmnist's name, e.g. ``"bloodmnist"``.
        title: display name, e.g. ``"BloodMNIST"``.
        channels: 1 (grayscale) or 3 (RGB).
        label_names: class names, index = label.
        task: medmnist task string (``"binary-class"``, ``"multi-class"``, ``"ordinal-regression"``).
        n_samples: published split sizes.
        md5: MD5 per file size.
        urls: download URL per file size.
        license: data license.
        flips: whether the reference augments with random flips.
    """

    flag: str
    title: str
    channels: int
    label_names: tuple[str, ...]
    task: str
    n_samples: dict[str, int]
    md5: dict[int, str]
    urls: dict[int, str]
    license: str
    flips: bool

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def short_names(self) -> tuple[str, ...]:
        """The class names shortened for figures, where :attr:`label_names` keeps the full names for tables.

        Each is the name's part before any parenthesis and, past 22 characters, the whole words that fit followed by
        an ellipsis (``"immature granulocytes(myelocytes, ...)"`` becomes ``"immature granulocytes"``).
        """
        out = []
        for name in self.label_names:
            name = name.split("(")[0].strip() or name
            if len(name) > 22:
                words = name.split()
                kept = next(" ".join(words[:n]) for n in range(len(words), 0, -1) if len(" ".join(words[:n])) <= 21 or n == 1)
                name = kept[:21] + "…"
            out.append(name)
        return tuple(out)

    def filename(self, size: int = 28) -> str:
        """The file name medmnist uses: ``flag.npz`` at 28 px, ``flag_{size}.npz`` otherwise."""
        _check_size(size)
        return f"{self.flag}.npz" if size == 28 else f"{self.flag}_{size}.npz"


@dataclass(frozen=True)
class Split:
    """One split in memory.

    Attributes:
        images: ``(N, C, H, W)`` uint8.
        labels: ``(N,)`` int64.
        info: the dataset's metadata.
        name: ``"train"``, ``"val"`` or ``"test"``.
        size: the file's image size.
        path: the file it came from.
        md5: the file's verified MD5.
        synthetic: True when the file was made by :func:`write_synthetic`.
    """

    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo
    name: str
    size: int
    path: str
    md5: str
    synthetic: bool

    def __len__(self) -> int:
        return self.labels.shape[0]


def available_datasets() -> tuple[str, ...]:
    """Every 2D classification flag medmnist knows (single-label tasks only)."""
    info = _medmnist_info()
    return tuple(
        k for k, v in info.items() if not k.endswith("3d") and v["task"] != "multi-label, binary-class"
    )


def get_info(name: str) -> DatasetInfo:
    """Registry lookup. Accepts ``"bloodmnist"``, ``"BloodMNIST"`` or ``"blood"``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    known = available_datasets()
    key = name.strip().lower()
    flag = key if key in known else f"{key}mnist"
    if flag not in known:
        raise ValueError(
            f"unknown dataset {name!r}; msflow supports the MedMNIST 2D classification sets: "
            f"{', '.join(known)} (the study uses {', '.join(STUDY_DATASETS)})"
        )
    raw = _medmnist_info()[flag]
    labels = tuple(raw["label"][str(i)] for i in range(len(raw["label"])))
    md5 = {s: raw["MD5" if s == 28 else f"MD5_{s}"] for s in SIZES if ("MD5" if s == 28 else f"MD5_{s}") in raw}
    urls = {s: raw["url" if s == 28 else f"url_{s}"] for s in SIZES if ("url" if s == 28 else f"url_{s}") in raw}
    return DatasetInfo(
        flag=flag,
        title=raw["python_class"],
        channels=int(raw["n_channels"]),
        label_names=labels,
        task=raw["task"],
        n_samples=dict(raw["n_samples"]),
        md5=md5,
        urls=urls,
        license=raw["license"],
        flips=flag in _FLIP_BY_DEFAULT,
    )


def default_root() -> Path:
    """The data root: ``$MSFLOW_DATA`` if set, else medmnist's default (``~/.medmnist``)."""
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".medmnist"


def file_md5(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """MD5 of a file, read in chunks; remembered for the process while the file's size and times stay the same."""
    st = os.stat(path)
    return _md5_cached(os.fspath(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, chunk)


@functools.lru_cache(maxsize=64)
def _md5_cached(path: str, size: int, mtime_ns: int, ctime_ns: int, chunk: int) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def locate(
    name: str, size: int = 28, root: str | os.PathLike | None = None, download: bool = False
) -> tuple[Path, str, bool]:
    """Find (and optionally download) a dataset file and verify it.

    Returns:
        ``(path, md5, synthetic)``.

    Raises:
        DataNotFoundError: the file is missing and ``download`` is off or failed.
        DataIntegrityError: the file's MD5 is not the published one.
    """
    info = get_info(name)
    _check_size(size)
    root = Path(root).expanduser() if root is not None else default_root()
    path = root / info.filename(size)
    manifest = _read_manifest(root)
    if not path.exists():
        if download:
            _download(info, size, path)
        else:
            raise DataNotFoundError(_missing_message(info, size, path, reason="it is not there"))
    expected = manifest.get(path.name) or info.md5.get(size)
    actual = file_md5(path)
    if actual != expected:
        raise DataIntegrityError(
            f"{path} has MD5 {actual}, but MedMNIST publishes {expected} for {path.name}: the file is "
            f"corrupt or of another version. Delete it and download it again ({info.urls.get(size)}), "
            f"or run with download enabled."
        )
    return path, actual, path.name in manifest


def load_split(
    name: str,
    split: str,
    size: int = 28,
    root: str | os.PathLike | None = None,
    download: bool = False,
) -> Split:
    """Load one published split into memory as ``(N, C, H, W)`` uint8 images and int64 labels."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    info = get_info(name)
    path, md5, synthetic = locate(info.flag, size, root, download)
    try:
        with np.load(path) as npz:
            images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
    except (KeyError, ValueError, OSError) as err:
        raise DataIntegrityError(f"{path} is not a readable MedMNIST file ({err}); delete it and download it again") from err
    expected_shape = (size, size) if info.channels == 1 else (size, size, 3)
    if images.dtype != np.uint8 or images.shape[1:] != expected_shape or labels.shape != (images.shape[0], 1):
        raise DataIntegrityError(
            f"{path} [{split}] holds images {images.dtype}{images.shape} and labels {labels.shape}; "
            f"MedMNIST {info.title} at {size} px has uint8 (N, {', '.join(map(str, expected_shape))}) and (N, 1)"
        )
    if not synthetic and images.shape[0] != info.n_samples[split]:
        raise DataIntegrityError(f"{path} [{split}] has {images.shape[0]} images, MedMNIST publishes {info.n_samples[split]}")
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.unsqueeze(1) if info.channels == 1 else x.permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels[:, 0].astype(np.int64))
    return Split(images=x, labels=y, info=info, name=split, size=size, path=str(path), md5=md5, synthetic=synthetic)


def shared_images(a: Split, b: Split) -> int:
    """How many images of split ``a`` are byte-identical to an image of split ``b`` (for example test images that are
    also training images: a leak between the splits)."""
    seen = {bytes(memoryview(img.numpy()).cast("B")) for img in b.images}
    return sum(bytes(memoryview(img.numpy()).cast("B")) in seen for img in a.images)


def to_model_input(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` to float in [-1, 1] at ``resolution`` (bilinear, as the reference)."""
    x = images.float().div_(127.5).sub_(1.0)
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=x.shape[-1] > resolution)
    return x


def random_flips(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image horizontally and, independently, vertically with probability 1/2."""
    flip = torch.rand(x.shape[0], 2, generator=generator, device=x.device) < 0.5
    x = torch.where(flip[:, 0, None, None, None], x.flip(-1), x)
    return torch.where(flip[:, 1, None, None, None], x.flip(-2), x)


def uses_flips(info: DatasetInfo, augment: bool | None) -> bool:
    """Whether training flips this dataset: the config's choice, or the reference's if ``None``."""
    return info.flips if augment is None else augment


def write_synthetic(
    root: str | os.PathLike,
    name: str,
    size: int = 28,
    n_samples: dict[str, int] | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic file in the exact MedMNIST format, for tests and smoke runs.

    Images are learnable on purpose: class ``k`` of ``K`` has a bright disc whose radius and
    brightness grow with ``k``, on a noisy background, so a tiny model learns them in seconds.
    The root gets a ``synthetic.json`` manifest so that loading verifies these files and marks them.

    Args:
        root: folder to write into (created).
        name: dataset flag or alias.
        size: image side (28, 64, 128 or 224).
        n_samples: split sizes; default 256 / 64 / 64.
        seed: seed of the content.
        overwrite: replace a synthetic file of the same name that this function wrote.

    Returns:
        The path of the written ``.npz``.

    Raises:
        FileExistsError: the file exists and is not a synthetic one, whatever ``overwrite`` says (a real MedMNIST file
            is never replaced), or is one and ``overwrite`` is off.
    """
    info = get_info(name)
    _check_size(size)
    n_samples = n_samples or {"train": 256, "val": 64, "test": 64}
    root = Path(root)
    target = root / info.filename(size)
    if target.exists():
        synthetic = _read_manifest(root).get(target.name) == file_md5(target)
        if not synthetic:
            raise FileExistsError(f"{target} exists and is not a synthetic file (a real MedMNIST file, or another file): "
                                  "a synthetic file never replaces it; write into another folder")
        if not overwrite:
            raise FileExistsError(f"{target} exists (a synthetic file); write into another folder, or delete it first")
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    k_total = info.num_classes
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        n = n_samples[split]
        labels = np.arange(n) % k_total  # every class present in every split
        rng.shuffle(labels)
        level = labels / max(k_total - 1, 1)
        radius = 0.12 + 0.25 * level
        cx, cy = rng.uniform(-0.1, 0.1, (2, n))
        dist = np.sqrt((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2)
        disc = (dist < radius[:, None, None]).astype(np.float64)
        img = 40 + disc * (90 + 120 * level[:, None, None]) + rng.normal(0, 12, (n, size, size))
        img = np.clip(img, 0, 255).astype(np.uint8)
        if info.channels == 3:
            tint = np.stack([np.ones(n), 0.6 + 0.4 * level, 1.0 - 0.3 * level], axis=1)
            img = np.clip(img[..., None] * tint[:, None, None, :], 0, 255).astype(np.uint8)
        arrays[f"{split}_images"] = img
        arrays[f"{split}_labels"] = labels.astype(np.uint8)[:, None]
    path = root / info.filename(size)
    _atomic_savez(path, arrays)
    manifest = _read_manifest(root)
    manifest[path.name] = file_md5(path)
    _atomic_write_text(root / _MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return path


# -- internals -------------------------------------------------------------------------------------


def _medmnist_info() -> dict:
    from medmnist.info import INFO  # medmnist's metadata registry (the package also holds its datasets)

    return INFO


def _check_size(size: int) -> None:
    if size not in SIZES:
        raise ValueError(f"MedMNIST sizes are {SIZES}, not {size}")


def _read_manifest(root: Path) -> dict[str, str]:
    p = root / _MANIFEST
    return json.loads(p.read_text()) if p.exists() else {}


def _missing_message(info: DatasetInfo, size: int, path: Path, reason: str) -> str:
    return (
        f"{info.title} at {size} px is missing: {path.name} is needed in {path.parent} and {reason}. "
        f"Download {info.urls.get(size)} (MD5 {info.md5.get(size)}) into that folder, point "
        f"${ENV_ROOT} or --data-root at a folder that has it, or allow downloading (--download)."
    )


def _download(info: DatasetInfo, size: int, path: Path) -> None:
    """Fetch the file from the URL in medmnist's registry, verify its MD5, then move it in place."""
    from tqdm.auto import tqdm

    url = info.urls[size]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {path.name}") as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        got = file_md5(tmp)
        if got != info.md5[size]:
            raise DataIntegrityError(f"downloaded {path.name} has MD5 {got}, expected {info.md5[size]}; try again later")
        os.replace(tmp, path)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise DataNotFoundError(_missing_message(info, size, path, reason=f"downloading failed ({err})")) from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)

