"""The exact-score texture benchmark: a Gaussian field on a mesh's texture, seen by cameras.

Canonical law. On the texels the views reach (``S``, all hit by some view), a Gaussian field
``X_S ~ N(mu, Sigma)`` with ``Sigma_ab = k(|p_a - p_b|)`` over the 3D points ``p`` of the texel
centres (so the field is continuous across UV seams; ``k`` squared-exponential) and mean
``mu_a = m . p_a``; every view's background pixels are independent N(0, 1) slots of the canvas.
View ``i`` sees ``y_i = R_i X`` (nearest-texel render), so its exact law is
``N(R_i mu, R_i Sigma R_i^T)`` (singular where pixels share a texel) and its exact denoiser is
known. The target of a strategy is the texture law itself: the texture it bakes from its final
views is scored by the Frechet distance W2^2 (fitted on many samples) to ``N(mu, Sigma)``; the
oracle runs the same sampler steps with the exact score of ``N(mu, Sigma)``.

Seam statistics (1 is ideal): over pairs of texels that are neighbours on the surface,
``E[(x_a - x_b)^2]`` of the baked textures over its value under the target law, for pairs
across a UV seam (different islands) and pairs across a view boundary (same island, different
first view hitting them).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from syncsde.metrics import frechet_to_law
from syncsde.mesh.camera import Camera, default_cameras, rasterize_uv
from syncsde.mesh.io import Mesh, mesh_from_arrays
from syncsde.mesh.views import TextureEarlierViews, TextureViews
from syncsde.priors import GaussianLaw, PriorDenoiser
from syncsde.sampler import Problem, SamplingSchedule, sample
from syncsde.tasks.texture import texture_strategy
from syncsde.views import WindowViews

#: label -> (texture strategy, options of texture_strategy)
STRATEGIES: dict[str, tuple[str, dict]] = {
    "independent": ("independent", {}),
    "syncsde (authors: 5 t/1000, t>200)": ("syncsde", {"inv_lambda": 5.0}),
    "syncsde (5 t/1000, all steps)": ("syncsde", {"inv_lambda": 5.0, "t_min": -1.0}),
    "syncmvd (texture x_s average)": ("syncmvd", {}),
    "syncmvd (all steps)": ("syncmvd", {"t_min": -1.0}),
    "synctweedies (texture x0 average)": ("synctweedies", {}),
    "synctweedies (all steps)": ("synctweedies", {"t_min": -1.0}),
}


def bench_mesh(kind: str) -> Mesh:
    import trimesh

    if kind == "cube":
        b = trimesh.creation.box()
        return mesh_from_arrays(b.vertices, b.faces, name="cube")
    if kind == "sphere":
        s = trimesh.creation.icosphere(1)
        return mesh_from_arrays(s.vertices, s.faces, name="sphere")
    raise ValueError(f"unknown benchmark mesh {kind!r}; expected 'cube' or 'sphere'")


def texel_points(mesh: Mesh, T: int) -> np.ndarray:
    """``[T*T, 3]`` 3D point of every texel centre (NaN outside every face)."""
    face, bary = rasterize_uv(mesh, T)
    f = np.maximum(face, 0).reshape(-1)
    p = np.einsum("nk,nkc->nc", bary.reshape(-1, 3).astype(np.float64), mesh.vertices[mesh.faces][f])
    p[face.reshape(-1) < 0] = np.nan
    return p


def hit_points(V: TextureViews) -> np.ndarray:
    """``[T*T, 3]`` mean 3D point of the pixels that hit each texel (NaN where none: a texel
    whose centre lies just outside its face can still be hit by the nearest-texel render)."""
    T = V.T
    acc, cnt = np.zeros((T * T, 3)), np.zeros(T * T)
    for r, R in zip(V.rasters, V.render):
        rows = np.repeat(np.arange(R.n_rows), np.diff(R.indptr.numpy()))
        cols = R.indices.numpy()
        tex = cols < T * T
        np.add.at(acc, cols[tex], r.points.reshape(-1, 3)[rows[tex]])
        np.add.at(cnt, cols[tex], 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return acc / cnt[:, None]


@dataclass
class TextureBench:
    name: str
    views: TextureViews
    problem: Problem
    denoiser: PriorDenoiser
    target: GaussianLaw          # law of the texture on the active texels
    active: np.ndarray           # [D] texel indices (flat, into T*T)
    seam_pairs: dict = field(default_factory=dict)  # name -> (a [K], b [K]) into active


def build(kind: str = "sphere", texture_size: int = 16, view_size: int = 12,
          cameras: list[Camera] | None = None, lengthscale: float = 0.6,
          mean_direction=(0.8, 0.0, -0.4)) -> TextureBench:
    mesh = bench_mesh(kind)
    cams = default_cameras() if cameras is None else cameras
    V = TextureViews(mesh, cams, view_size, texture_size, channels=1)
    T, L = V.T, V.L
    hit = np.zeros(T * T, bool)
    for w in V.bake_weight:
        hit |= w.numpy()[:T * T] > 0
    active = np.nonzero(hit)[0]
    pts = hit_points(V)[active]
    d2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    sigma = np.exp(-0.5 * d2 / lengthscale ** 2) + 1e-6 * np.eye(len(active))
    mu = pts @ np.asarray(mean_direction, np.float64)
    # full canonical law on the canvas: active texels ~ field, background slots ~ N(0, 1)
    mu_full = np.zeros(L)
    mu_full[active] = mu
    cov_full = np.zeros((L, L))
    cov_full[np.ix_(active, active)] = sigma
    cov_full[np.arange(T * T, L), np.arange(T * T, L)] = 1.0
    laws = {}
    for i in range(V.num_views):
        R = V.render[i].to_dense()  # [P, L]
        laws[f"view{i}"] = GaussianLaw(R @ mu_full, R @ cov_full @ R.T, (1, *V.size))
    sched = SamplingSchedule.preset("sd", 2)  # only the abar table is used
    den = PriorDenoiser(laws, sched.abar)
    prob = Problem(V, [f"view{i}" for i in range(V.num_views)],
                   correlation=TextureEarlierViews(), init="independent")
    target = GaussianLaw(mu, sigma, (1, 1, len(active)))
    bench = TextureBench(kind, V, prob, den, target, active)
    # neighbouring texel pairs on the surface
    nn = np.sqrt(np.sort(d2 + np.diag(np.full(len(active), np.inf)), 1)[:, 0])
    r0 = 1.5 * float(np.median(nn))
    a, b = np.nonzero(np.triu(d2 < r0 * r0, 1))
    isl = V.texel_island[active]
    owner = np.full(len(active), -1)
    for i in reversed(range(V.num_views)):
        owner[V.bake_weight[i].numpy()[active] > 0] = i
    bench.seam_pairs["uv seam"] = (a[isl[a] != isl[b]], b[isl[a] != isl[b]])
    vb = (isl[a] == isl[b]) & (owner[a] != owner[b])
    bench.seam_pairs["view boundary"] = (a[vb], b[vb])
    return bench


def baked_texture(bench: TextureBench, views: torch.Tensor) -> torch.Tensor:
    """``[n, D]`` baked texture on the active texels from final views ``[N, n, 1, h, w]``."""
    canvas = bench.views.average(views)  # [n, 1, 1, L]
    return canvas[:, 0, 0, torch.from_numpy(bench.active)]


def seam_stats(bench: TextureBench, x: torch.Tensor) -> dict:
    x = x.to(torch.float64).numpy()
    mu = bench.target.mean_vector.reshape(-1).numpy()
    cov = bench.target.covariance.numpy()
    out = {}
    for name, (a, b) in bench.seam_pairs.items():
        if len(a) == 0:
            continue
        got = ((x[:, a] - x[:, b]) ** 2).mean()
        want = (cov[a, a] + cov[b, b] - 2 * cov[a, b] + (mu[a] - mu[b]) ** 2).mean()
        out[name] = float(got / want)
    return out


def evaluate(bench: TextureBench, x: torch.Tensor) -> dict:
    out = {"w2": frechet_to_law(x.to(torch.float64), bench.target)}
    out.update(seam_stats(bench, x))
    return out


def run(bench: TextureBench, n: int = 2000, steps: int = 30, eta: float = 1.0, seed: int = 0,
        strategies: dict | None = None, log=print) -> dict:
    schedule = SamplingSchedule.preset("sd", steps)
    res = {}
    for label, (name, opts) in (strategies or STRATEGIES).items():
        t0 = time.perf_counter()
        r = sample(bench.problem, bench.denoiser, texture_strategy(name, **opts), schedule,
                   eta=eta, seed=seed, batch=n, progress=False, dtype=torch.float64)
        res[label] = evaluate(bench, baked_texture(bench, r.views))
        log(f"  {bench.name:7s} {label:38s} " + _fmt(res[label])
            + f"  ({time.perf_counter() - t0:.1f}s)")
    D = len(bench.active)
    oracle = PriorDenoiser({"target": bench.target}, schedule.abar)
    prob = Problem(WindowViews((1, 1, D), (1, D), [(0, 0)]), ["target"], init="independent")
    r = sample(prob, oracle, "independent", schedule, eta=eta, seed=seed, batch=n,
               progress=False, dtype=torch.float64)
    res["oracle"] = evaluate(bench, r.output.reshape(n, D))
    log(f"  {bench.name:7s} {'oracle (exact score of the texture law)':38s} " + _fmt(res["oracle"]))
    return res


def _fmt(r: dict) -> str:
    s = f"W2={r['w2']:8.3f}"
    for k in ("uv seam", "view boundary"):
        if k in r:
            s += f"  {k}={r[k]:5.2f}"
    return s


def print_table(results: dict, file=None) -> None:
    file = sys.stdout if file is None else file  # looked up now, not at import
    meshes = list(results)
    labels = list(next(iter(results.values())))
    print("| strategy | " + " | ".join(f"{m}: W2 (uv seam, view boundary)" for m in meshes) + " |",
          file=file)
    print("|---|" + "---|" * len(meshes), file=file)
    for lab in labels:
        cells = []
        for m in meshes:
            r = results[m][lab]
            cells.append(f"{r['w2']:.3f} ({r.get('uv seam', math.nan):.2f}, "
                         f"{r.get('view boundary', math.nan):.2f})")
        print(f"| {lab} | " + " | ".join(cells) + " |", file=file)


__all__ = ["STRATEGIES", "TextureBench", "build", "run", "evaluate", "baked_texture",
           "seam_stats", "print_table", "texel_points", "hit_points", "bench_mesh"]
