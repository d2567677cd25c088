"""Training the scenes model and its classifier (CPU, deterministic, resumable).

    python -m syncsde.scenes.train diffusion  --out /tmp/scenes_diffusion --steps 3000
    python -m syncsde.scenes.train classifier --out /tmp/scenes_classifier --steps 1500
    python -m syncsde.scenes.train install --diffusion /tmp/scenes_diffusion --classifier /tmp/scenes_classifier

Determinism: batch ``s`` is scenes ``s*B .. s*B+B-1`` of the generator stream ``--seed`` (each
scene's own NumPy generator), the diffusion noise and timesteps of step ``s`` come from a torch
generator seeded with ``(seed, s)``, and ``torch.set_num_threads`` is fixed; so a run resumed
from a checkpoint continues exactly as an uninterrupted one. Checkpoints (every
``--checkpoint-every`` steps and at the end) are ``checkpoint.safetensors`` (model, EMA,
optimizer tensors) plus ``checkpoint.json`` (step, settings, optimizer hyper-parameters), both
written atomically; nothing is pickled.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from syncsde.atomic import atomic_path, atomic_write_json

__all__ = ["train_diffusion", "train_classifier", "install", "export_checkpoint", "main",
           "diffusion_batch",
           "classifier_batch"]


# ---- data -------------------------------------------------------------------------------------
def diffusion_batch(seed: int, start: int, n: int, p_uncond: float = 0.1, size: int = 32,
                    width: int | None = None):
    """Images ``[n, 3, size, width]`` (``width`` defaults to ``size``) in [-1, 1] and their
    prompts ("" with prob ``p_uncond``). The generator's law is stationary along x, so a scene
    rendered ``width`` columns wide has the law of a ``width``-column crop of a wider scene with
    the same prompt (syncsde/scenes/generator.py)."""
    from syncsde.scenes.generator import random_spec, render, scene_rng
    from syncsde.scenes.vocab import random_prompt

    imgs, prompts = [], []
    for i in range(start, start + n):
        rng = scene_rng(seed, i)
        spec = random_spec(rng)
        prompt = random_prompt(spec, rng)
        if rng.random() < p_uncond:
            prompt = ""
        imgs.append(render(spec, size, size if width is None else int(width), rng).image)
        prompts.append(prompt)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return x * 2 - 1, prompts


def classifier_batch(seed: int, start: int, n: int, size: int = 32, noise: bool = True):
    """Images ``[n, 3, size, size]`` in [0, 1] (with random pixel noise for robustness when
    ``noise``) and label vectors ``[n, 15]``."""
    from syncsde.scenes.generator import labels_vector, random_spec, render, scene_rng

    imgs, labels = [], []
    for i in range(start, start + n):
        rng = scene_rng(seed, i)
        sc = render(random_spec(rng), size, size, rng)
        img = sc.image
        if noise:
            img = np.clip(img + rng.normal(0, rng.uniform(0, 0.06), img.shape), 0, 1)
        imgs.append(img.astype(np.float32))
        labels.append(labels_vector(sc.labels()))
    return (torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(np.stack(labels)))


# ---- checkpoints ------------------------------------------------------------------------------
def _save_checkpoint(folder: Path, step: int, tensors: dict, meta: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "checkpoint.safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
    atomic_write_json(folder / "checkpoint.json", dict(meta, step=step))


def _load_checkpoint(folder: Path):
    from safetensors.torch import load_file

    j, s = folder / "checkpoint.json", folder / "checkpoint.safetensors"
    if not (j.is_file() and s.is_file()):
        return None, None
    return json.loads(j.read_text()), load_file(str(s))


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _prefixed(prefix: str, sd: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in sd.items()}


def _unprefixed(prefix: str, tensors: dict) -> dict:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _lr(step: int, base: float, warmup: int, total: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))  # cosine to 10%


# ---- diffusion --------------------------------------------------------------------------------
class _DiffusionModel(torch.nn.Module):
    def __init__(self, unet, text_encoder):
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder


def train_diffusion(out: str | Path, steps: int = 3000, batch: int = 64, lr: float = 1e-3,
                    seed: int = 0, threads: int = 1, checkpoint_every: int = 200,
                    ema_decay: float = 0.999, p_uncond: float = 0.1, progress: bool = True,
                    log=print, stop_at: int | None = None, finish_at: int | None = None,
                    init: str | None = None, pooled_prompt: bool = True,
                    offset_noise: float = 0.0, widths: tuple[int, ...] | None = None) -> dict:
    """Trains the UNet and the text encoder jointly on eps-prediction MSE (cosine schedule,
    uniform timesteps, prompt dropout ``p_uncond`` for classifier-free guidance); keeps an EMA
    of the weights (decay ``min(ema_decay, (1+s)/(10+s))``). Writes ``out/pipeline`` (EMA
    weights, ``save_pretrained``) at the end. ``stop_at``: checkpoint and return after that
    many steps (an interruption; calling again with the same settings resumes). ``finish_at``:
    end the run after that many steps (the learning-rate schedule still follows ``steps``) and
    write the pipeline as if it had finished. ``init``: start from the weights of a pipeline
    folder (a second stage). ``offset_noise``: add ``offset_noise * N(0, 1)`` per image and
    channel, constant over pixels, to the training noise (Guttenberg's "offset noise"): the
    low-frequency content of ``x_t`` then no longer tells the image's overall colour at high
    noise, so the model has to take it from the prompt (time of day is the sky's colour)."""
    from tqdm.auto import tqdm

    from syncsde.scenes.model import ScenesPipeline, build_pipeline

    torch.set_num_threads(int(threads))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = build_pipeline(out / "tokenizer", seed, init, pooled_prompt)
    model = _DiffusionModel(pipe.unet, pipe.text_encoder)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    abar = pipe.scheduler.alphas_cumprod.float()
    settings = dict(kind="diffusion", steps=steps, batch=batch, lr=lr, seed=seed, threads=threads,
                    ema_decay=ema_decay, p_uncond=p_uncond, init=None if init is None else str(init),
                    pooled_prompt=bool(pooled_prompt))
    if offset_noise:   # only when used, so older checkpoints resume with their settings
        settings["offset_noise"] = float(offset_noise)
    if widths:
        widths = [int(w) for w in widths]
        if any(w < 8 or w % 8 for w in widths):
            raise ValueError(f"widths must be multiples of 8 (the UNet halves three times), got {widths}")
        settings["widths"] = widths
    meta, tensors = _load_checkpoint(out)
    step, elapsed = 0, 0.0
    if meta is not None:
        if {k: meta.get(k) for k in settings} != settings:
            raise ValueError(f"checkpoint in {str(out)!r} was made with other settings "
                             f"{ {k: meta.get(k) for k in settings} }; use another --out")
        model.load_state_dict(_unprefixed("model", tensors))
        ema = _unprefixed("ema", tensors)
        _load_optimizer(opt, tensors, meta)
        step, elapsed = int(meta["step"]), float(meta.get("elapsed_s", 0.0))
        log(f"resuming from step {step} ({elapsed:.0f}s so far)")
    token_cache: dict[str, torch.Tensor] = {}

    def tokens(prompts):
        for p in prompts:
            if p not in token_cache:
                token_cache[p] = pipe.tokenizer(p, padding="max_length", truncation=True,
                                                max_length=pipe.tokenizer.model_max_length,
                                                return_tensors="pt").input_ids[0]
        return torch.stack([token_cache[p] for p in prompts])

    def checkpoint():
        ot, om = _optimizer_tensors(opt)
        t = dict(_prefixed("model", model.state_dict()), **_prefixed("ema", ema), **ot)
        _save_checkpoint(out, step, t, dict(settings, elapsed_s=elapsed, **om, losses=losses[-50:]))

    losses: list[float] = []
    bar = tqdm(total=steps, initial=step, disable=not progress, desc="diffusion", mininterval=5)
    model.train()
    t_start = time.perf_counter() - elapsed
    last = steps if finish_at is None else min(int(finish_at), steps)
    while step < last:
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + step)
        width = None
        if widths:
            width = widths[int(torch.randint(0, len(widths), (1,), generator=g))]
        x0, prompts = diffusion_batch(seed, step * batch, batch, p_uncond, width=width)
        t = torch.randint(0, len(abar), (batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        if offset_noise:
            noise = noise + offset_noise * torch.randn((batch, x0.shape[1], 1, 1), generator=g)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise  # q(x_t | x_0), Ho et al. eq. 4
        for grp in opt.param_groups:
            grp["lr"] = _lr(step, lr, 200, steps)
        emb = model.text_encoder(tokens(prompts))[0]
        pred = model.unet(xt, t, encoder_hidden_states=emb).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        d = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
                else:
                    ema[k].copy_(v)
        losses.append(loss.item())
        step += 1
        elapsed = time.perf_counter() - t_start
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            log(f"step {step} loss {np.mean(losses[-50:]):.4f} elapsed {elapsed:.0f}s")
        if step % checkpoint_every == 0 or step == last or step == stop_at:
            checkpoint()
        if step == stop_at and step < steps:
            bar.close()
            return dict(settings, stopped_at=step, elapsed_s=elapsed)
    bar.close()
    # the shipped pipeline carries the EMA weights
    model.load_state_dict(ema)
    final = ScenesPipeline(model.unet, model.text_encoder, pipe.tokenizer, pipe.scheduler)
    save_pipeline(final, out / "pipeline")
    summary = dict(settings, finished_at=step, elapsed_s=elapsed,
                   final_loss=float(np.mean(losses[-50:])) if losses else meta and meta.get("losses", [None])[-1])
    atomic_write_json(out / "summary.json", summary)
    return summary


def save_pipeline(pipe, folder: str | Path) -> Path:
    """``save_pretrained`` (safetensors) plus the tokenizer's ``vocab.json`` / ``merges.txt`` (so
    both the slow and fast ``CLIPTokenizer`` load it)."""
    from syncsde.scenes.vocab import write_tokenizer_files

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    write_tokenizer_files(tmp / "tokenizer")
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)  # the folder appears complete or not at all
    return folder


# ---- classifier -------------------------------------------------------------------------------
def train_classifier(out: str | Path, steps: int = 1500, batch: int = 64, lr: float = 2e-3,
                     seed: int = 1, threads: int = 1, checkpoint_every: int = 250,
                     progress: bool = True, log=print, heldout: int = 2000,
                     finish_at: int | None = None) -> dict:
    """Trains :class:`~syncsde.scenes.classifier.SceneClassifier` on generator scenes (stream
    ``seed``); evaluates on ``heldout`` (2000) held-out scenes (stream ``seed + 1000``) and writes
    ``out/classifier``."""
    from tqdm.auto import tqdm

    from syncsde.scenes.classifier import (GROUPS, SceneClassifier, classifier_loss,
                                           save_classifier)

    torch.set_num_threads(int(threads))
    out = Path(out)
    torch.manual_seed(seed)
    model = SceneClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    settings = dict(kind="classifier", steps=steps, batch=batch, lr=lr, seed=seed, threads=threads)
    meta, tensors = _load_checkpoint(out)
    step, elapsed = 0, 0.0
    if meta is not None:
        if {k: meta.get(k) for k in settings} != settings:
            raise ValueError(f"checkpoint in {str(out)!r} was made with other settings; use another --out")
        model.load_state_dict(_unprefixed("model", tensors))
        _load_optimizer(opt, tensors, meta)
        step, elapsed = int(meta["step"]), float(meta.get("elapsed_s", 0.0))
        log(f"resuming from step {step}")
    losses: list[float] = []
    bar = tqdm(total=steps, initial=step, disable=not progress, desc="classifier", mininterval=5)
    t_start = time.perf_counter() - elapsed
    model.train()
    last = steps if finish_at is None else min(int(finish_at), steps)
    while step < last:
        x, y = classifier_batch(seed, step * batch, batch)
        for grp in opt.param_groups:
            grp["lr"] = _lr(step, lr, 100, steps)
        loss = classifier_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        elapsed = time.perf_counter() - t_start
        bar.update(1)
        if step % 50 == 0:
            log(f"step {step} loss {np.mean(losses[-50:]):.4f} elapsed {elapsed:.0f}s")
        if step % checkpoint_every == 0 or step == last:
            ot, om = _optimizer_tensors(opt)
            _save_checkpoint(out, step, dict(_prefixed("model", model.state_dict()), **ot),
                             dict(settings, elapsed_s=elapsed, **om))
    bar.close()
    model.eval()
    x, y = classifier_batch(seed + 1000, 0, int(heldout), noise=False)
    with torch.no_grad():
        logits = model(x)
    acc = {name: float((logits[:, a:b].argmax(1) == y[:, a:b].argmax(1)).float().mean())
           for name, (a, b) in GROUPS.items()}
    acc["flags"] = float(((logits[:, 10:] > 0) == (y[:, 10:] > 0.5)).float().mean())
    log(f"held-out accuracy: {acc}")
    save_classifier(model, out / "classifier", {"heldout_accuracy": acc, "train_seconds": elapsed,
                                                "steps": steps, "finished_at": step})
    summary = dict(settings, finished_at=step, elapsed_s=elapsed, heldout_accuracy=acc)
    atomic_write_json(out / "summary.json", summary)
    return summary


def export_checkpoint(run: str | Path, out: str | Path | None = None) -> Path:
    """Writes the EMA weights of the last checkpoint of a diffusion run as a pipeline folder
    (``run/pipeline_step<k>``; e.g. to look at a model while it trains)."""
    from syncsde.scenes.model import ScenesPipeline, build_pipeline

    run = Path(run)
    meta, tensors = _load_checkpoint(run)
    if meta is None or meta.get("kind") != "diffusion":
        raise FileNotFoundError(f"no diffusion checkpoint in {str(run)!r}")
    pipe = build_pipeline(run / "tokenizer", int(meta["seed"]),
                          pooled_prompt=meta.get("pooled_prompt", True))
    model = _DiffusionModel(pipe.unet, pipe.text_encoder)
    model.load_state_dict(_unprefixed("ema", tensors))
    out = Path(out) if out is not None else run / f"pipeline_step{meta['step']}"
    return save_pipeline(ScenesPipeline(model.unet, model.text_encoder, pipe.tokenizer,
                                        pipe.scheduler), out)


def install(diffusion: str | None, classifier: str | None) -> None:
    """Copies trained results into the package (``syncsde/scenes/weights``)."""
    import shutil

    from syncsde.scenes.model import CLASSIFIER_DIR, PIPELINE_DIR

    for src, dst in ((diffusion and Path(diffusion) / "pipeline", PIPELINE_DIR),
                     (classifier and Path(classifier) / "classifier", CLASSIFIER_DIR)):
        if src is None:
            continue
        if not src.is_dir():
            raise FileNotFoundError(f"{str(src)!r} does not exist (train first)")
        tmp = dst.with_name(dst.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(src, tmp)
        for f in ("summary.json",):
            s = src.parent / f
            if s.is_file():
                shutil.copy(s, tmp / f"training_{f}")
        for f in tmp.rglob("*"):  # package data is world-readable (temp files are 0600)
            f.chmod(0o755 if f.is_dir() else 0o644)
        if dst.exists():
            shutil.rmtree(dst)
        tmp.rename(dst)
        print(f"installed {src} -> {dst}")


def _int_list(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SystemExit(f"--widths: expected comma-separated integers, got {text!r}") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m syncsde.scenes.train",
                                 description="Train the scenes diffusion model / classifier (CPU).")
    sub = ap.add_subparsers(dest="what", required=True)
    d = sub.add_parser("diffusion")
    d.add_argument("--out", required=True)
    d.add_argument("--steps", type=int, default=3000)
    d.add_argument("--batch", type=int, default=64)
    d.add_argument("--lr", type=float, default=1e-3)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=1)
    d.add_argument("--checkpoint-every", type=int, default=200)
    d.add_argument("--init", default=None, help="start from this pipeline folder's weights")
    d.add_argument("--no-pooled-prompt", action="store_true",
                   help="cross-attention only (no pooled prompt in the time embedding)")
    d.add_argument("--finish-at", type=int, default=None,
                   help="end after this many steps (the schedule still follows --steps)")
    d.add_argument("--offset-noise", type=float, default=0.0,
                   help="per-image, per-channel constant noise added to the training noise")
    d.add_argument("--widths", default=None,
                   help="comma-separated training widths, e.g. 16,24,32,32 (one per step; "
                        "repeats weight a width); default: square 32x32 only")
    d.add_argument("--quiet", action="store_true")
    c = sub.add_parser("classifier")
    c.add_argument("--out", required=True)
    c.add_argument("--steps", type=int, default=1500)
    c.add_argument("--batch", type=int, default=64)
    c.add_argument("--lr", type=float, default=2e-3)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--checkpoint-every", type=int, default=250)
    c.add_argument("--finish-at", type=int, default=None,
                   help="end after this many steps (the schedule still follows --steps)")
    c.add_argument("--quiet", action="store_true")
    e = sub.add_parser("export", help="EMA weights of a diffusion run's last checkpoint -> pipeline")
    e.add_argument("--run", required=True)
    e.add_argument("--out", default=None)
    i = sub.add_parser("install", help="copy trained results into syncsde/scenes/weights")
    i.add_argument("--diffusion", default=None)
    i.add_argument("--classifier", default=None)
    a = ap.parse_args(argv)
    log = (lambda s: None) if getattr(a, "quiet", False) else (lambda s: print(s, flush=True))
    if a.what == "diffusion":
        try:
            s = train_diffusion(a.out, a.steps, a.batch, a.lr, a.seed, a.threads, a.checkpoint_every,
                                progress=not a.quiet, log=log, finish_at=a.finish_at, init=a.init,
                                pooled_prompt=not a.no_pooled_prompt, offset_noise=a.offset_noise,
                                widths=_int_list(a.widths))
        except ValueError as exc:   # bad settings: one line, not a traceback
            print(f"error: {exc}", file=sys.stderr)
            return 2
    elif a.what == "classifier":
        s = train_classifier(a.out, a.steps, a.batch, a.lr, a.seed, a.threads, a.checkpoint_every,
                             progress=not a.quiet, log=log, finish_at=a.finish_at)
    elif a.what == "export":
        print(export_checkpoint(a.run, a.out))
        return 0
    else:
        install(a.diffusion, a.classifier)
        return 0
    print(json.dumps(s, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
