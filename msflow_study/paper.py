"""Published numbers that our results are read against, each with its source.

These are the only numbers in msflow that were not computed by it. Tables and figures label them as
the paper's (or the benchmark's), never as ours.
"""

from __future__ import annotations

SOURCE_PAPER = "MedSymmFlow paper (Caetano et al., arXiv 2507.19098), Table 1"
SOURCE_ARC = "MedSymmFlow authors' accuracy-rejection data"
SOURCE_MEDMNIST_PLUS = "MedMNIST+ benchmark (native 224 px, ImageNet-pretrained)"

# Table 1: (AUC %, ACC %) on the MedMNIST test splits, per model and dataset.
TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "ResNet-18 (28)": {"pneumoniamnist": (94.4, 85.4), "bloodmnist": (99.8, 95.8), "dermamnist": (91.7, 73.5), "retinamnist": (71.7, 52.4)},
    "ResNet-50 (28)": {"pneumoniamnist": (94.8, 85.4), "bloodmnist": (99.7, 95.6), "dermamnist": (91.3, 73.5), "retinamnist": (72.6, 52.8)},
    "auto-sklearn (28)": {"pneumoniamnist": (94.2, 85.5), "bloodmnist": (98.4, 87.8), "dermamnist": (90.2, 71.9), "retinamnist": (69.0, 51.5)},
    "AutoKeras (28)": {"pneumoniamnist": (94.7, 87.8), "bloodmnist": (99.8, 96.1), "dermamnist": (91.5, 74.9), "retinamnist": (71.9, 50.3)},
    "ResNet-18 (224)": {"pneumoniamnist": (95.6, 86.4), "bloodmnist": (99.8, 96.3), "dermamnist": (92.0, 75.4), "retinamnist": (71.0, 49.3)},
    "ResNet-50 (224)": {"pneumoniamnist": (96.2, 88.4), "bloodmnist": (99.7, 95.0), "dermamnist": (91.2, 73.1), "retinamnist": (71.6, 51.1)},
    "MedViT-S (224)": {"pneumoniamnist": (99.5, 96.1), "bloodmnist": (99.7, 95.1), "dermamnist": (93.7, 78.0), "retinamnist": (77.3, 56.1)},
    "SymmFlow (28), gray code": {"pneumoniamnist": (91.6, 89.4), "bloodmnist": (99.1, 96.3), "dermamnist": (83.4, 69.3), "retinamnist": (70.2, 50.7)},
    "MedSymmFlow (28), RGB": {"pneumoniamnist": (95.2, 88.0), "bloodmnist": (99.4, 97.9), "dermamnist": (89.6, 78.8), "retinamnist": (73.1, 51.4)},
    "LatMSF (224), RGB, latent": {"pneumoniamnist": (94.4, 89.4), "bloodmnist": (99.8, 99.0), "dermamnist": (92.5, 81.0), "retinamnist": (78.8, 54.0)},
}
"""The paper's Table 1, as model -> dataset -> (AUC %, ACC %)."""

PAPER_MODEL_28 = "MedSymmFlow (28), RGB"

# Accuracy (%) of MedSymmFlow (28) after rejecting the most uncertain fraction.
ARC_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)
ARC: dict[str, tuple[float, ...]] = {
    "pneumoniamnist": (88.2, 90.6, 92.0, 92.9, 94.7, 97.0),
    "bloodmnist": (97.9, 99.1, 99.1, 99.1, 99.0, 98.7),
    "dermamnist": (78.6, 82.5, 86.6, 90.3, 95.4, 96.4),
    "retinamnist": (51.2, 53.8, 55.9, 57.4, 62.1, 70.2),
}
"""The authors' accuracy-rejection data for MedSymmFlow (28), as dataset -> accuracy % at ``ARC_FRACTIONS``."""

MEDMNIST_PLUS_ACC = {"bloodmnist": 99.0, "dermamnist": 84.7, "retinamnist": 64.2}
"""Accuracy (%) in the MedMNIST+ benchmark, another reference worth beating."""

