r"""Denoising loss of composed canvas scores on the true panorama law of the scenes model.

A composition strategy turns the model's window scores into one canvas score. Its quality, before
any sampling, is how close that canvas score is to the score of the true law of wide scenes,
which the procedural generator gives (its law is stationary along x, so a wide scene is the
true law of a panorama of the prompt). Denoising score matching measures it without knowing the
true score: for ``X_t = sqrt(abar_t) X_0 + sqrt(1 - abar_t) eps`` with ``X_0`` a generator panorama,

    L(rule, t) = E || eps_rule(X_t, t) - eps ||^2 / (C H W)
               = E || eps_rule - eps*(X_t, t) ||^2 / (C H W) + (a constant of t),

``eps* = E[eps | X_t]`` the true posterior mean, so at each ``t`` the rule with the lower loss
is the one closer to the true canvas score (the constant, the same for all rules, is large at
small ``t`` where the generator's iid pixel noise cannot be told from ``eps``). Rules:

- ``multidiffusion``: the windows' average, ``A[eps_W]`` (the canvas eps that MultiDiffusion
  and SyncTweedies step with: both average affine functions of eps on consistent views);
- ``regiongraph``: ``sum_R c_R P_R^T eps(P_R X)`` (docs/composition.md, eq. (1); on a 1-D chain
  of windows the same as ``collage``);
- ``single_window``: each window's eps on its own crop (the model on the law it was trained
  for).

``best_mix`` is the least-squares weight ``beta`` of ``A + beta (RG - A)`` per ``t``: 0 means the
average is already the best combination of the two, 1 the region graph.

    python -m syncsde.scenes.composed_loss --n 16 --json docs/scenes_composed_loss.json
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

__all__ = ["composed_denoising_loss", "main"]

TIMESTEPS = (20, 50, 100, 200, 300, 500, 700, 900)


def encode_prompts(pipe, prompts: list[str]) -> torch.Tensor:
    """The scenes pipeline's text-encoder states for ``prompts``."""
    ids = pipe.tokenizer(prompts, padding="max_length", truncation=True,
                         max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
    return pipe.text_encoder(ids)[0]


@torch.no_grad()
def composed_denoising_loss(pipe, prompt: str = "a sunset over the sea with mountains and a sun",
                            width: int = 256, window: int = 32, stride: int = 16, n: int = 16,
                            seed: int = 20_000, timesteps=TIMESTEPS) -> dict:
    """``L(rule, t)`` of the module docstring on ``n`` generator panoramas ``32 x width`` of
    ``prompt`` (streams ``seed``, ``seed + 1``), windows ``32 x window`` every ``stride`` columns
    (conditional eps, no guidance: the true law is the conditional one). Noise is seeded by
    ``(seed, sample, t)``."""
    from syncsde.scenes.generator import render, scene_rng
    from syncsde.scenes.vocab import parse_prompt
    from syncsde.strategies_regiongraph import region_groups
    from syncsde.views import WindowViews

    H = int(pipe.unet.config.sample_size)
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if not all(isinstance(t, int) and 0 <= t < len(pipe.scheduler.alphas_cumprod)
               for t in timesteps):
        raise ValueError(f"timesteps must be ints in [0, {len(pipe.scheduler.alphas_cumprod)}), "
                         f"got {timesteps!r}")
    views = WindowViews.grid((3, H, width), (H, window), (H, stride))
    groups = region_groups(views)
    spec_law = parse_prompt(prompt)
    emb = encode_prompts(pipe, [prompt])
    abar = pipe.scheduler.alphas_cumprod.float()

    def model(x, t):
        m = x.shape[0]
        return pipe.unet(x, torch.full((m,), t, dtype=torch.long),
                         encoder_hidden_states=emb.expand(m, -1, -1)).sample

    names = ("multidiffusion", "regiongraph", "single_window")
    sums = {k: np.zeros(len(timesteps)) for k in names}
    cross, dd = np.zeros(len(timesteps)), np.zeros(len(timesteps))
    for i in range(n):
        img = render(spec_law.sample_spec(scene_rng(seed, i)), H, width, scene_rng(seed + 1, i)).image
        x0 = torch.from_numpy(img).permute(2, 0, 1).contiguous() * 2 - 1
        for j, t in enumerate(timesteps):
            g = torch.Generator().manual_seed((int(seed) * 1_000_003 + i) * 1009 + int(t))
            noise = torch.randn(x0.shape, generator=g)
            xt = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * noise
            eps_w = model(views.forward(xt), t)
            average = views.average(eps_w)
            graph = views.adjoint(eps_w)
            for sub, coef, _ in groups:
                graph += sub.adjoint(model(sub.forward(xt), t) * coef.reshape(-1, 1, 1, 1))
            sums["multidiffusion"][j] += float(((average - noise) ** 2).mean())
            sums["regiongraph"][j] += float(((graph - noise) ** 2).mean())
            sums["single_window"][j] += float(((eps_w - views.forward(noise)) ** 2).mean())
            d = graph - average
            cross[j] += float((d * (noise - average)).sum())
            dd[j] += float((d * d).sum())
    out = {"prompt": prompt, "width": width, "window": window, "stride": stride, "n": n,
           "seed": seed, "timesteps": list(timesteps)}
    out.update({k: (v / n).tolist() for k, v in sums.items()})
    out["best_mix"] = [float(c / e) if e > 0 else 0.0 for c, e in zip(cross, dd)]
    return out


def main(argv=None) -> int:
    from syncsde.atomic import atomic_write_json
    from syncsde.scenes.model import load_scenes_pipeline

    ap = argparse.ArgumentParser(prog="python -m syncsde.scenes.composed_loss",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="pipeline folder (default: the shipped one)")
    ap.add_argument("--n", type=int, default=16, help="generator panoramas")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--stride", type=int, default=16)
    ap.add_argument("--seed", type=int, default=20_000)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.n < 1 or a.stride < 1 or a.width < 32:
        ap.error("--n and --stride must be >= 1 and --width >= 32")
    try:
        res = composed_denoising_loss(load_scenes_pipeline(a.model), width=a.width,
                                      stride=a.stride, n=a.n, seed=a.seed)
    except (FileNotFoundError, ValueError) as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    print("    t | multidiffusion | regiongraph | window | best mix")
    for j, t in enumerate(res["timesteps"]):
        print(f"{t:5d} | {res['multidiffusion'][j]:.5f} | {res['regiongraph'][j]:.5f} | "
              f"{res['single_window'][j]:.5f} | {res['best_mix'][j]:.3f}")
    if a.json:
        atomic_write_json(a.json, res)
    else:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
