import urllib.error

import numpy as np
import pytest
import torch

from conftest import require_real
from msflow import data


def test_registry_of_the_study_datasets():
    p, b, d, r = (data.get_info(n) for n in data.STUDY_DATASETS)
    assert (p.channels, p.num_classes, p.task) == (1, 2, "binary-class")
    assert (b.channels, b.num_classes) == (3, 8)
    assert (d.channels, d.num_classes) == (3, 7)
    assert (r.channels, r.num_classes, r.task) == (3, 5, "ordinal-regression")
    assert p.n_samples == {"train": 4708, "val": 524, "test": 624}
    assert b.n_samples == {"train": 11959, "val": 1712, "test": 3421}
    assert d.n_samples == {"train": 7007, "val": 1003, "test": 2005}
    assert r.n_samples == {"train": 1080, "val": 120, "test": 400}
    assert p.md5[28] == "28209eda62fecd6e6a2d98b1501bb15f"
    assert d.md5[28] == "0744692d530f8e62ec473284d019b0c7"
    assert set(b.md5) == {28, 64, 128, 224}
    assert d.license == "CC BY-NC 4.0" and p.license == "CC BY 4.0"
    assert p.label_names == ("normal", "pneumonia")
    assert (p.flips, b.flips, d.flips, r.flips) == (False, True, True, True)
    assert b.filename(28) == "bloodmnist.npz" and b.filename(224) == "bloodmnist_224.npz"
    # figures use short names: the part before a parenthesis, long names cut at a word with an ellipsis
    assert b.short_names[3] == "immature granulocytes" and b.short_names[:3] == b.label_names[:3]
    assert d.short_names[0] == "actinic keratoses and…" and d.short_names[2] == "benign keratosis-like…"
    assert p.short_names == p.label_names and all(len(n) <= 22 for i in (b, d, r) for n in i.short_names)


def test_aliases_and_unknown_names():
    assert data.get_info("BloodMNIST").flag == "bloodmnist"
    assert data.get_info("retina").flag == "retinamnist"
    with pytest.raises(ValueError, match="unknown dataset 'lungmnist'.*pneumoniamnist"):
        data.get_info("lungmnist")
    with pytest.raises(ValueError, match="sizes are"):
        data.get_info("blood").filename(32)


@pytest.mark.parametrize("name, size", [("pneumoniamnist", 28), ("dermamnist", 28), ("dermamnist", 64), ("retinamnist", 224)])
def test_synthetic_files_have_the_exact_format(tmp_path, name, size):
    info = data.get_info(name)
    path = data.write_synthetic(tmp_path, name, size, {"train": 10, "val": 7, "test": 9})
    assert path.name == info.filename(size)
    with np.load(path) as npz:
        assert sorted(npz.files) == sorted(f"{s}_{k}" for s in data.SPLITS for k in ("images", "labels"))
        img, lab = npz["val_images"], npz["val_labels"]
    assert img.dtype == np.uint8 and lab.dtype == np.uint8
    assert img.shape == ((7, size, size) if info.channels == 1 else (7, size, size, 3))
    assert lab.shape == (7, 1) and lab.max() < info.num_classes
    split = data.load_split(name, "test", size, tmp_path)
    assert split.synthetic and len(split) == 9
    assert split.images.shape == (9, info.channels, size, size) and split.images.dtype == torch.uint8
    assert split.labels.dtype == torch.int64


def test_loading_matches_the_file(synthetic_root):
    split = data.load_split("bloodmnist", "train", root=synthetic_root)
    with np.load(synthetic_root / "bloodmnist.npz") as npz:
        raw, lab = npz["train_images"], npz["train_labels"]
    assert torch.equal(split.images[5].permute(1, 2, 0), torch.from_numpy(raw[5]))
    assert split.labels.tolist() == lab[:, 0].tolist()


def test_missing_file_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_ROOT, raising=False)
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_split("dermamnist", "train", 28, tmp_path)
    msg = str(err.value)
    assert "dermamnist.npz" in msg and "0744692d530f8e62ec473284d019b0c7" in msg
    assert "zenodo.org" in msg and "MSFLOW_DATA" in msg and "--download" in msg


def test_download_failure_without_network(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(data.DataNotFoundError, match="downloading failed.*no network"):
        data.load_split("retinamnist", "train", 28, tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_md5_mismatch_is_caught(tmp_path):
    path = data.write_synthetic(tmp_path, "pneumoniamnist")
    raw = bytearray(path.read_bytes())
    raw[-30] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(data.DataIntegrityError, match="corrupt or of another version"):
        data.load_split("pneumoniamnist", "train", 28, tmp_path)


def test_unmarked_file_must_match_medmnist(tmp_path):
    # the same synthetic bytes, but without the manifest, are checked against MedMNIST's MD5
    path = data.write_synthetic(tmp_path, "pneumoniamnist")
    (tmp_path / "synthetic.json").unlink()
    with pytest.raises(data.DataIntegrityError, match="28209eda62fecd6e6a2d98b1501bb15f"):
        data.locate("pneumoniamnist", 28, tmp_path)
    assert path.exists()


def test_environment_variable_root(synthetic_root, monkeypatch):
    monkeypatch.setenv(data.ENV_ROOT, str(synthetic_root))
    assert data.default_root() == synthetic_root
    assert data.load_split("retinamnist", "val").synthetic


def test_model_input_range_size_and_flips():
    x = torch.tensor([[[[0, 255], [255, 0]]]], dtype=torch.uint8)
    assert data.to_model_input(x, 2).tolist() == [[[[-1.0, 1.0], [1.0, -1.0]]]]
    up = data.to_model_input(torch.randint(0, 256, (3, 3, 28, 28), dtype=torch.uint8), 32)
    assert up.shape == (3, 3, 32, 32) and up.min() >= -1 and up.max() <= 1
    imgs = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(400, 1, 1, 1)
    out = data.random_flips(imgs, torch.Generator().manual_seed(0))
    kinds = {(torch.equal(o, imgs[0].flip(-1)), torch.equal(o, imgs[0].flip(-2)), torch.equal(o, imgs[0]),
              torch.equal(o, imgs[0].flip(-1).flip(-2))) for o in out}
    assert len(kinds) == 4  # identity, horizontal, vertical and both all occur
    assert data.uses_flips(data.get_info("pneumoniamnist"), None) is False
    assert data.uses_flips(data.get_info("pneumoniamnist"), True) is True


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["pneumoniamnist", "bloodmnist", "retinamnist"])
def test_real_files_verify_and_load(name):
    root = require_real(name)
    info = data.get_info(name)
    path, md5, synthetic = data.locate(name, 28, root)
    assert md5 == info.md5[28] and not synthetic
    for split in data.SPLITS:
        s = data.load_split(name, split, 28, root)
        assert len(s) == info.n_samples[split]
        assert s.images.shape[1:] == (info.channels, 28, 28)
        assert set(s.labels.unique().tolist()) == set(range(info.num_classes))


def test_a_synthetic_file_never_replaces_another_file(tmp_path, capsys):
    real = tmp_path / "pneumoniamnist.npz"
    real.write_bytes(b"a real file, say")  # not in the synthetic manifest
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="is not a synthetic file .*never replaces it"):
            data.write_synthetic(tmp_path, "pneumoniamnist", overwrite=overwrite)
    assert real.read_bytes() == b"a real file, say"
    other = tmp_path / "other"
    first = data.write_synthetic(other, "pneumoniamnist", seed=1).read_bytes()
    with pytest.raises(FileExistsError, match="exists .a synthetic file.; write into another folder"):
        data.write_synthetic(other, "pneumoniamnist", seed=2)
    assert data.write_synthetic(other, "pneumoniamnist", seed=2, overwrite=True).read_bytes() != first
    from msflow import cli

    assert cli.main(["data", "--synthetic", str(tmp_path), "--dataset", "pneumoniamnist"]) == 2
    assert "never replaces it" in capsys.readouterr().err and real.read_bytes() == b"a real file, say"


def test_shared_images_counts_byte_identical_images_across_splits(synthetic_root):
    import dataclasses

    train = data.load_split("bloodmnist", "train", root=synthetic_root)
    test = data.load_split("bloodmnist", "test", root=synthetic_root)
    assert data.shared_images(test, train) == 0  # random synthetic images
    leaked = dataclasses.replace(test, images=torch.cat([train.images[:3], test.images[3:]]))
    assert data.shared_images(leaked, train) == 3
    nudged = train.images[:1].clone()
    nudged[0, 0, 0, 0] ^= 1  # one bit off is another image
    assert data.shared_images(dataclasses.replace(test, images=nudged), train) == 0


def test_bloodmnist_official_split_shares_five_test_images_with_training():
    root = require_real("bloodmnist")
    train, test = (data.load_split("bloodmnist", s, root=root) for s in ("train", "test"))
    assert data.shared_images(test, train) == 5
