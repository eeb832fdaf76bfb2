import gzip

import numpy as np
import pytest
import torch

from genlab import data


def test_idx_round_trip_gzip_and_raw(tmp_path):
    array = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    for name in ("a.gz", "a"):
        data.write_idx(tmp_path / name, array)
        np.testing.assert_array_equal(data.read_idx(tmp_path / name, expect_ndim=3), array)


def test_idx_truncated_names_the_file(tmp_path):
    data.write_idx(tmp_path / "t", np.zeros((4, 28, 28), np.uint8))
    raw = (tmp_path / "t").read_bytes()
    (tmp_path / "t").write_bytes(raw[:-10])
    with pytest.raises(data.DataError, match=r"t: expected 3136 data bytes.*truncated"):
        data.read_idx(tmp_path / "t")


def test_idx_wrong_magic_and_dims(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 20)
    with pytest.raises(data.DataError, match="not an IDX file"):
        data.read_idx(tmp_path / "bad")
    data.write_idx(tmp_path / "labels", np.zeros(5, np.uint8))
    with pytest.raises(data.DataError, match="expected 3 dimensions, found 1"):
        data.read_idx(tmp_path / "labels", expect_ndim=3)
    (tmp_path / "short").write_bytes(b"\x00\x00")
    with pytest.raises(data.DataError, match="truncated"):
        data.read_idx(tmp_path / "short")


def test_corrupt_gzip_is_a_data_error(tmp_path):
    (tmp_path / "x.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")[:-6])
    with pytest.raises(data.DataError, match="x.gz"):
        data.read_idx(tmp_path / "x.gz")


def test_synthetic_is_deterministic_and_balanced():
    a, b = data.load("synthetic"), data.load("synthetic")
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.train_x.dtype == torch.uint8 and a.train_x.shape[1:] == (28, 28)
    assert len(a.train_x) + len(a.val_x) == 2000 and len(a.test_x) == 500
    assert torch.bincount(a.test_y, minlength=10).min() == 50
    # classes are visually distinct: class means differ by far more than the pixel noise
    means = torch.stack([a.train_x[a.train_y == c].float().mean(0) for c in range(10)])
    dist = torch.cdist(means.flatten(1), means.flatten(1))
    assert dist[~torch.eye(10, dtype=bool)].min() > 300


def test_limit_and_validation_slice_are_disjoint():
    full, small = data.load("synthetic"), data.load("synthetic", limit=100)
    assert len(small.train_x) == 100 and torch.equal(small.val_x, full.val_x)
    with pytest.raises(data.DataError, match="limit"):
        data.load("synthetic", limit=-1)
    with pytest.raises(data.DataError, match="unknown data set"):
        data.load("cifar")


def test_batches_cover_every_image_once():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1).expand(10, 28, 28).contiguous()
    seen = torch.cat([b[:, 0, 0, 0] for b in data.batches(images, 3, torch.Generator().manual_seed(0))])
    assert sorted((seen * 255).round().long().tolist()) == list(range(10))
    first = next(data.batches(images, 4))
    assert first.shape == (4, 1, 28, 28) and first.dtype == torch.float32 and first.max() <= 1


def test_lookup_order_and_missing_message(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "DEBIAN_DIRS", {"fashion-mnist": str(tmp_path / "none"), "mnist": "/none"})
    monkeypatch.setattr(data, "PROJECT_ROOT", tmp_path / "project")
    with pytest.raises(data.DataError, match="genlab data download fashion-mnist.*dataset-fashion-mnist"):
        data.find_dataset_dir("fashion-mnist")
    target = tmp_path / "fashion-mnist"
    target.mkdir()
    for f, _ in data.FILES["fashion-mnist"].values():
        (target / f).write_bytes(b"")
    assert data.find_dataset_dir("fashion-mnist") == target


def test_download_offline_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MIRRORS", {"mnist": ["http://127.0.0.1:9/"]})
    with pytest.raises(data.DataError) as e:
        data.download("mnist", tmp_path / "d", timeout=2)
    assert "\n" not in str(e.value) and "dataset-mnist" in str(e.value)
    assert not list((tmp_path / "d").glob("*.gz"))


def test_real_fashion_mnist_shapes(fashion_mnist_dir):
    splits = data.load("fashion-mnist", limit=1000)
    assert splits.train_x.shape == (1000, 28, 28) and splits.val_x.shape == (5000, 28, 28)
    assert splits.test_x.shape == (10000, 28, 28)
    assert sorted(splits.test_y.unique().tolist()) == list(range(10))
