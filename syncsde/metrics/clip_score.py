r"""CLIP-S: prompt-image agreement, on two scales, with a pluggable embedder.

``clip_score`` is the cosine between an image embedding and a text embedding:

- **raw cosine** (the SyncSDE paper's scale, ~0.33 for SD images), and
- **x100 clipped at 0**, ``max(100 cos, 0)`` (torchmetrics ``CLIPScore``, SyncDiffusion's scale,
  ~31).

An embedder has ``embed_images(images [B, 3, H, W]) -> [B, d]`` and
``embed_texts(prompts) -> [B, d]``. On real weights wrap a CLIP model (ViT-B/16 for
SyncDiffusion's numbers). Here the default is :class:`ScenesPromptEmbedder`, the scenes
classifier's stand-in: the image "embedding" is its probability vector over the attribute groups
(time of day, ground, ridge count) and the text "embedding" the prompt's indicator vector over
the same groups, where a group the prompt leaves free gets the uniform vector on both sides
(it then adds a constant). Its cosine is 1 when the classifier is certain and agrees with every
attribute the prompt fixes. :func:`prompt_agreement_rate` gives the classifier's hard verdict
(fraction of fixed attributes read correctly).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["clip_score", "clip_score_x100", "ScenesPromptEmbedder", "prompt_agreement_rate"]


def clip_score(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """Per-pair cosine ``[B]`` (raw scale)."""
    a, b = torch.as_tensor(image_emb).double(), torch.as_tensor(text_emb).double()
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"embeddings must both be [B, d], got {tuple(a.shape)} and {tuple(b.shape)}")
    na, nb = a.norm(dim=1), b.norm(dim=1)
    if (na == 0).any() or (nb == 0).any():
        raise ValueError("an embedding is zero: the cosine is undefined")
    return ((a * b).sum(1) / (na * nb)).float()


def clip_score_x100(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """torchmetrics' scale: ``max(100 cos, 0)``."""
    return (100.0 * clip_score(image_emb, text_emb)).clamp_min(0.0)


class ScenesPromptEmbedder:
    """The scenes classifier's prompt agreement as a CLIP stand-in (see the module doc)."""

    name = "scenes-classifier-attributes"

    def __init__(self, feature_net: Any = None):
        from syncsde.metrics.features import ScenesFeatureNet

        self.net = feature_net if feature_net is not None else ScenesFeatureNet()

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.attribute_probabilities(images)[:, :10]   # time, ground, ridges groups

    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        from syncsde.scenes.generator import GROUNDS, TIMES
        from syncsde.scenes.vocab import parse_prompt

        rows = []
        for p in prompts:
            spec = parse_prompt(p)
            parts = []
            for want, values in ((spec.time, TIMES), (spec.ground, GROUNDS), (spec.ridges, (0, 1, 2))):
                if want is None:
                    parts.append(torch.full((len(values),), 1.0 / len(values)))
                else:
                    parts.append(torch.tensor([float(v == want) for v in values]))
            rows.append(torch.cat(parts))
        return torch.stack(rows)


def prompt_agreement_rate(images: torch.Tensor, prompts: Sequence[str], feature_net: Any = None) -> float:
    """Fraction of the attributes the prompts fix that the scenes classifier reads in the images."""
    from syncsde.metrics.features import ScenesFeatureNet
    from syncsde.scenes.classifier import predict_attributes, prompt_agreement
    from syncsde.scenes.vocab import parse_prompt

    net = feature_net if feature_net is not None else ScenesFeatureNet()
    preds = predict_attributes(net.model, net._resize(images))
    ok = tot = 0
    for pr, p in zip(preds, prompts):
        a, b = prompt_agreement(pr, parse_prompt(p))
        ok, tot = ok + a, tot + b
    return ok / tot if tot else float("nan")
