"""Exact-score benchmark cases of the tasks built through the extension API: tileable (torus),
360 panorama (equirectangular) and near/far hybrid images.

Each case has a Gaussian target law of the canvas, exact per-view denoisers, and an oracle that
runs the same DDIM steps with the exact score of the target on the whole canvas (as in
:mod:`syncsde.benchmark`, whose strategy table it reuses). Scores: the Frechet distance W2^2 of
the output to the target (fitted on many samples) and a per-task statistic:

- ``tileable``: a stationary field on the torus, ``k_per(d) = sum_{m,n} k(d + (m H, n W))``
  (squared exponential, periodised so it is positive definite); every window has the same law
  (the kernel restricted to the window). Statistic: the wrap seam (jump across the left/right
  and top/bottom edges over interior jumps; 1 = seamless) and the same against boundaries of the
  same window phase.
- ``panorama360``: a field on the sphere, ``k(p, q) = exp(-|p - q|^2 / (2 l^2))`` over the unit
  directions of the pixel centres (positive definite: a kernel of R^3 restricted), mean
  ``0.8 * height`` (bright sky, dark ground); view i sees ``A_i X`` (bilinear), so its exact law
  is ``N(A_i mu, A_i Sigma A_i^T)``. Statistic: the longitude-wrap seam, and view mismatch
  ``E|y_i - A_i X|^2 / E|y_i|^2`` (how far the final views are from views of the output).
- ``hybrid``: target ``p(X) ∝ N(X; mu_B, Sigma_B) N(D X; mu_A, Sigma_A)`` (a near field B on the
  canvas, whose windows have B's window law, times the far law A of the downsampled canvas):
  precision ``Sigma_B^-1 + D^T Sigma_A^-1 D``, mean ``Lambda^-1 (Sigma_B^-1 mu_B + D^T Sigma_A^-1 mu_A)``.
  Statistics: W2 of the far reading ``D X`` to the target's law of ``D X`` and (mean over
  windows) of each window to the target's law of that window: where the error sits, by scale.

    python -m syncsde.benchmark_tasks --samples 4000 --steps 20 --json out.json
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from syncsde.benchmark import STRATEGIES as BASE_STRATEGIES
from syncsde.metrics import frechet_to_law, seam_statistic
from syncsde.priors import GaussianLaw, GaussianPrior, PriorDenoiser
from syncsde.sampler import Problem, SamplingSchedule, sample
from syncsde.tasks.hybrid import hybrid_problem
from syncsde.tasks.panorama360 import panorama_problem, pixel_directions
from syncsde.tasks.tileable import tileable_problem, wrap_seam_statistic
from syncsde.views import WindowViews

#: label -> (strategy name, options); collage needs a 1-D chain of windows, which none has
STRATEGIES = {k: v for k, v in BASE_STRATEGIES.items() if k != "collage"}


@dataclass
class Case:
    name: str
    problem: Problem
    denoiser: Any
    target: GaussianLaw                      # law of the whole canvas
    stats: Callable[[torch.Tensor, torch.Tensor], dict]  # (outputs [n, C, H, W], final views) -> stats
    syncsde_options: dict = field(default_factory=dict)  # "syncsde_tuned": best of a 1/lambda sweep


def periodic_se(H: int, W: int, lengthscale: float, images: int = 3, jitter: float = 1e-6) -> torch.Tensor:
    """Covariance ``[H W, H W]`` of the periodised squared-exponential field on an H x W torus."""
    r, c = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    dr = r.reshape(-1)[:, None] - r.reshape(-1)[None, :]
    dc = c.reshape(-1)[:, None] - c.reshape(-1)[None, :]
    k = np.zeros(dr.shape)
    for m in range(-images, images + 1):
        for n in range(-images, images + 1):
            k += np.exp(-((dr + m * H) ** 2 + (dc + n * W) ** 2) / (2 * lengthscale ** 2))
    return torch.from_numpy(k + jitter * np.eye(H * W))


def build_tileable(schedule) -> Case:
    C, H, W, win, stride = 1, 12, 12, 6, 3
    cov = periodic_se(H, W, 1.5)
    target = GaussianLaw(torch.zeros(H * W, dtype=torch.float64), cov, (C, H, W))
    idx = (np.arange(win)[:, None] * W + np.arange(win)[None, :]).reshape(-1)
    window = GaussianLaw(torch.zeros(win * win, dtype=torch.float64), cov[idx][:, idx], (C, win, win))
    prob = tileable_problem((C, H, W), win, stride, cond="field")

    def stats(out, y):
        return {f"wrap_{k}": v for k, v in wrap_seam_statistic(out, stride).items()}

    return Case("tileable", prob, PriorDenoiser({"field": window}, schedule.abar), target, stats,
                {"inv_lambda": 10.0})


def view_mismatch(views, y: torch.Tensor, canvas: torch.Tensor) -> float:
    """``E|y_i - f_i(X)|^2 / E|y_i|^2`` over views and samples (0: the views are the output's)."""
    d = views.forward(canvas.to(y.dtype)) - y
    return float((d.double() ** 2).mean() / (y.double() ** 2).mean())


def build_panorama360(schedule) -> Case:
    C, H, s = 1, 8, 6
    W = 2 * H
    dirs = torch.from_numpy(pixel_directions(H, W).reshape(-1, 3))
    d2 = ((dirs[:, None, :] - dirs[None, :, :]) ** 2).sum(-1)
    cov = torch.exp(-d2 / (2 * 0.6 ** 2)) + 1e-6 * torch.eye(H * W, dtype=torch.float64)
    mean = 0.8 * dirs[:, 1]
    target = GaussianLaw(mean, cov, (C, H, W))
    n = len(panorama_problem(C, H, s).views.cameras)
    prob = panorama_problem(C, H, s, cond=[f"view{i}" for i in range(n)])
    views = prob.views
    laws = {}
    for i in range(n):
        A = torch.from_numpy(views.to_dense(i))
        laws[f"view{i}"] = GaussianLaw(A @ mean, A @ cov @ A.T + 1e-6 * torch.eye(s * s, dtype=torch.float64),
                                       (C, s, s))

    def stats(out, y):
        ext = torch.cat([out, out[..., :1]], -1).double()
        return {"wrap_seam": seam_statistic(ext, [W]), "view_mismatch": view_mismatch(views, y, out)}

    return Case("panorama360", prob, PriorDenoiser(laws, schedule.abar), target, stats,
                {"inv_lambda": 1.0})


def build_hybrid(schedule) -> Case:
    C, s, f, stride = 1, 8, 2, 4
    S = f * s
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    far = GaussianPrior.field("se", (s, s), lengthscale=1.5, mean=1.5 * xx, jitter=1e-3)
    near = GaussianPrior.field("se", (s, s), lengthscale=1.0, jitter=1e-3)
    canvas_b = GaussianPrior.field("se", (S, S), lengthscale=1.0, jitter=1e-3)
    prob = hybrid_problem(C, s, "far", "near", f, stride)
    D = torch.from_numpy(prob.views.to_dense(0))
    prec_b = torch.linalg.inv(canvas_b.covariance)
    prec_a = torch.linalg.inv(far.covariance)
    lam = prec_b + D.T @ prec_a @ D
    cov = torch.linalg.inv(lam)
    cov = 0.5 * (cov + cov.T)
    mean = cov @ (prec_b @ canvas_b.mean_vector + D.T @ prec_a @ far.mean_vector)
    target = GaussianLaw(mean, cov, (C, S, S))

    views = prob.views
    marginals = [views.to_dense(i) for i in range(views.num_views)]  # A_i: target marginals A_i mu, A_i Sigma A_i^T

    def stats(out, y):
        x = out.double().reshape(len(out), -1)
        w2 = [frechet_to_law(x @ torch.from_numpy(A).T, torch.from_numpy(A) @ mean,
                             torch.from_numpy(A) @ cov @ torch.from_numpy(A).T) for A in marginals]
        return {"far_w2": w2[0], "near_w2": float(np.mean(w2[1:]))}

    return Case("hybrid", prob, PriorDenoiser({"far": far, "near": near}, schedule.abar), target,
                stats, {"inv_lambda": 1.0})


CASES: dict[str, Callable] = {"tileable": build_tileable, "panorama360": build_panorama360,
                              "hybrid": build_hybrid}


def run_case(case: Case, schedule, n: int, seed: int = 0, strategies: dict | None = None,
             log: Callable[[str], None] = lambda s: None) -> dict:
    """Every strategy and the oracle on ``case``: label -> {"w2": ..., stats...}."""
    res = {}
    law = case.target
    for label, (name, opts) in (strategies or STRATEGIES).items():
        if label == "syncsde_tuned":
            opts = dict(opts, **case.syncsde_options)
        t0 = time.perf_counter()
        r = sample(case.problem, case.denoiser, name, schedule, seed=seed, batch=n, progress=False,
                   **opts)
        out = r.output
        res[label] = {"w2": frechet_to_law(out.reshape(n, -1).double(), law.mean_vector, law.covariance),
                      **case.stats(out, r.views)}
        log(f"  {case.name:12s} {label:16s} " + " ".join(f"{k}={v:.3f}" for k, v in res[label].items())
            + f" ({time.perf_counter() - t0:.1f}s)")
    shape = tuple(law.event_shape)
    oracle = Problem(WindowViews(shape, shape[1:], [(0, 0)]), ["target"], init="independent")
    r = sample(oracle, PriorDenoiser({"target": law}, schedule.abar), "independent", schedule,
               seed=seed, batch=n, progress=False)
    out = r.output
    stats = case.stats(out, case.problem.views.forward(out))  # the oracle's views are its canvas'
    res["oracle"] = {"w2": frechet_to_law(out.reshape(n, -1).double(), law.mean_vector, law.covariance),
                     **stats}
    log(f"  {case.name:12s} {'oracle':16s} " + " ".join(f"{k}={v:.3f}" for k, v in res["oracle"].items()))
    return res


def table(results: dict) -> str:
    """Markdown: one table per case, strategies as rows."""
    lines = []
    for name, res in results.items():
        keys = list(next(iter(res.values())))
        lines += [f"**{name}**", "", "| strategy | " + " | ".join(keys) + " |",
                  "|---|" + "---|" * len(keys)]
        for label, r in res.items():
            lines.append(f"| {label} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m syncsde.benchmark_tasks",
                                 description="exact-score benchmark of the tileable, 360-panorama and hybrid tasks")
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    names = [c for c in args.cases.split(",") if c]
    bad = [c for c in names if c not in CASES]
    if bad or args.samples < 2 or args.steps < 1:
        ap.error(f"--cases must name some of {list(CASES)} (got {bad}); --samples >= 2, --steps >= 1")
    schedule = SamplingSchedule.preset("sd", args.steps)
    results = {c: run_case(CASES[c](schedule), schedule, args.samples, args.seed,
                           log=lambda s: print(s, flush=True)) for c in names}
    print()
    print(table(results))
    if args.json:
        from syncsde.atomic import atomic_write_json

        atomic_write_json(args.json, results, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
