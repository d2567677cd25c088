"""The editing workflow around :func:`syncsde.pipelines.edit_image`, as the SyncSDE authors ship
it: caption the source image (BLIP), find the word to edit in the caption, cache the inverted
``x_T`` with its caption, and edit a folder of images with a resumable manifest.

- :func:`match_source_word`: the caption word to replace, by exact word, then substring, then
  similarity of the text encoder's *input token embeddings* (the mean embedding of the word's
  tokens, cosine similarity; the authors use CLIP ViT-B/32 text features for this last step).
- :func:`save_inversion` / :func:`load_inversion`: ``x_T`` as safetensors with a JSON header
  (caption, model, every setting the inversion depends on, the image's hash); a cache made for
  another image, model or setting is refused with what differs.
- :class:`Captioner`: BLIP through transformers (``BlipForConditionalGeneration``).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from syncsde.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["WordMatch", "match_source_word", "replace_matched_word", "save_inversion",
           "load_inversion", "image_digest", "Captioner"]

_WORD = re.compile(r"[\w'-]+", re.UNICODE)


@dataclass(frozen=True)
class WordMatch:
    """``word`` of the caption (character span ``start:end``) matched to the user's source word
    by ``how``: "exact", "substring" or "embedding" (with its cosine ``score``)."""

    word: str
    start: int
    end: int
    how: str
    score: float = 1.0


def match_source_word(caption: str, source_word: str, prompts: Any = None) -> WordMatch:
    """The caption word to edit: the first whole word equal to ``source_word`` (case-insensitive),
    else the first word containing it, else (with ``prompts``, a
    :class:`~syncsde.denoisers.diffusers_models.PromptEncoder`) the word whose mean input token
    embedding is most cosine-similar to the source word's. Raises ``ValueError`` when nothing
    matches and no text encoder is given."""
    source = source_word.strip().lower()
    if not source:
        raise ValueError("the source word is empty")
    words = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(caption)]
    if not words:
        raise ValueError(f"the caption {caption!r} has no words")
    for w, a, b in words:
        if w.lower() == source:
            return WordMatch(w, a, b, "exact")
    for w, a, b in words:
        if source in w.lower():
            return WordMatch(w, a, b, "substring")
    if prompts is None:
        raise ValueError(f"the source word {source_word!r} does not occur in {caption!r}, and no "
                         "text encoder was given to find the closest word")
    ref = _word_embedding(prompts, source)
    scores = [float(torch.nn.functional.cosine_similarity(ref, _word_embedding(prompts, w), dim=0))
              for w, _, _ in words]
    k = max(range(len(words)), key=lambda i: scores[i])
    w, a, b = words[k]
    return WordMatch(w, a, b, "embedding", scores[k])


@torch.no_grad()
def _word_embedding(prompts: Any, word: str) -> torch.Tensor:
    ids = prompts.tokenizer(word, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"word {word!r} has no tokens")
    table = prompts.text_encoder.get_input_embeddings().weight
    return table[torch.as_tensor(ids, device=table.device)].float().mean(0).cpu()


def replace_matched_word(caption: str, match: WordMatch, source_word: str, target_word: str) -> str:
    """The target prompt: the matched word replaced by ``target_word`` (for a substring match,
    only the source word inside it, as the authors do)."""
    if match.how == "substring":
        inner = re.sub(re.escape(source_word.strip()), target_word, match.word, count=1,
                       flags=re.IGNORECASE)
        return caption[:match.start] + inner + caption[match.end:]
    return caption[:match.start] + target_word + caption[match.end:]


def image_digest(image: Any) -> str:
    """SHA-256 of an image's RGB pixels (path, PIL image or array), so a cached inversion is tied
    to the picture, not to its file name."""
    import numpy as np
    from PIL import Image

    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        with Image.open(image) as im:
            arr = np.asarray(im.convert("RGB"))
    elif isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"))
    else:
        arr = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)
    h = hashlib.sha256(str(arr.shape).encode() + str(arr.dtype).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def save_inversion(path: str | os.PathLike, x_T: torch.Tensor, caption: str,
                   key: dict) -> None:
    """Writes ``x_T`` with its caption and ``key`` (model, settings, image hash) atomically."""
    save_checkpoint(path, 1, 1, {**key, "caption": caption}, {"x_T": x_T})


def load_inversion(path: str | os.PathLike, key: dict,
                   caption: str | None = None) -> tuple[torch.Tensor, str]:
    """Reads a cached inversion made with the same ``key`` (and ``caption``, when given);
    returns ``(x_T, caption)``. A cache of another image, model or setting, or a damaged file,
    is a :class:`~syncsde.checkpoint.CheckpointError` that says what differs."""
    from safetensors import safe_open

    import json

    stored_caption = caption
    if stored_caption is None:  # take the caption from the file, then verify everything
        try:
            with safe_open(os.fspath(path), "pt") as f:
                header = json.loads(f.metadata()["syncsde_checkpoint"])
            stored_caption = header["run"]["caption"]
        except Exception:  # noqa: BLE001 - load_checkpoint below names the damage
            stored_caption = ""
    _, tensors = load_checkpoint(path, {**key, "caption": stored_caption}, 1,
                                 what="inversion cache")
    if "x_T" not in tensors:
        from syncsde.checkpoint import CheckpointError

        raise CheckpointError(path, "no x_T tensor", "inversion cache")
    return tensors["x_T"], stored_caption


class Captioner:
    """BLIP captioning (transformers): ``Captioner.from_pretrained(id_or_folder)`` or from a
    model and processor; ``captioner(image) -> str``. The authors caption with BLIP base (COCO);
    its transformers port is ``Salesforce/blip-image-captioning-base``."""

    def __init__(self, model: Any, processor: Any, max_new_tokens: int = 30,
                 prompt: str | None = None):
        self.model = model.eval()
        self.processor = processor
        self.max_new_tokens = int(max_new_tokens)
        self.prompt = prompt

    @classmethod
    def from_pretrained(cls, name: str = "Salesforce/blip-image-captioning-base",
                        local_files_only: bool | None = None, **kw: Any) -> "Captioner":
        from transformers import BlipForConditionalGeneration, BlipProcessor

        opts = {} if local_files_only is None else {"local_files_only": local_files_only}
        try:
            model = BlipForConditionalGeneration.from_pretrained(name, **opts)
            processor = BlipProcessor.from_pretrained(name, **opts)
        except OSError as e:
            from syncsde.models import ModelNotAvailableError

            raise ModelNotAvailableError(name, f"the BLIP captioner {name!r} is not available "
                                               f"here ({str(e).splitlines()[0]}); download it "
                                               f"with `hf download {name}` or pass "
                                               "--source-prompt") from None
        return cls(model, processor, **kw)

    @torch.no_grad()
    def __call__(self, image: Any) -> str:
        from syncsde.denoisers.diffusers_models import load_image

        img = load_image(image) if not hasattr(image, "convert") else image.convert("RGB")
        args: Sequence[Any] = (img,) if self.prompt is None else (img, self.prompt)
        inputs = self.processor(*args, return_tensors="pt")
        dev = next(self.model.parameters()).device
        inputs = {k: v.to(dev) for k, v in inputs.items()}
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        text = self.processor.decode(out[0], skip_special_tokens=True).strip()
        return " ".join(text.split())
