"""Data sets as in-memory uint8 tensors: IDX reader, location lookup, download, synthetic set, batching.

The whole split is one ``uint8`` tensor of shape (N, 28, 28); batches are index slices of a permutation,
converted to float in [0, 1] one batch at a time: no per-item Python call and no collation, so batches come
much faster than from a DataLoader over a per-item ``Dataset`` (``data_pipeline_speedup``, docs/results.md).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genlab.configs import DATASETS, PROJECT_ROOT  # the CLI lists them without importing torch

VAL_SIZE = 5000  # held-out slice of the train split for the real data sets
IMAGE_SHAPE = (28, 28)

# The original files: (file name, sha256 of the .gz).
FILES = {
    "fashion-mnist": {
        "train_images": ("train-images-idx3-ubyte.gz", "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
        "train_labels": ("train-labels-idx1-ubyte.gz", "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
        "test_images": ("t10k-images-idx3-ubyte.gz", "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
    },
    "mnist": {
        "train_images": ("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train_labels": ("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "test_images": ("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    },
}
MIRRORS = {
    "fashion-mnist": ["https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"],
}
DEBIAN_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}
DEBIAN_PACKAGES = {"fashion-mnist": "dataset-fashion-mnist", "mnist": "dataset-mnist"}

CLASS_NAMES = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
    "mnist": [str(i) for i in range(10)],
    "synthetic": ["square", "disc", "h-bar", "v-bar", "cross", "diag", "anti-diag", "ring", "triangle", "checker"],
}


class DataError(Exception):
    """A data set is missing, corrupt or of the wrong shape (message is one line, for the user)."""


@dataclass
class Splits:
    """One data set in memory: uint8 images (N, 28, 28) and int64 labels (N,) per split."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str  # where the files came from ("memory" for synthetic)

    def digest(self, split: str) -> str:
        """Short content hash of one split (images and labels), for MLflow dataset inputs."""
        x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
        h = hashlib.sha256(x.numpy().tobytes())
        h.update(y.numpy().tobytes())
        return h.hexdigest()[:16]


# ---------------------------------------------------------------- IDX files

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
               0x0E: np.dtype(">f8")}


def read_idx(path: str | Path, expect_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzip or raw). Raises DataError naming the file if it is truncated or malformed."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes)")
    zero, dtype_code, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path}: not an IDX file (magic number {raw[:4].hex()})")
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(f"{path}: expected {expect_ndim} dimensions, found {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: expected {expected} data bytes for shape {dims}, found {len(raw) - header}"
                        f" ({'truncated' if len(raw) - header < expected else 'trailing data'})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as a (gzip if the name ends in .gz) IDX file. Used by tests and tools."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


# ---------------------------------------------------------------- locating and downloading

def candidate_dirs(name: str) -> list[Path]:
    """Where ``name`` is looked for, in order: $GENLAB_DATA_DIR(/name), ./data/name, the Debian package dir."""
    dirs = []
    env = os.environ.get("GENLAB_DATA_DIR")
    if env:
        dirs += [Path(env) / name, Path(env)]
    dirs += [Path.cwd() / "data" / name, PROJECT_ROOT / "data" / name, Path(DEBIAN_DIRS[name])]
    return list(dict.fromkeys(dirs))


def _find_file(directory: Path, gz_name: str) -> Path | None:
    for candidate in (directory / gz_name, directory / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def find_dataset_dir(name: str) -> Path:
    """The first candidate directory holding all four files, or DataError saying how to get them."""
    for directory in candidate_dirs(name):
        if all(_find_file(directory, f) for f, _ in FILES[name].values()):
            return directory
    raise DataError(
        f"{name} not found (looked in {', '.join(str(d) for d in candidate_dirs(name))}); "
        f"run 'genlab data download {name}', install the Debian package {DEBIAN_PACKAGES[name]}, "
        f"or set GENLAB_DATA_DIR to a folder with the IDX files")


def download(name: str, dest: Path | None = None, timeout: float = 30.0) -> Path:
    """Fetch the four original files into ``dest`` (default ./data/name), checking each sha256."""
    if name not in FILES:
        raise DataError(f"unknown data set '{name}' (downloadable: {', '.join(FILES)})")
    dest = Path(dest) if dest else Path.cwd() / "data" / name
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {dest}: {e.strerror}") from None
    for file_name, sha in FILES[name].values():
        target = dest / file_name
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha:
            continue
        errors = []
        for mirror in MIRRORS[name]:
            try:
                with urllib.request.urlopen(mirror + file_name, timeout=timeout) as response:
                    payload = response.read()
            except (urllib.error.URLError, OSError) as e:
                errors.append(f"{mirror}: {getattr(e, 'reason', e)}")
                continue
            got = hashlib.sha256(payload).hexdigest()
            if got != sha:
                errors.append(f"{mirror}: sha256 mismatch ({got[:12]}… != {sha[:12]}…)")
                continue
            tmp = target.with_suffix(".part")
            tmp.write_bytes(payload)
            tmp.replace(target)  # atomic: never a half-written data file
            break
        else:
            raise DataError(f"could not download {file_name} ({'; '.join(errors)}); offline, install the Debian "
                            f"package {DEBIAN_PACKAGES[name]} or set GENLAB_DATA_DIR to a folder with the IDX files")
    return dest


# ---------------------------------------------------------------- loading

def make_synthetic(n_train: int = 2000, n_test: int = 500, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Ten visually distinct 28x28 shape classes with random position jitter, scale and noise (deterministic)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32)

    def shape(label: int, cy: float, cx: float, r: float) -> np.ndarray:
        dy, dx = yy - cy, xx - cx
        masks = [
            (np.abs(dy) < r) & (np.abs(dx) < r),                      # square
            dy**2 + dx**2 < r**2,                                      # disc
            (np.abs(dy) < r / 3) & (np.abs(dx) < r * 1.2),             # horizontal bar
            (np.abs(dx) < r / 3) & (np.abs(dy) < r * 1.2),             # vertical bar
            ((np.abs(dy) < r / 4) | (np.abs(dx) < r / 4)) & (np.abs(dy) < r) & (np.abs(dx) < r),  # cross
            (np.abs(dy - dx) < r / 3) & (np.abs(dx) < r),              # diagonal
            (np.abs(dy + dx) < r / 3) & (np.abs(dx) < r),              # anti-diagonal
            np.abs(np.sqrt(dy**2 + dx**2) - r * 0.8) < r / 4,          # ring
            (dy < r) & (dy > -r) & (np.abs(dx) < (dy + r) / 2),        # triangle
            ((np.floor(yy / 4) + np.floor(xx / 4)) % 2 == 0) & (np.abs(dy) < r) & (np.abs(dx) < r),  # checker
        ]
        return masks[label].astype(np.float32)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = np.empty((n, 28, 28), np.uint8)
        for i, label in enumerate(labels):
            cy, cx = 14 + rng.uniform(-2, 2, size=2)
            img = shape(int(label), cy, cx, rng.uniform(7, 10)) * rng.uniform(0.7, 1.0)
            img += rng.normal(0, 0.03, size=img.shape)
            images[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
        return images, labels.astype(np.int64)

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    return train_x, train_y, test_x, test_y


def load(name: str, limit: int = 0, val_size: int | None = None) -> Splits:
    """Load a data set into memory. ``limit`` > 0 keeps only the first N training images (after validation)."""
    if name not in DATASETS:
        raise DataError(f"unknown data set '{name}' (choose from {', '.join(DATASETS)})")
    if name == "synthetic":
        train_x, train_y, test_x, test_y = make_synthetic()
        source = "memory"
        val_size = 250 if val_size is None else val_size
    else:
        directory = find_dataset_dir(name)
        files = {key: _find_file(directory, f) for key, (f, _) in FILES[name].items()}
        train_x, test_x = read_idx(files["train_images"], 3), read_idx(files["test_images"], 3)
        train_y, test_y = read_idx(files["train_labels"], 1), read_idx(files["test_labels"], 1)
        for x, y, split in ((train_x, train_y, "train"), (test_x, test_y, "test")):
            if x.shape[1:] != IMAGE_SHAPE or len(x) != len(y) or x.dtype != np.uint8:
                raise DataError(f"{directory}: {split} images {x.shape} {x.dtype} do not match {len(y)} labels "
                                f"of 28x28 uint8")
        source = str(directory)
        val_size = VAL_SIZE if val_size is None else val_size
    if val_size >= len(train_x):
        raise DataError(f"{name}: validation slice {val_size} >= {len(train_x)} training images")
    # The validation slice is the *last* val_size training images: fixed, and disjoint from any limit.
    val_x, val_y = train_x[-val_size:], train_y[-val_size:]
    train_x, train_y = train_x[:-val_size], train_y[:-val_size]
    if limit < 0:
        raise DataError(f"limit must be >= 0 (0 = all), got {limit}")
    if limit:
        train_x, train_y = train_x[:limit], train_y[:limit]

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    return Splits(name, t(train_x), t(train_y).long(), t(val_x), t(val_y).long(), t(test_x), t(test_y).long(),
                  source)


def to_float(batch: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (B, 28, 28) -> float32 (B, 1, 28, 28) in [0, 1] on ``device``."""
    if torch.device(device).type == "cpu":
        # numpy's single-threaded divide: torch's multi-threaded kernels stall on a busy CPU (see `genlab bench`)
        return torch.from_numpy(np.divide(batch.numpy(), np.float32(255), dtype=np.float32)).unsqueeze(1)
    return batch.to(device, non_blocking=True).unsqueeze(1).div(255.0)  # copy uint8 (4x less), convert there


def batches(images: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
            device: str | torch.device = "cpu", labels: torch.Tensor | None = None,
            ) -> Iterator[torch.Tensor] | Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield float batches by slicing a permutation (shuffled if ``generator`` is given, in order otherwise).

    The last, smaller batch is kept so every image is seen once per epoch.
    """
    n = len(images)
    order = torch.randperm(n, generator=generator).numpy() if generator is not None else None
    images_np = images.numpy()
    labels_np = labels.numpy() if labels is not None else None
    for start in range(0, n, batch_size):
        rows = order[start:start + batch_size] if order is not None else slice(start, start + batch_size)
        # row gathers in numpy: one single-threaded copy of the uint8 rows, the batch stays uint8 until to_float
        x = to_float(torch.from_numpy(images_np[rows]), device)
        yield (x, torch.from_numpy(labels_np[rows]).to(device)) if labels_np is not None else x
