"""The scenes feature and prompt network: a small CNN trained on generator images to predict
their attributes (:data:`~syncsde.scenes.generator.LABEL_NAMES`).

- Its penultimate features (:meth:`SceneClassifier.features`, 128-d) stand in for Inception in
  KID / FID (:func:`kid`).
- Its attribute probabilities give a prompt-agreement score (:func:`prompt_agreement`): the
  fraction of the attributes a prompt fixes that the classifier reads in the image.

Weights: ``syncsde/scenes/weights/classifier/{model.safetensors,config.json}`` (no pickle).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from syncsde.scenes.generator import GROUNDS, LABEL_NAMES, OBJECTS, TIMES

__all__ = ["SceneClassifier", "load_classifier", "save_classifier", "kid", "predict_attributes",
           "prompt_agreement", "GROUPS", "classifier_loss"]

GROUPS = {"time": (0, 3), "ground": (3, 7), "ridges": (7, 10)}  # softmax groups in the logits
FLAGS = (10, 15)                                                 # sigmoid flags


class SceneClassifier(nn.Module):
    """Images ``[B, 3, H, W]`` in [0, 1] (H = 32, any W >= 16: global pooling) -> logits
    ``[B, 15]``."""

    def __init__(self, width: int = 32, feature_dim: int = 128):
        super().__init__()
        c = width
        self.config = {"width": width, "feature_dim": feature_dim}

        def block(i, o, s):
            return nn.Sequential(nn.Conv2d(i, o, 3, s, 1), nn.GroupNorm(8, o), nn.SiLU())

        self.body = nn.Sequential(block(3, c, 2), block(c, c, 1), block(c, 2 * c, 2),
                                  block(2 * c, 2 * c, 1), block(2 * c, 4 * c, 2),
                                  block(4 * c, 4 * c, 1))
        # pool over x only: keep the 4 row bands (sky / horizon / ground layout matters)
        self.fc = nn.Linear(4 * c * 4, feature_dim)
        self.head = nn.Linear(feature_dim, len(LABEL_NAMES))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x * 2 - 1)
        h = F.adaptive_avg_pool2d(h, (4, 1)).flatten(1)
        return F.silu(self.fc(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def classifier_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    loss = 0.0
    for a, b in GROUPS.values():
        loss = loss + F.cross_entropy(logits[:, a:b], target[:, a:b].argmax(1))
    return loss + F.binary_cross_entropy_with_logits(logits[:, FLAGS[0]:FLAGS[1]],
                                                     target[:, FLAGS[0]:FLAGS[1]]) * 5 / 5


def save_classifier(model: SceneClassifier, folder: str | Path, extra: dict | None = None) -> None:
    from safetensors.torch import save_file

    from syncsde.atomic import atomic_path, atomic_write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    atomic_write_json(folder / "config.json", dict(model.config, labels=LABEL_NAMES, **(extra or {})))


def load_classifier(folder: str | Path | None = None) -> SceneClassifier:
    from safetensors.torch import load_file

    from syncsde.scenes.model import CLASSIFIER_DIR

    folder = Path(folder) if folder is not None else CLASSIFIER_DIR
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no scene classifier in {str(folder)!r}; train one with "
                                "`python -m syncsde.scenes.train classifier --out <folder>`")
    cfg = json.loads((folder / "config.json").read_text())
    model = SceneClassifier(cfg["width"], cfg["feature_dim"])
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval()


@torch.no_grad()
def predict_attributes(model: SceneClassifier, images: torch.Tensor, batch: int = 256) -> list[dict]:
    """Per image: the most probable time, ground, ridge count, and the object flags (p > 0.5),
    with the probabilities."""
    out = []
    for i in range(0, len(images), batch):
        logits = model(images[i:i + batch].float())
        for row in logits:
            d = {}
            for name, (a, b) in GROUPS.items():
                p = row[a:b].softmax(0)
                k = int(p.argmax())
                d[name] = (TIMES, GROUNDS, (0, 1, 2))[list(GROUPS).index(name)][k]
                d[f"p_{name}"] = float(p[k])
            pf = row[FLAGS[0]:FLAGS[1]].sigmoid()
            for j, o in enumerate(OBJECTS):
                d[f"has_{o}"] = bool(pf[j] > 0.5)
                d[f"p_has_{o}"] = float(pf[j])
            out.append(d)
    return out


def prompt_agreement(pred: dict, prompt_spec) -> tuple[int, int]:
    """``(agreeing, fixed)``: how many of the attributes the prompt fixes (time, ground when
    given; ridge count always) the classifier reads in the image."""
    n = ok = 0
    for name in ("time", "ground", "ridges"):
        want = getattr(prompt_spec, name)
        if want is None:
            continue
        n += 1
        ok += int(pred[name] == want)
    return ok, n


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def kid(feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = 50, subset_size: int | None = None,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): the unbiased MMD^2 with the cubic
    polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets; returns
    ``(mean, std)``."""
    a = np.asarray(feats_a, np.float64)
    b = np.asarray(feats_b, np.float64)
    m = min(len(a), len(b)) if subset_size is None else int(subset_size)
    if m < 2:
        raise ValueError("kid needs at least 2 samples per set")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
        mmd = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
               - 2 * kxy.mean())
        vals.append(mmd)
    return float(np.mean(vals)), float(np.std(vals))
