import json

import pytest
import torch

from msflow import cli, data, latent
from msflow.config import LatentConfig, make_config
from msflow.codes import RGBCode
from msflow.model import build

TINY = LatentConfig(enabled=True, vae="tiny", image_size=32)


@pytest.fixture(scope="module")
def root64(tmp_path_factory):
    root = tmp_path_factory.mktemp("medmnist64")
    for name in ("pneumoniamnist", "bloodmnist"):
        data.write_synthetic(root, name, 64, {"train": 48, "val": 16, "test": 16})
    return root


def _codec(channels=3, cfg=TINY):
    return latent.LatentCodec(latent.load_vae(cfg.vae), cfg, channels)


def test_encode_decode_shapes_and_scaling():
    codec = _codec()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    x = codec.to_vae_input(images)
    assert x.shape == (2, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    z = codec.encode(images)
    assert z.shape == (2, 4, 16, 16) and codec.resolution == 16
    mean, logvar = codec.posterior(x)
    assert torch.allclose(z, mean * TINY.scaling)
    assert torch.allclose(codec.decode(z), codec.vae.decode(mean).sample.clamp(-1, 1), atol=1e-5)
    assert codec.decode(z).shape == (2, 3, 32, 32)


def test_grayscale_goes_through_rgb_and_comes_back():
    codec = _codec(channels=1)
    gray = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    x = codec.to_vae_input(gray)
    assert x.shape[1] == 3 and torch.equal(x[:, 0], x[:, 2])
    assert codec.to_image(codec.encode(gray)).shape == (2, 1, 32, 32)


def test_224_is_resized_to_256_like_the_reference(tmp_path):
    data.write_synthetic(tmp_path, "retinamnist", 224, {"train": 2, "val": 2, "test": 2})
    split = data.load_split("retinamnist", "test", 224, tmp_path)
    codec = latent.LatentCodec(latent.load_vae("tiny"), LatentConfig(enabled=True, vae="tiny"), 3)
    assert codec.to_vae_input(split.images).shape == (2, 3, 256, 256)
    assert codec.image_size == 256 and codec.resolution == 128  # the tiny VAE halves; the SD VAE divides by 8


def test_cached_and_uncached_latents_agree_in_distribution(root64, tmp_path, monkeypatch):
    codec = _codec()
    split = data.load_split("bloodmnist", "train", 64, root64)
    cache = latent.posterior_cache(codec, split, TINY, batch_size=20, folder=tmp_path, progress=False)
    mean, logvar = codec.posterior(codec.to_vae_input(split.images))
    assert cache.mean.shape == (48, 4, 16, 16) and cache.mean.dtype == torch.float16
    assert torch.allclose(cache.mean.float(), mean, atol=2e-3) and torch.allclose(cache.logvar.float(), logvar, atol=2e-2)
    # many draws from the cache: their mean and variance are the posterior's, scaled
    idx = torch.zeros(4000, dtype=torch.long)
    draws = cache.sample(codec, idx, torch.Generator().manual_seed(0))
    s = TINY.scaling
    standard_error = s * cache.logvar[0].float().mul(0.5).exp().max().item() / len(idx) ** 0.5
    assert torch.allclose(draws.mean(0), cache.mean[0].float() * s, atol=5 * standard_error)
    assert torch.allclose(draws.var(0), cache.logvar[0].float().exp() * s**2, rtol=0.15)
    # the second call reads the file instead of encoding again
    monkeypatch.setattr(codec, "posterior", lambda x: (_ for _ in ()).throw(AssertionError("re-encoded")))
    again = latent.posterior_cache(codec, split, TINY, folder=tmp_path, progress=False)
    assert torch.equal(again.mean, cache.mean) and again.key == cache.key


def test_latent_code_decodes_through_rgb():
    codec = _codec()
    code = latent.LatentCode(codec, 8)
    assert code.prototypes.shape == (8, 4, 16, 16) and code.channels == 4
    y = code.encode(torch.tensor([1, 5]), 16)
    assert torch.equal(y[0], code.prototypes[1])
    assert torch.allclose(code.distances(y), RGBCode(8).distances(codec.decode(y)))
    with pytest.raises(ValueError, match="16 x 16, not 8"):
        code.encode(torch.tensor([0]), 8)


def test_missing_weights_say_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(latent.VAEUnavailableError, match="huggingface-cli download stabilityai/sd-vae-ft-mse"):
        latent.load_vae(str(tmp_path / "no-such-vae"))


def test_resolution_must_match_the_latents():
    with pytest.raises(ValueError, match="set data.resolution=16"):
        build(make_config("bloodmnist", "latent-smoke", {"data.resolution": 32}))


def test_latent_end_to_end_train_evaluate_generate(root64, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MSFLOW_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    common = ["--data-root", str(root64), "--device", "cpu"]
    assert cli.main(["train", "--dataset", "pneumoniamnist", "--recipe", "latent-smoke", "--out", str(run), *common]) == 0
    assert len(list((tmp_path / "cache").glob("pneumoniamnist-64-train-*.pt"))) == 1
    record = json.loads((run / "eval_test.json").read_text())
    assert record["config"]["latent"]["enabled"] and 0 <= record["metrics"]["mean"]["acc"] <= 1
    assert cli.main(["generate", "--run", str(run), "--per-class", "2", "--steps", "2", "--device", "cpu"]) == 0
    from msflow.runs import generate_from_run, load_run

    loaded = load_run(run, device="cpu")
    gen = generate_from_run(loaded, torch.tensor([0, 1]), steps=2, keep_trajectory=True)
    assert gen.images.shape == (2, 1, 32, 32)  # decoded to the dataset's one channel
    assert gen.trajectory.shape == (3, 2, 1, 32, 32)
