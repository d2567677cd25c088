"""Pluggable feature networks for the image metrics.

A feature network maps images ``[B, 3, H, W]`` in [0, 1] to

- ``features(images) -> [B, d]`` (what FID / KID compare; Inception's pool features in the
  papers), and
- ``feature_maps(images) -> list of [B, C_l, h_l, w_l]`` (what LPIPS and the Gram-matrix style
  loss compare; VGG layers in the papers).

Networks here:

- :class:`ScenesFeatureNet` (the default): the scenes classifier shipped with the package
  (:mod:`syncsde.scenes.classifier`): 128-d penultimate features, and the outputs of its three
  resolution stages as maps. It also gives attribute probabilities (the CLIP stand-in of
  :mod:`syncsde.metrics.clip_score`). Images are resized to its 32 x 32 input.
- :class:`VGGFeatureNet`: VGG-16 / VGG-19 written out in plain torch (no torchvision), loaded
  from a **safetensors** file with torchvision's parameter names (``features.N.weight``). Taps:
  ``"lpips"`` (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of VGG-16, LPIPS's input scaling) or
  ``"style"`` (conv_1 ... conv_5 before ReLU, ImageNet normalization: the Gatys style loss that
  SyncDiffusion's Intra-Style-L uses with VGG-19).

A missing weights file is one :class:`WeightsNotFoundError` naming the file, where the original
comes from, and the conversion command (``python -m syncsde.metrics.features convert IN OUT``).
Inception (FID/KID on real weights) is not rebuilt here: pass any network with ``features``
(e.g. a wrapper of torch-fidelity's or clean-fid's Inception) to the metric functions.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["FeatureNet", "ScenesFeatureNet", "VGGFeatureNet", "WeightsNotFoundError",
           "load_feature_net", "check_images", "VGG_SOURCES"]

VGG_SOURCES = {
    "vgg16": "torchvision's vgg16-397923af.pth (https://download.pytorch.org/models/vgg16-397923af.pth)",
    "vgg19": "torchvision's vgg19-dcbb9e9d.pth (https://download.pytorch.org/models/vgg19-dcbb9e9d.pth)",
}
_VGG_CFG = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class WeightsNotFoundError(FileNotFoundError):
    """A backbone weights file the user pointed to (or left out) does not exist."""


class FeatureNet(Protocol):
    name: str

    def features(self, images: torch.Tensor) -> torch.Tensor: ...

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]: ...


def check_images(images: Any, name: str = "images") -> torch.Tensor:
    """``[B, 3, H, W]`` float in [0, 1] (a single ``[3, H, W]`` image gets a batch axis)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor [B, 3, H, W], got {type(images).__name__}")
    x = images.unsqueeze(0) if images.ndim == 3 else images
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must be [B, 3, H, W] (RGB), got shape {tuple(images.shape)}")
    x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite values")
    if x.numel() and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
        raise ValueError(f"{name} must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return x.clamp(0, 1)


class ScenesFeatureNet:
    """The scenes classifier as a feature network (stand-in for Inception / VGG / CLIP)."""

    name = "scenes-classifier"

    def __init__(self, classifier: nn.Module | None = None, folder: str | os.PathLike | None = None,
                 size: int = 32):
        if classifier is None:
            from syncsde.scenes.classifier import load_classifier

            try:
                classifier = load_classifier(folder)
            except FileNotFoundError as e:
                raise WeightsNotFoundError(str(e)) from None
        self.model = classifier.eval()
        self.size = int(size)

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                              align_corners=False).clamp(0, 1)
        return x

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(self._resize(images))

    @torch.no_grad()
    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        h = self._resize(images) * 2 - 1
        out = []
        for i, block in enumerate(self.model.body):
            h = block(h)
            if i % 2 == 1:  # end of each resolution stage (32/2, 32/4, 32/8)
                out.append(h)
        return out

    @torch.no_grad()
    def attribute_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 15]``: softmax over each group (time, ground, ridges), sigmoid for the flags."""
        from syncsde.scenes.classifier import FLAGS, GROUPS

        logits = self.model(self._resize(images))
        parts = [logits[:, a:b].softmax(1) for a, b in GROUPS.values()]
        parts.append(logits[:, FLAGS[0]:FLAGS[1]].sigmoid())
        return torch.cat(parts, 1)


def _vgg_layers(arch: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = 3
    for v in _VGG_CFG[arch]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
            c = v
    return nn.Sequential(*layers)


def _conv_indices(seq: nn.Sequential) -> list[int]:
    return [i for i, m in enumerate(seq) if isinstance(m, nn.Conv2d)]


class VGGFeatureNet:
    """VGG-16/19 from a safetensors file with torchvision's names (``features.*`` are used)."""

    def __init__(self, arch: str, weights: str | os.PathLike | None, taps: str = "lpips"):
        if arch not in _VGG_CFG:
            raise ValueError(f"arch must be one of {sorted(_VGG_CFG)}, got {arch!r}")
        if taps not in ("lpips", "style"):
            raise ValueError(f"taps must be 'lpips' or 'style', got {taps!r}")
        hint = (f"it is {VGG_SOURCES[arch]} converted to safetensors with "
                f"`python -m syncsde.metrics.features convert {arch}.pth {arch}.safetensors`")
        if weights is None:
            raise WeightsNotFoundError(f"{arch} needs a weights file (none given): {hint}")
        path = Path(os.path.expanduser(str(weights)))
        if not path.is_file():
            raise WeightsNotFoundError(f"{arch} weights file {str(weights)!r} not found: {hint}")
        from safetensors.torch import load_file

        state = {k[len("features."):]: v for k, v in load_file(str(path)).items()
                 if k.startswith("features.")}
        self.body = _vgg_layers(arch)
        try:
            self.body.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{arch} weights file {str(weights)!r} does not fit {arch}: "
                             f"{str(e).splitlines()[0]}") from None
        self.body.eval()
        convs = _conv_indices(self.body)
        if taps == "style":  # conv_1..conv_5 outputs (before their ReLU)
            self.taps = convs[:5]
            self.mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
            self.std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        else:  # the ReLU after the last conv of each of the 5 blocks
            pools = [i for i, m in enumerate(self.body) if isinstance(m, nn.MaxPool2d)]
            self.taps = [p - 1 for p in pools]
            # LPIPS's ScalingLayer on inputs in [-1, 1]
            self.mean = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
            self.std = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        self.taps_kind = taps
        self.name = f"{arch}-{taps}"

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images)
        if self.taps_kind == "lpips":
            x = x * 2 - 1
        return (x - self.mean) / self.std

    @torch.no_grad()
    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        h = self._input(images)
        out = []
        last = max(self.taps)
        for i, layer in enumerate(self.body):
            h = layer(h)
            if i in self.taps:
                out.append(h)
            if i == last:
                break
        return out

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_maps(images)[-1].mean(dim=(2, 3))


def load_feature_net(spec: Any = None) -> Any:
    """``None`` / ``"scenes"``: :class:`ScenesFeatureNet`; ``{"net": "vgg16" | "vgg19",
    "weights": PATH, "taps": "lpips" | "style"}``: :class:`VGGFeatureNet`; an object with
    ``features`` / ``feature_maps`` is returned as is."""
    if spec is None or spec == "scenes":
        return ScenesFeatureNet()
    if hasattr(spec, "features") or hasattr(spec, "feature_maps"):
        return spec
    if isinstance(spec, dict):
        net = spec.get("net")
        if net == "scenes":
            return ScenesFeatureNet(folder=spec.get("weights"))
        if net in _VGG_CFG:
            return VGGFeatureNet(net, spec.get("weights"), spec.get("taps", "lpips"))
        if net == "inception":
            raise ValueError("inception features are not rebuilt here (they need torch-fidelity or "
                             "clean-fid, which need torchvision): pass a network object with "
                             "features() instead, see docs/evaluation.md")
        raise ValueError(f"feature net {net!r} unknown; expected 'scenes', 'vgg16' or 'vgg19'")
    raise ValueError(f"feature net must be 'scenes', a dict or a network object, got {spec!r}")


def _convert(src: str, dst: str) -> None:
    """A torchvision ``.pth`` state dict -> safetensors (``torch.load(weights_only=True)``:
    tensors only, no arbitrary objects)."""
    from safetensors.torch import save_file

    from syncsde.atomic import atomic_path

    state = torch.load(src, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{src!r} is not a state dict")
    with atomic_path(dst) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m syncsde.metrics.features")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="torchvision .pth state dict -> safetensors")
    c.add_argument("src")
    c.add_argument("dst")
    a = ap.parse_args(argv)
    _convert(a.src, a.dst)
    print(a.dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
