"""Gate figures of the scenes model: prompt agreement of plain samples and KID against the
generator, both read by the scene classifier.

    python -m syncsde.scenes.evaluate --n 256 --json docs/scenes_gate.json
    python -m syncsde.scenes.evaluate --crop-loss --n 64      # denoising loss on narrow crops

- ``attribute_accuracy``: over the attributes each prompt fixes (time of day, ground, ridge
  count), the fraction the classifier reads in the sample (the gate asks >= 0.8);
- ``kid_model``: KID (classifier features) between the samples and generator images of the same
  prompts, ``kid_reference``: between two independent generator sets of the same size. KID is
  reported with the unbiased MMD^2 estimator (``*_unbiased``, ~0 for equal laws) and with the
  biased (V-statistic) one, whose value for two sets of one law is a positive floor ~1/n: the
  gate asks ``kid_model <= 2 kid_reference`` on the biased estimator, i.e. the model's
  samples are as hard to tell from the generator's as a second generator set, up to 2x.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from syncsde.scenes.classifier import kid, predict_attributes, prompt_agreement
from syncsde.scenes.generator import random_spec, render, scene_rng
from syncsde.scenes.vocab import parse_prompt, prompt_for

__all__ = ["gate_prompts", "generator_images", "sample_images", "gate", "mmd2_biased",
           "crop_denoising_loss", "main"]


def gate_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` canonical prompts of specs drawn from the training prior."""
    rng = np.random.default_rng(seed)
    return [prompt_for(random_spec(rng)) for _ in range(n)]


def generator_images(prompts, seed: int, size: int = 32) -> torch.Tensor:
    """One generator image per prompt (free attributes drawn by the prompt's law): ``[n, 3, H, W]``
    in [0, 1]."""
    out = []
    for i, p in enumerate(prompts):
        rng = scene_rng(seed, i)
        spec = parse_prompt(p).sample_spec(rng)
        out.append(render(spec, size, size, rng).image)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def sample_images(pipe, prompts, seed: int = 0, steps: int | None = None,
                  guidance_scale: float | None = None, batch: int = 64) -> torch.Tensor:
    """Plain (unsynchronized) DDIM samples of the pipeline, one per prompt, ``[n, 3, H, W]``."""
    from syncsde.scenes.model import DEFAULTS

    steps = steps or DEFAULTS["num_inference_steps"]
    gs = DEFAULTS["guidance_scale"] if guidance_scale is None else guidance_scale
    out = []
    for i in range(0, len(prompts), batch):
        g = torch.Generator().manual_seed(int(seed) * 7919 + i)
        out.append(pipe(prompts[i:i + batch], num_inference_steps=steps, guidance_scale=gs,
                        generator=g))
    return torch.cat(out)


def mmd2_biased(a: np.ndarray, b: np.ndarray) -> float:
    """The biased (V-statistic) MMD^2 with KID's cubic kernel, all pairs included."""
    d = a.shape[1]

    def k(x, y):
        return (x @ y.T / d + 1.0) ** 3

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean())


@torch.no_grad()
def gate(pipe, classifier, n: int = 128, seed: int = 0, steps: int | None = None,
         guidance_scale: float | None = None) -> dict:
    prompts = gate_prompts(n, seed)
    t0 = time.perf_counter()
    samples = sample_images(pipe, prompts, seed, steps, guidance_scale)
    t_sample = time.perf_counter() - t0
    gen_a = generator_images(prompts, 10_000 + seed)
    gen_b = generator_images(prompts, 20_000 + seed)
    preds = predict_attributes(classifier, samples)
    ok = tot = 0
    per = {"time": [0, 0], "ground": [0, 0], "ridges": [0, 0]}
    for p, pr in zip(prompts, preds):
        spec = parse_prompt(p)
        for name in per:
            want = getattr(spec, name)
            if want is not None:
                per[name][1] += 1
                per[name][0] += int(pr[name] == want)
        a, b = prompt_agreement(pr, spec)
        ok += a
        tot += b
    gen_preds = predict_attributes(classifier, gen_a)
    gok = sum(prompt_agreement(pr, parse_prompt(p))[0] for p, pr in zip(prompts, gen_preds))
    f_s = classifier.features(samples).numpy()
    f_a = classifier.features(gen_a).numpy()
    f_b = classifier.features(gen_b).numpy()
    return {
        "n": n, "seed": seed, "steps": steps, "guidance_scale": guidance_scale,
        "attribute_accuracy": ok / tot,
        "per_attribute_accuracy": {k: v[0] / max(v[1], 1) for k, v in per.items()},
        "classifier_accuracy_on_generator": gok / tot,
        "kid_model": mmd2_biased(f_s, f_a), "kid_reference": mmd2_biased(f_b, f_a),
        "kid_model_unbiased": kid(f_s, f_a, subsets=20, seed=seed)[0],
        "kid_reference_unbiased": kid(f_b, f_a, subsets=20, seed=seed)[0],
        "seconds_per_sample": t_sample / n,
    }


@torch.no_grad()
def crop_denoising_loss(pipe, widths=(8, 16, 24, 32), n: int = 64, seed: int = 10_000,
                        timesteps=(100, 300, 500, 700, 900), batch: int = 64) -> dict:
    """The model's eps-prediction MSE on held-out generator scenes ``32 x w`` for each width
    ``w`` (the law of a ``w``-column crop of a wider scene: the generator is stationary along x),
    averaged over ``timesteps`` with fixed noise: how well the model knows the marginal law of
    the regions (window overlaps) that the region graph and sequential windows evaluate. Scenes
    come from generator stream ``seed`` (training uses streams 0-3), with their prompts."""
    from syncsde.scenes.composed_loss import encode_prompts
    from syncsde.scenes.train import diffusion_batch

    abar = pipe.scheduler.alphas_cumprod.float()
    out = {}
    for w in widths:
        total, count = 0.0, 0
        for start in range(0, n, batch):
            m = min(batch, n - start)
            x0, prompts = diffusion_batch(seed, start, m, p_uncond=0.0, width=int(w))
            emb = encode_prompts(pipe, prompts)
            for t in timesteps:
                g = torch.Generator().manual_seed(int(seed) * 1009 + int(t) * 31 + start)
                noise = torch.randn(x0.shape, generator=g)
                a = abar[int(t)]
                xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
                tt = torch.full((m,), int(t), dtype=torch.long)
                pred = pipe.unet(xt, tt, encoder_hidden_states=emb).sample
                total += float(((pred - noise) ** 2).mean()) * m
                count += m
        out[int(w)] = total / count
    return out


def main(argv=None) -> int:
    from syncsde.atomic import atomic_write_json
    from syncsde.scenes.classifier import load_classifier
    from syncsde.scenes.model import load_scenes_pipeline

    ap = argparse.ArgumentParser(prog="python -m syncsde.scenes.evaluate")
    ap.add_argument("--model", default=None, help="pipeline folder (default: the shipped one)")
    ap.add_argument("--classifier", default=None)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance-scale", type=float, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--crop-loss", action="store_true",
                    help="report the denoising loss on 32 x w scenes (w = 8, 16, 24, 32) instead")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.crop_loss:
        res = {"crop_loss": crop_denoising_loss(load_scenes_pipeline(a.model), n=a.n, seed=10_000 + a.seed)}
        print(json.dumps(res, indent=1))
        if a.json:
            atomic_write_json(a.json, res)
        return 0
    res = gate(load_scenes_pipeline(a.model), load_classifier(a.classifier), a.n, a.seed, a.steps,
               a.guidance_scale)
    res["gate_passed"] = bool(res["attribute_accuracy"] >= 0.8
                              and res["kid_model"] <= 2 * res["kid_reference"])
    print(json.dumps(res, indent=1))
    if a.json:
        atomic_write_json(a.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
