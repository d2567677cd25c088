"""Pluggable perceptual distances for SyncDiffusion (and extra SyncVC rewards).

A distance is any callable ``d(x, target) -> Tensor[B]``: ``x`` is a batch of decoded images
``[B, C, h, w]`` (differentiable), ``target`` broadcasts to it. Lower is closer.

- :class:`PixelDistance`: ``mean((x - target)^2)`` per image. Pulls whole windows to the anchor
  pixel by pixel (strong; it erases content differences, not only style).
- :class:`GramDistance`: Gatys' style distance, ``sum_l mean((G_l(x) - G_l(target))^2)`` with
  ``G = F F^T / (K h w)`` over feature maps ``F [K, h w]``. Without a network the features are
  the channels and their horizontal and vertical differences, so the Gram matrix holds channel
  covariances and gradient energies (colour, contrast and texture statistics, not layout).
- :class:`FeatureDistance`: LPIPS-style distance on the feature maps of any user network
  (channel-normalised features, squared difference, spatial mean, summed over layers); pass the
  scenes classifier's trunk, a VGG, anything returning a tensor or a list of tensors.
- :func:`scenes_feature_distance`: :class:`FeatureDistance` on the conv trunk of the bundled
  scenes classifier (the built-in pixel model's perceptual net; no download).
- :class:`LPIPSDistance`: wraps an ``lpips.LPIPS`` module (the paper's choice) when the user has
  its weights; inputs are mapped from ``input_range`` to [-1, 1].
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "DISTANCES",
    "FeatureDistance",
    "GramDistance",
    "LPIPSDistance",
    "PixelDistance",
    "gradient_features",
    "resolve_distance",
    "scenes_feature_distance",
]


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1).mean(1)


class PixelDistance:
    """``mean((x - target)^2)`` over channels and pixels, per image."""

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _per_image((x - target) ** 2)

    def __repr__(self) -> str:
        return "PixelDistance()"


def gradient_features(x: torch.Tensor) -> list[torch.Tensor]:
    """``[x, dx, dy]`` stacked along channels (differences zero-padded at the far edge)."""
    dx = torch.zeros_like(x)
    dy = torch.zeros_like(x)
    dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return [torch.cat([x, dx, dy], dim=-3)]


def _gram(f: torch.Tensor) -> torch.Tensor:
    B, K = f.shape[:2]
    flat = f.reshape(B, K, -1)
    return flat @ flat.transpose(1, 2) / flat.shape[-1] / K


def _as_list(f: Any) -> list[torch.Tensor]:
    return list(f) if isinstance(f, (list, tuple)) else [f]


class GramDistance:
    """Style (Gram-matrix) distance over ``features(x)`` (default :func:`gradient_features`)."""

    def __init__(self, features: Callable[[torch.Tensor], Any] | None = None):
        self.features = features or gradient_features

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fx = _as_list(self.features(x))
        ft = _as_list(self.features(target.expand_as(x) if target.shape[0] == 1 else target))
        out = 0
        for a, b in zip(fx, ft):
            out = out + _per_image((_gram(a) - _gram(b)) ** 2)
        return out

    def __repr__(self) -> str:
        return f"GramDistance(features={getattr(self.features, '__name__', self.features)!r})"


class FeatureDistance:
    """LPIPS-like distance on a user network's features: per layer, unit-normalise each spatial
    feature vector over channels, take the squared difference, average over space, sum layers.
    ``net(x)`` returns a tensor ``[B, K, h, w]`` or a list of them; ``preprocess`` maps the
    decoded images to the network's input range."""

    def __init__(self, net: Callable[[torch.Tensor], Any],
                 preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.net = net
        self.preprocess = preprocess

    def _feats(self, x):
        if self.preprocess is not None:
            x = self.preprocess(x)
        return _as_list(self.net(x))

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fx = self._feats(x)
        ft = self._feats(target.expand_as(x) if target.shape[0] == 1 else target)
        out = 0
        for a, b in zip(fx, ft):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            out = out + ((a - b) ** 2).sum(1).reshape(a.shape[0], -1).mean(1)
        return out

    def __repr__(self) -> str:
        return f"FeatureDistance({type(self.net).__name__})"


class LPIPSDistance:
    """An ``lpips.LPIPS`` module (``lpips.LPIPS(net='vgg')``, as SyncDiffusion) as a distance.
    ``input_range`` is the range of the decoded images (mapped to LPIPS' [-1, 1])."""

    def __init__(self, model: Any, input_range: Sequence[float] = (-1.0, 1.0)):
        lo, hi = (float(v) for v in input_range)
        if not hi > lo:
            raise ValueError(f"input_range must be (low, high) with high > low, got {input_range!r}")
        self.model, self.lo, self.hi = model, lo, hi

    def _map(self, x):
        return (x - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.expand_as(x) if target.shape[0] == 1 else target
        return self.model(self._map(x), self._map(t)).reshape(x.shape[0])

    def __repr__(self) -> str:
        return "LPIPSDistance()"


def scenes_feature_distance(folder=None) -> FeatureDistance:
    """LPIPS-style distance on the bundled scenes classifier's conv trunk (feature maps after
    its 2nd, 4th and 6th blocks), for images in [-1, 1] (the scenes pixel model's space).
    Its weights are frozen; gradients flow to the images only."""
    from syncsde.scenes.classifier import load_classifier

    model = load_classifier(folder)
    for p in model.parameters():
        p.requires_grad_(False)
    blocks = list(model.body)

    def trunk(x):
        feats, h = [], x  # the classifier maps [0, 1] to [-1, 1] itself; x is already there
        for k, blk in enumerate(blocks):
            h = blk(h)
            if k in (1, 3, 5):
                feats.append(h)
        return feats

    trunk.__name__ = "scenes_classifier_trunk"
    return FeatureDistance(trunk)


DISTANCES = {"pixel": PixelDistance, "gram": GramDistance}


def resolve_distance(spec: Any, name: str = "distance") -> Callable:
    """A distance from a name (``pixel``, ``gram``) or a callable ``d(x, target) -> [B]``."""
    if isinstance(spec, str):
        if spec not in DISTANCES:
            raise ValueError(f"unknown {name} {spec!r}; expected one of {sorted(DISTANCES)} or a "
                             "callable d(x, target) -> Tensor[B]")
        return DISTANCES[spec]()
    if not callable(spec):
        raise TypeError(f"{name} must be a name or a callable d(x, target) -> Tensor[B], got "
                        f"{type(spec).__name__}")
    return spec
