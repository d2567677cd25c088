"""Making one image of a work item: a strategy's wide image, mask-composed image or
ambiguous image (the reading of prompt a), or a reference image (the model's
plain sample at the window size, as the papers do, or the scenes generator's ground truth)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from syncsde.eval.config import REFERENCE, EvalConfig, Item

__all__ = ["ItemMaker", "to_png_image", "load_png", "edit_source", "edit_target_prompt"]

_PIPELINES: dict[tuple, object] = {}  # loaded once per process (repeated runs in one process)


def to_png_image(x: torch.Tensor):
    """``[3, H, W]`` in [0, 1] -> an 8-bit RGB PIL image."""
    from PIL import Image

    a = (x.detach().float().clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(a, "RGB")


def load_png(path: str | Path) -> torch.Tensor:
    """An image file -> ``[3, H, W]`` float in [0, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


def edit_source(cfg: EvalConfig, task: dict, item) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The source image ``[3, H, W]`` in [0, 1] of an edit item and its object mask ``[H, W]``
    (1 = object; None without masks). The same for every strategy: the generator's scene is
    seeded by (config seed, task, prompt, "source", index), a folder's image is file ``index``."""
    from syncsde.eval.config import sample_seed

    H, W = task["height"], task["width"]
    src = task["sources"]
    if src["source"] == "generator":
        from syncsde.scenes.generator import render
        from syncsde.scenes.vocab import parse_prompt

        rng = np.random.default_rng(sample_seed(cfg.raw["seed"], task["name"], item.prompt,
                                                "source", item.index))
        spec = parse_prompt(task["prompt_parts"][item.prompt_index][0]).sample_spec(rng)
        place = []
        if src["place"] is not None:
            kind, x, y, size = src["place"]
            place = [(kind, x * W, y * H, size * H)]
        scene = render(spec, H, W, rng, place=place)
        img = torch.from_numpy(np.ascontiguousarray(scene.image)).float().permute(2, 0, 1)
        mask = None
        if place:
            k, x, y = place[0][:3]
            obj = next(o for o in scene.objects if (o.kind, o.x, o.y) == (k, float(x), float(y)))
            mask = torch.from_numpy(np.asarray(obj.mask, np.float32))
        return img, mask
    import torch.nn.functional as F

    name = src["files"][item.index][0]
    img = load_png(Path(src["folder"]) / name)
    if img.shape[-2:] != (H, W):
        img = F.interpolate(img[None], size=(H, W), mode="bilinear", antialias=True,
                            align_corners=False)[0].clamp(0, 1)
    mask = None
    if "masks" in src:
        from syncsde.pipelines import load_mask

        mask = load_mask(str(Path(src["masks"]) / name), (H, W))
    return img, mask


def edit_target_prompt(parts: tuple) -> str:
    """The source prompt with its word swapped (the prompt an edit is scored against)."""
    from syncsde.pipelines import replace_word

    return replace_word(*parts)


class ItemMaker:
    """Loads the model once (lazily) and makes the image of any item of ``cfg``."""

    def __init__(self, cfg: EvalConfig, device: str | None = None):
        self.cfg = cfg
        self.device = device
        self.tasks = {t["name"]: t for t in cfg.tasks}
        self._pipe = None

    @property
    def pipe(self):
        if self._pipe is None:
            from syncsde.models import load_pipeline

            key = (self.cfg.raw["model"], self.device)
            if key not in _PIPELINES:
                _PIPELINES[key] = load_pipeline(key[0], device=self.device)
            self._pipe = _PIPELINES[key]
            if hasattr(self._pipe, "set_progress_bar_config"):
                self._pipe.set_progress_bar_config(disable=True)
        return self._pipe

    def make(self, item: Item) -> torch.Tensor:
        t = self.tasks[item.task]
        if item.strategy == REFERENCE:
            return self._reference(t, item)
        s = self.cfg.raw["strategies"][item.strategy]
        common = dict(strategy=s["name"], strategy_options=dict(s["options"]),
                      num_inference_steps=t["num_inference_steps"],
                      guidance_scale=t["guidance_scale"], seed=item.seed, progress=False)
        parts = t["prompt_parts"][item.prompt_index]
        if t["kind"] == "mask":
            from syncsde.eval.config import mask_image
            from syncsde.pipelines import mask_generation

            mask = mask_image(t["mask"][item.prompt_index], t["height"], t["width"])
            res = mask_generation(self.pipe, mask, *parts, height=t["height"], width=t["width"],
                                  **common)
        elif t["kind"] == "ambiguous":
            from syncsde.pipelines import ambiguous_image

            # the image that reads as prompt a; its view reads as prompt b (scored so)
            res = ambiguous_image(self.pipe, parts[0], parts[1], t["view"], **common)
        elif t["kind"] == "edit":
            from syncsde.pipelines import edit_image

            src, _ = edit_source(self.cfg, t, item)
            res = edit_image(self.pipe, to_png_image(src), source_prompt=parts[0], source_word=parts[1],
                             target_word=parts[2], height=t["height"], width=t["width"],
                             tau=t["tau"], **common)
        else:
            from syncsde.pipelines import wide_image

            res = wide_image(self.pipe, item.prompt, height=t["height"], width=t["width"],
                             window=t["window"], stride=t["stride"], **common)
        return res.tensors[0].float().cpu()

    def _reference(self, t: dict, item: Item) -> torch.Tensor:
        ref = t["reference"]
        H, W = ref["height"], ref["width"]
        if ref["source"] == "generator":
            from syncsde.scenes.generator import render
            from syncsde.scenes.vocab import parse_prompt

            rng = np.random.default_rng(item.seed)
            img = render(parse_prompt(item.prompt).sample_spec(rng), H, W, rng).image
            return torch.from_numpy(np.ascontiguousarray(img)).float().permute(2, 0, 1)
        g = torch.Generator().manual_seed(item.seed)
        out = self.pipe([item.prompt], num_inference_steps=t["num_inference_steps"],
                        guidance_scale=t["guidance_scale"], generator=g, height=H, width=W)
        if isinstance(out, torch.Tensor):        # the scenes pipeline returns [B, 3, H, W]
            return out[0].float().cpu()
        images = getattr(out, "images", out)     # a diffusers pipeline output (PIL images)
        a = np.asarray(images[0].convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(a).permute(2, 0, 1).contiguous()
