"""Plain-English prompts over the scene vocabulary, and the CLIP tokenizer files for it.

:func:`parse_prompt` maps a prompt such as ``"a sunset over the sea with mountains"`` or
``"a snowy night with a moon"`` to a :class:`~syncsde.scenes.generator.PromptSpec`: the attributes
it fixes (time, ground, ridge layers, object kinds). Attributes a prompt leaves out are drawn
uniformly by the generator (time, ground) or absent (ridges, objects). An unknown word raises
:class:`UnknownWordError`, whose message lists every word the scenes know.

:func:`random_prompt` writes a prompt for a spec (several phrasings, used in training), and
:func:`write_tokenizer_files` writes ``vocab.json`` / ``merges.txt`` for a
``transformers.CLIPTokenizer`` in which every vocabulary word is one token (so the editing
task's cross-attention map of a word is one column).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from syncsde.scenes.generator import GROUNDS, LAND_ONLY, OBJECTS, TIMES, WATER_ONLY, SceneSpec

__all__ = ["WORDS", "UnknownWordError", "PromptSpec", "parse_prompt", "prompt_for",
           "random_prompt", "vocabulary", "write_tokenizer_files", "make_tokenizer", "build_bpe",
           "MAX_TOKENS"]

MAX_TOKENS = 24  # tokenizer model_max_length (BOS + words + EOS, padded)

TIME_WORDS = {"day": "day", "daytime": "day", "sunny": "day", "sunset": "sunset",
              "dusk": "sunset", "evening": "sunset", "night": "night", "nighttime": "night"}
GROUND_WORDS = {"grass": "grass", "grassy": "grass", "meadow": "grass", "field": "grass",
                "sea": "sea", "ocean": "sea", "water": "sea", "desert": "desert", "sandy": "desert",
                "dunes": "desert", "snow": "snow", "snowy": "snow"}
RIDGE_WORDS = {"hills": 1, "hill": 1, "ridge": 1, "mountain": 1, "mountains": 2, "ridges": 2}
OBJECT_WORDS = {"sun": "celestial", "moon": "celestial", "tree": "trees", "trees": "trees",
                "forest": "trees", "house": "houses", "houses": "houses", "village": "houses",
                "balloon": "balloons", "balloons": "balloons", "boat": "boats", "boats": "boats",
                "sailboat": "boats", "stars": None}
FILLER_WORDS = ("a", "an", "the", "over", "with", "and", "at", "on", "in", "of", "under", "by",
                "above", "some", "scene", "landscape", "view", "sky", "few", "many")

WORDS: tuple[str, ...] = tuple(sorted(set(TIME_WORDS) | set(GROUND_WORDS) | set(RIDGE_WORDS)
                                      | set(OBJECT_WORDS) | set(FILLER_WORDS)))


class UnknownWordError(ValueError):
    """A prompt word outside the scene vocabulary (the message lists the vocabulary)."""


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt fixes: ``time`` / ``ground`` None means drawn uniformly."""

    time: str | None
    ground: str | None
    ridges: int
    objects: tuple[str, ...]

    def sample_spec(self, rng: np.random.Generator) -> SceneSpec:
        """A :class:`SceneSpec` of this prompt's law (free attributes drawn uniformly among those
        compatible with the objects)."""
        time = self.time or TIMES[rng.integers(len(TIMES))]
        grounds = [g for g in GROUNDS if not ((g == "sea" and any(o in LAND_ONLY for o in self.objects))
                                              or (g != "sea" and any(o in WATER_ONLY for o in self.objects)))]
        ground = self.ground or grounds[rng.integers(len(grounds))]
        return SceneSpec(time, ground, self.ridges, self.objects)


def vocabulary() -> str:
    return ", ".join(WORDS)


def _words(prompt: str) -> list[str]:
    return [w for w in re.split(r"[\s,.;!]+", prompt.lower()) if w]


def parse_prompt(prompt: str, argument: str = "prompt") -> PromptSpec:
    """The attributes of a plain-English scenes prompt; raises :class:`UnknownWordError` /
    ``ValueError`` (naming ``argument``) for unknown words or contradictions."""
    if not isinstance(prompt, str):
        raise TypeError(f"{argument} must be a string, got {type(prompt).__name__}")
    words = _words(prompt)
    unknown = [w for w in words if w not in WORDS]
    if unknown:
        raise UnknownWordError(
            f"{argument} {prompt!r}: unknown word{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(w) for w in dict.fromkeys(unknown))}. The scenes model knows: "
            f"{vocabulary()}.")
    times = {TIME_WORDS[w] for w in words if w in TIME_WORDS}
    grounds = {GROUND_WORDS[w] for w in words if w in GROUND_WORDS}
    if len(times) > 1:
        raise ValueError(f"{argument} {prompt!r}: names more than one time of day {sorted(times)}")
    if len(grounds) > 1:
        raise ValueError(f"{argument} {prompt!r}: names more than one ground {sorted(grounds)}")
    ridges = max([RIDGE_WORDS[w] for w in words if w in RIDGE_WORDS], default=0)
    objs = tuple(dict.fromkeys(OBJECT_WORDS[w] for w in words if OBJECT_WORDS.get(w)))
    time = times.pop() if times else None
    if "sun" in words and time == "night":
        raise ValueError(f"{argument} {prompt!r}: a sun at night; use 'moon'")
    if "moon" in words and time in ("day", "sunset"):
        raise ValueError(f"{argument} {prompt!r}: a moon by {time}; use 'sun' or 'night'")
    if "moon" in words or "stars" in words:
        time = time or "night"
    if "sun" in words:
        time = time or "day"
    ground = grounds.pop() if grounds else None
    if ground == "sea" and any(o in LAND_ONLY for o in objs):
        raise ValueError(f"{argument} {prompt!r}: trees and houses need land, not the sea")
    if ground is not None and ground != "sea" and "boats" in objs:
        raise ValueError(f"{argument} {prompt!r}: boats need the sea as the ground")
    if "boats" in objs and any(o in LAND_ONLY for o in objs):
        raise ValueError(f"{argument} {prompt!r}: boats (on the sea) and trees / houses (on land)")
    if "boats" in objs:
        ground = "sea"
    objs = tuple(sorted(objs, key=OBJECTS.index))
    return PromptSpec(time, ground, ridges, objs)


# ---- writing prompts (training) -----------------------------------------------------------
_TIME_PHRASES = {"day": ["a day", "a sunny day", "daytime", "day"],
                 "sunset": ["a sunset", "sunset", "dusk", "an evening"],
                 "night": ["a night", "night", "nighttime"]}
_GROUND_PHRASES = {"grass": ["over the grass", "over a grassy field", "on a meadow", "over grass"],
                   "sea": ["over the sea", "over the ocean", "on the water", "over sea"],
                   "desert": ["over the desert", "in the desert", "over sandy dunes", "over desert"],
                   "snow": ["over the snow", "on the snow", "in the snow", "over snow"]}
_GROUND_ADJ = {"grass": "grassy", "desert": "sandy", "snow": "snowy"}
_RIDGE_PHRASES = {1: ["hills", "a ridge", "a mountain", "hill"], 2: ["mountains", "ridges"]}
_OBJECT_PHRASES = {"trees": ["trees", "a forest", "a tree", "some trees"],
                   "houses": ["houses", "a village", "a house", "some houses"],
                   "balloons": ["a balloon", "balloons"], "boats": ["a boat", "boats", "a sailboat"]}


def prompt_for(spec: SceneSpec | PromptSpec) -> str:
    """The canonical prompt of a spec: ``"a sunset over the sea with mountains and a boat"``."""
    parts = []
    t = spec.time
    parts.append({"day": "a day", "sunset": "a sunset", "night": "a night", None: "a landscape"}[t])
    if spec.ground:
        parts.append(f"over the {spec.ground}")
    extras = []
    if spec.ridges:
        extras.append("hills" if spec.ridges == 1 else "mountains")
    for o in spec.objects:
        if o == "celestial":
            extras.append("a moon" if t == "night" else "a sun")
        else:
            extras.append({"trees": "trees", "houses": "houses", "balloons": "a balloon",
                           "boats": "a boat"}[o])
    if extras:
        parts.append("with " + " and ".join(extras))
    return " ".join(parts)


def random_prompt(spec: SceneSpec, rng: np.random.Generator, drop_time: float = 0.1,
                  drop_ground: float = 0.1) -> str:
    """A random phrasing of ``spec`` (time / ground words each left out with the given
    probability, so that the model also learns the law of partial prompts)."""
    use_time = rng.random() >= drop_time or "celestial" in spec.objects
    use_ground = (rng.random() >= drop_ground or spec.ground == "sea" and "boats" in spec.objects)
    head = ""
    if use_time:
        tp = _TIME_PHRASES[spec.time]
        head = tp[rng.integers(len(tp))]
        if use_ground and spec.ground in _GROUND_ADJ and rng.random() < 0.25:
            adj = _GROUND_ADJ[spec.ground]
            head = f"a {adj} {head.split()[-1]}"
            use_ground = False
    else:
        head = ["a landscape", "a view", "a scene"][rng.integers(3)]
    parts = [head]
    if use_ground:
        gp = _GROUND_PHRASES[spec.ground]
        parts.append(gp[rng.integers(len(gp))])
    extras = []
    if spec.ridges:
        rp = _RIDGE_PHRASES[spec.ridges]
        extras.append(rp[rng.integers(len(rp))])
    for o in spec.objects:
        if o == "celestial":
            extras.append("a moon" if spec.time == "night" else "a sun")
        else:
            op = _OBJECT_PHRASES[o]
            extras.append(op[rng.integers(len(op))])
    rng.shuffle(extras)
    if extras:
        parts.append("with " + " and ".join(extras))
    return " ".join(parts)


# ---- tokenizer files ------------------------------------------------------------------------
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bpe(word: str, ranks: dict) -> list[str]:
    """CLIP's BPE on one word (the same algorithm as ``CLIPTokenizer.bpe``)."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        best, _ = min(pairs)
        if best == 1 << 30:
            break
        a, b = next((parts[i], parts[i + 1]) for r, i in pairs if r == best)
        merged, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and parts[i] == a and parts[i + 1] == b:
                merged.append(a + b)
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def build_bpe(words=WORDS) -> tuple[dict, list[tuple[str, str]]]:
    """``(vocab, merges)`` for CLIP BPE in which every word of ``words`` is a single token:
    left-to-right merge chains, then repair merges for any word whose chain is broken by
    another word's merges (appended at lower priority until every word is one token)."""
    merges: list[tuple[str, str]] = []
    seen = set()

    def add(a, b):
        if (a, b) not in seen:
            seen.add((a, b))
            merges.append((a, b))

    for w in words:
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        cur = parts[0]
        for p in parts[1:]:
            add(cur, p)
            cur = cur + p
    for _ in range(20):
        ranks = {m: i for i, m in enumerate(merges)}
        broken = [(w, _bpe(w, ranks)) for w in words if len(_bpe(w, ranks)) > 1]
        if not broken:
            break
        for _w, parts in broken:
            cur = parts[0]
            for p in parts[1:]:
                add(cur, p)
                cur = cur + p
    else:  # pragma: no cover
        raise RuntimeError("could not make every word a single BPE token")
    tokens = [BOS, EOS]
    letters = sorted({c for w in words for c in w} | set("abcdefghijklmnopqrstuvwxyz"))
    tokens += letters + [c + "</w>" for c in letters]
    for a, b in merges:
        tokens.append(a + b)
    vocab: dict[str, int] = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    return vocab, merges


def write_tokenizer_files(folder: str | Path) -> Path:
    """Writes ``vocab.json``, ``merges.txt`` (atomically) and returns the folder; load with
    ``CLIPTokenizer(vocab_file, merges_file, model_max_length=MAX_TOKENS)`` or
    ``from_pretrained`` after ``save_pretrained``."""
    from syncsde.atomic import atomic_write_text

    folder = Path(folder)
    vocab, merges = build_bpe()
    atomic_write_text(folder / "vocab.json", json.dumps(vocab, indent=0))
    atomic_write_text(folder / "merges.txt",
                      "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return folder


def make_tokenizer(folder: str | Path):
    """A ``CLIPTokenizer`` over the scene vocabulary (files written into ``folder``)."""
    from transformers import CLIPTokenizer

    folder = write_tokenizer_files(folder)
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                         model_max_length=MAX_TOKENS, pad_token=EOS)
