"""Discriminative baselines trained in the same pipeline: a ResNet-18 sized for 28 px images.

The network follows MedMNIST's benchmark version of ResNet-18 (a 3 x 3 stride-1 stem and no max-pool, so
28 px inputs keep enough resolution), with dropout before the classifier so that MC dropout is possible.
Its uncertainty baselines are the max-softmax probability, the same after temperature scaling on the
validation split, MC dropout and a deep ensemble (several seeds); its 512-d penultimate features are the
in-domain feature space of the generation metrics.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from msflow import metrics
from msflow.data import Split, load_split, random_flips, to_model_input, uses_flips, get_info
from msflow.files import provenance, read_json, save_predictions, torch_save, write_json
from msflow.model import ConfigMismatchError


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.skip(x))


class ResNet18(nn.Module):
    """ResNet-18 for small images: ``(B, C, H, W)`` in [-1, 1] to ``(B, K)`` logits.

    Args:
        in_channels: image channels.
        num_classes: K.
        dropout: dropout before the classifier (kept active at test time for MC dropout).
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        layers, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_Block(c_in, c_out, stride), _Block(c_out, c_out, 1)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(512, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 512-d penultimate features (global average pool of the last stage)."""
        return self.layers(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))


class SmallCNN(nn.Module):
    """A small CNN (five 3 x 3 convolutions, 32-64-128 channels, about 0.3 M parameters) with the interface of
    :class:`ResNet18` (``features``, ``dropout``, ``fc``): a classifier cheap enough to train on a CPU, for the
    Classification Accuracy Score when a ResNet-18 cannot be trained long enough there."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()

        def conv(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.body = nn.Sequential(*conv(in_channels, 32), *conv(32, 32), nn.MaxPool2d(2),
                                  *conv(32, 64), *conv(64, 64), nn.MaxPool2d(2), *conv(64, 128))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 128-d penultimate features (global average pool)."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))


ARCHITECTURES = {"resnet18": ResNet18, "cnn": SmallCNN}
"""Classifier architectures by name (:attr:`BaselineConfig.arch`)."""


@dataclass(frozen=True)
class BaselineConfig:
    """Training of one baseline classifier (MedMNIST's recipe, shortened: Adam, cosine decay, flips as msflow).

    Attributes:
        dataset: MedMNIST flag.
        size: file size (28).
        resolution: input side.
        epochs: passes over the training split.
        batch_size: images per step.
        lr: peak Adam learning rate.
        dropout: dropout before the classifier.
        seed: seed of initialisation, order and augmentation (one seed per ensemble member).
        arch: ``"resnet18"`` (the baselines and the feature network) or ``"cnn"`` (:class:`SmallCNN`).
    """

    dataset: str = "pneumoniamnist"
    size: int = 28
    resolution: int = 28
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    dropout: float = 0.1
    seed: int = 0
    arch: str = "resnet18"

    def build(self) -> nn.Module:
        """A freshly initialised classifier of this architecture for this dataset."""
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown classifier architecture {self.arch!r}; choose one of {sorted(ARCHITECTURES)}")
        info = get_info(self.dataset)
        return ARCHITECTURES[self.arch](info.channels, info.num_classes, self.dropout)


def member_dir(base_dir: str | Path, dataset: str, epochs: int, seed: int = 0) -> Path:
    """The folder of one ResNet-18 trained on a dataset's real training split: named by its recipe's length and
    seed, so that baselines of different lengths (a CPU run's few epochs, a GPU session's 20) sit side by side."""
    return Path(base_dir) / f"{dataset}-resnet18-{epochs}e-seed{seed}"


def train_baseline(cfg: BaselineConfig, out_dir: str | Path, data_root: str | None = None, device: str | torch.device = "cpu",
                   progress: bool = True) -> Path:
    """Train one ResNet-18 on the real training split; keep the weights of the epoch with the best
    validation accuracy. Writes ``<out_dir>/baseline.pt`` and ``baseline.json``; a finished run is reused."""
    out = Path(out_dir)
    if (out / "baseline.json").exists():
        found = asdict(BaselineConfig(**read_json(out / "baseline.json")["config"]))  # fields added later take their defaults
        if found != asdict(cfg):
            diff = {k: (found.get(k), v) for k, v in asdict(cfg).items() if found.get(k) != v}
            raise ConfigMismatchError(f"{out} holds a baseline trained with other settings (recorded, asked): {diff}; "
                                      "ask for the recorded settings, or use another folder")
        if (out / "baseline.pt").exists() or any(out.glob("logits_*.npz")):
            return out  # trained; a folder brought back without its weights still serves its recorded logits
    train = load_split(cfg.dataset, "train", cfg.size, data_root)
    val = load_split(cfg.dataset, "val", cfg.size, data_root)
    return train_on(cfg, train.images, train.labels, val, out, device, progress, {"md5": train.md5, "synthetic": train.synthetic})


class RestoreMismatchError(RuntimeError):
    """A baseline trained again from its record does not give the recorded logits."""


def restore_baseline(out_dir: str | Path, data_root: str | None = None, device: str | torch.device = "cpu",
                     progress: bool = True) -> Path:
    """Train again the weights of a recorded baseline whose ``baseline.pt`` is not kept (it is not committed), with its
    recorded settings and seed, and keep them only if they are the recorded network: the same validation accuracy at
    every epoch, and the same logits on every split whose logits are recorded (``logits_<split>.npz``).

    Training is deterministic on one kind of machine, so a match means the measurements that needed the network
    (generation features) compare with those made with the original. The records are left as they are.

    Raises:
        FileNotFoundError: the folder has no ``baseline.json``.
        RestoreMismatchError: the retrained network differs (another PyTorch or processor): its weights are not kept.
    """
    import shutil
    import tempfile

    out = Path(out_dir)
    if (out / "baseline.pt").exists():
        return out
    if not (out / "baseline.json").exists():
        raise FileNotFoundError(f"{out} holds no baseline record (baseline.json) to restore from")
    record = read_json(out / "baseline.json")
    cfg = BaselineConfig(**record["config"])
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        again = Path(tmp) / out.name
        train_baseline(cfg, again, data_root, device, progress)
        redone = read_json(again / "baseline.json")
        recorded_acc = [h["val_acc"] for h in record["history"]]
        redone_acc = [h["val_acc"] for h in redone["history"]]
        problems = [] if redone_acc == recorded_acc else [f"validation accuracy by epoch {redone_acc}, recorded {recorded_acc}"]
        if record.get("dataset") and redone.get("dataset") != record["dataset"]:
            problems.append(f"training data {redone.get('dataset')}, recorded {record['dataset']}")
        model, _ = load_baseline(again, device)
        for path in sorted(out.glob("logits_*.npz")):
            split_name, _, mc = path.stem.removeprefix("logits_").partition("_mc")
            with np.load(path) as z:
                split = load_split(cfg.dataset, split_name, cfg.size, data_root)
                if str(z["md5"]) != split.md5:
                    continue  # recorded on another file of the split: nothing to compare
                values = logits(model, split, cfg.resolution, mc_samples=int(mc or 0), seed=int(z["seed"]))
                worst = float(np.abs(values - z["logits"]).max())
                if worst > 1e-4:
                    problems.append(f"{path.name}: logits differ by up to {worst:.3g}")
        if problems:
            raise RestoreMismatchError(f"{out}: the baseline trained again is not the recorded one ({'; '.join(problems)}); "
                                       "its weights are not kept. Measurements with a new feature network do not compare "
                                       "with the recorded ones: train it into another folder and measure every run again")
        shutil.move(str(again / "baseline.pt"), out / "baseline.pt")
    return out


def train_on(cfg: BaselineConfig, images: torch.Tensor, labels: torch.Tensor, val: Split, out_dir: str | Path,
             device: str | torch.device = "cpu", progress: bool = True, source: dict | None = None) -> Path:
    """Train one ResNet-18 on the given images (uint8, or floats in [-1, 1]) and labels, selecting on ``val``.

    Used for the real training split and, for the Classification Accuracy Score, for generated samples.
    A folder that already holds a classifier of the same recipe trained on the same ``source`` (which must
    then identify the images: their file's MD5, or the run, checkpoint and seed that generated them) is reused.
    """
    out = Path(out_dir)
    if source and (out / "baseline.json").exists() and (out / "baseline.pt").exists():
        found = read_json(out / "baseline.json")
        if (asdict(BaselineConfig(**found["config"])) == asdict(cfg) and found.get("dataset") == source
                and found.get("n_train") == len(labels)):
            return out
    device = torch.device(device)
    info = get_info(cfg.dataset)
    torch.manual_seed(cfg.seed)
    model = cfg.build().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * math.ceil(len(labels) / cfg.batch_size))
    flips = uses_flips(info, None)
    gen = torch.Generator().manual_seed(cfg.seed)
    history, best, t_train = [], None, 0.0
    for epoch in tqdm(range(cfg.epochs), desc=f"{cfg.arch} {info.flag} seed {cfg.seed}", disable=not progress):
        model.train()
        t0 = time.perf_counter()
        for idx in torch.randperm(len(labels), generator=gen).split(cfg.batch_size):
            x = _as_input(images[idx], cfg.resolution)
            if flips:
                x = random_flips(x, gen)
            loss = F.cross_entropy(model(x.to(device)), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        t_train += time.perf_counter() - t0
        acc = metrics.accuracy(logits(model, val, cfg.resolution).argmax(1), val.labels.numpy())
        history.append({"epoch": epoch + 1, "val_acc": acc, "train_seconds": t_train})
        if best is None or acc > best["val_acc"]:
            best = history[-1]
            torch_save({"config": asdict(cfg), "weights": model.state_dict()}, out / "baseline.pt")
    write_json(out / "baseline.json", {"config": asdict(cfg), "best": best, "history": history, "train_seconds": t_train,
                                       "n_train": len(labels), "dataset": source or {}, "provenance": provenance(device)})
    return out


def _as_input(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 images, or floats already in [-1, 1], to floats in [-1, 1] at ``resolution``."""
    if x.dtype == torch.uint8:
        return to_model_input(x, resolution)
    x = x.float()
    return x if x.shape[-1] == resolution else F.interpolate(x, size=(resolution,) * 2, mode="bilinear", align_corners=False, antialias=True)


def load_baseline(out_dir: str | Path, device: str | torch.device = "cpu") -> tuple[ResNet18, BaselineConfig]:
    """The selected weights of a trained baseline, in eval mode.

    Raises:
        FileNotFoundError: the folder keeps the baseline's records but not its weights (they are not committed), and
            something needs the network itself (features, not the cached logits): the message says how to retrain.
    """
    weights = Path(out_dir) / "baseline.pt"
    if not weights.exists():
        raise FileNotFoundError(f"{out_dir} holds no weights (baseline.pt is not kept in git; its cached logits serve "
                                f"the uncertainty pages): `python -m msflow_study restore-baseline {out_dir}` trains them "
                                f"again from the record and keeps them if they give the recorded logits")
    d = torch.load(weights, map_location="cpu", weights_only=True)
    cfg = BaselineConfig(**d["config"])
    model = cfg.build()
    model.load_state_dict(d["weights"])
    return model.to(device).eval(), cfg


@torch.no_grad()
def logits(model: ResNet18, split: Split, resolution: int = 28, mc_samples: int = 0, batch_size: int = 512, seed: int = 0) -> np.ndarray:
    """Logits ``(N, K)``; with ``mc_samples > 0``, ``(S, N, K)`` with dropout active (MC dropout)."""
    was_training = model.training
    model.eval()
    if not mc_samples:
        out = _batched(model, model, split.images, resolution, batch_size).numpy()
        model.train(was_training)
        return out
    # Dropout acts only on the penultimate features, so the features are computed once and each MC sample
    # draws a fresh dropout mask on them: the same distribution as running the whole network S times.
    feats = _batched(model, model.features, split.images, resolution, batch_size).to(next(model.parameters()).device)
    model.dropout.train()
    torch.manual_seed(seed)
    out = torch.stack([model.fc(model.dropout(feats)).float().cpu() for _ in range(mc_samples)])
    model.train(was_training)
    return out.numpy()


@torch.no_grad()
def features(model: ResNet18, images: torch.Tensor, resolution: int = 28, batch_size: int = 512) -> np.ndarray:
    """Penultimate features ``(N, 512)`` of uint8 images, or of images already in [-1, 1]."""
    model.eval()
    return _batched(model, model.features, images, resolution, batch_size).numpy()


@torch.no_grad()
def predict_images(model: ResNet18, images: torch.Tensor, resolution: int = 28, batch_size: int = 512) -> np.ndarray:
    """Predicted classes of uint8 images, or of images already in [-1, 1]."""
    model.eval()
    return _batched(model, model, images, resolution, batch_size).argmax(1).numpy()


def _batched(model: ResNet18, fn, images: torch.Tensor, resolution: int, batch_size: int) -> torch.Tensor:
    """``fn`` (``model`` or one of its methods) batch by batch over images (uint8 or in [-1, 1]), as float on the CPU."""
    device = next(model.parameters()).device
    return torch.cat([fn(_as_input(images[i : i + batch_size], resolution).to(device)).float().cpu()
                      for i in range(0, len(images), batch_size)])


def cached_logits(out_dir: str | Path, split: Split, mc_samples: int = 0, device: str | torch.device = "cpu",
                  seed: int = 0) -> np.ndarray:
    """:func:`logits` of a trained baseline on a split, kept in ``<out_dir>/logits_<split>[_mc<S>].npz``.

    The file records the split's MD5 and the weights' selected epoch; a file that matches is read instead of
    loading the network (so that baselines trained on a GPU are rendered, not recomputed, on a laptop).
    """
    out = Path(out_dir)
    path = out / (f"logits_{split.name}" + (f"_mc{mc_samples}" if mc_samples else "") + ".npz")
    epoch = read_json(out / "baseline.json")["best"]["epoch"]
    if path.exists():
        with np.load(path) as z:
            if str(z["md5"]) == split.md5 and int(z["epoch"]) == epoch and int(z["seed"]) == seed:
                return z["logits"].astype(np.float32)
    if not (out / "baseline.pt").exists():
        raise FileNotFoundError(f"{out} holds no weights (results brought back from a GPU session keep the logits of the "
                                f"splits they were computed on) and no logits for {path.name}; delete the folder to retrain it")
    model, cfg = load_baseline(out, device)
    values = logits(model, split, cfg.resolution, mc_samples=mc_samples, seed=seed)
    save_predictions(path, logits=values.astype(np.float32), md5=np.array(split.md5), epoch=np.array(epoch), seed=np.array(seed))
    return values
