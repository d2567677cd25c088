"""Product-of-experts strategy, the cylinder kernel, the mixture field denoiser and a smoke run
of every benchmark family."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from syncsde.benchmark_families import FAMILIES, build_cases, gaussian_table, mode_corr, run_case
from syncsde.metrics import frechet_to_law
from syncsde.priors import (GaussianMixturePrior, GaussianPrior, MixtureFieldDenoiser, PriorDenoiser,
                            field_covariance, gaussian_product)
from syncsde.sampler import SamplingSchedule, sample
from syncsde.strategies import make_strategy
from syncsde.tasks import ambiguous_problem, wide_problem

F64 = torch.float64


def _illusion(sched):
    a = GaussianPrior.field("se", (4, 4), lengthscale=1.0, mean=0.6)
    b = GaussianPrior.field("se", (4, 4), lengthscale=2.0, mean=-0.6)
    prob = ambiguous_problem((1, 4, 4), "rot90_cw", "A", "B")
    idx = torch.arange(16, dtype=F64).reshape(1, 4, 4)
    perm = prob.views.forward_one(1, idx).reshape(-1).round().long()
    return prob, PriorDenoiser({"A": a, "B": b}, sched.abar), gaussian_product(a, b, perm)


def test_poe_without_correctors_is_noise_average_or_the_summed_score():
    sched = SamplingSchedule.preset("sd", 6)
    prob, den, _ = _illusion(sched)
    a = sample(prob, den, "poe", sched, seed=1, batch=4, dtype=F64, progress=False,
               corrector_steps=0, combine="mean")
    b = sample(prob, den, "noise_average", sched, seed=1, batch=4, dtype=F64, progress=False)
    torch.testing.assert_close(a.output, b.output, rtol=0, atol=1e-12)
    # "sum": one DDIM step with eps_q = eps_A(x) + P^T eps_B(P x) (NumPy, exact Gaussian eps)
    abar = sched.abar
    one = SamplingSchedule(abar, [600], final_abar=float(abar[300]))
    x = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    prob.initial_canvas = x
    r = sample(prob, den, "poe", one, seed=0, dtype=F64, progress=False, corrector_steps=0)
    at, as_ = float(abar[600]), float(abar[300])
    P = np.zeros((16, 16))
    idx = prob.views.forward_one(1, torch.arange(16, dtype=F64).reshape(1, 4, 4)).reshape(-1).round().long()
    P[np.arange(16), idx.numpy()] = 1.0                    # (P x)[k] = x[idx[k]]

    def eps_np(prior, v):
        S = prior.spatial_covariance.numpy()
        mu = prior.mean_vector.numpy()
        return math.sqrt(1 - at) * np.linalg.solve(at * S + (1 - at) * np.eye(16), v - math.sqrt(at) * mu)

    xv = x.numpy().reshape(-1)
    e = eps_np(den.priors["A"], xv) + P.T @ eps_np(den.priors["B"], P @ xv)
    cx = math.sqrt(as_ / at)
    ce = cx * math.sqrt(1 - at) - math.sqrt(1 - as_)
    np.testing.assert_allclose(r.canvas.numpy().reshape(-1), cx * xv - ce * e, atol=1e-10)


def test_poe_correctors_approach_the_product_law():
    """Annealed Langevin on the product path ends near p_A(x) p_B(P x): far closer than the
    averaged eps (Visual Anagrams) and SyncSDE, at 4x their model calls (sampled Frechet, same n)."""
    sched = SamplingSchedule.preset("sd", 10)
    prob, den, target = _illusion(sched)
    n = 6000

    def w2(name, **kw):
        out = sample(prob, den, name, sched, seed=0, batch=n, dtype=F64, progress=False, **kw).output
        return frechet_to_law(out.reshape(n, -1), target.mean_vector, target.covariance)

    w_poe = w2("poe", corrector_steps=3, snr=0.5)
    w_avg, w_sde = w2("noise_average"), w2("syncsde", inv_lambda=5.0)
    assert w_poe < 0.25 * min(w_avg, w_sde)


def test_poe_bad_options_and_views():
    for kw in ({"corrector_steps": -1}, {"snr": 0.0}, {"combine": "max"}, {"corrector_from": 2.0}):
        with pytest.raises(ValueError):
            make_strategy("poe", **kw)
    sched = SamplingSchedule.preset("sd", 2)
    prob = wide_problem((1, 4, 12), window=4, stride=4, cond="f")
    den = PriorDenoiser({"f": GaussianPrior.field("se", (4, 4), lengthscale=1.0)}, sched.abar)
    with pytest.raises(ValueError, match="full-image"):
        sample(prob, den, "poe", sched, progress=False)


def test_cylinder_kernel_windows_are_restrictions_of_the_canvas():
    H, W = 3, 10
    canvas = field_covariance("se", (H, W), lengthscale=2.0, period=W).numpy()
    assert np.linalg.eigvalsh(canvas).min() > 0
    win = field_covariance("se", (H, 4), lengthscale=2.0, period=W).numpy()
    cols = [8, 9, 0, 1]  # a window across the wrap
    px = [r * W + c for r in range(H) for c in cols]
    np.testing.assert_allclose(canvas[np.ix_(px, px)], win, atol=1e-12)
    # chord distance by hand for one pair: columns 0 and 7 on a loop of 10, rows 0 and 2
    chord = (W / math.pi) * math.sin(math.pi * 7 / W)
    assert canvas[0, 2 * W + 7] == pytest.approx(math.exp(-(chord ** 2 + 4) / (2 * 4.0)))
    with pytest.raises(ValueError, match="period"):
        field_covariance("se", (2, 4), period=0.0)


def test_mixture_field_denoiser_is_the_window_marginal_of_the_canvas_mixture():
    abar = SamplingSchedule.preset("sd", 5).abar
    comps = [({"kernel": "se", "lengthscale": 1.5, "mean": s}, w) for s, w in ((1.0, 0.3), (-1.0, 0.7))]
    den = MixtureFieldDenoiser({"m": comps}, abar)
    canvas = den.prior("m", (2, 9))
    cols = [2, 3, 4, 5]
    px = [r * 9 + c for r in range(2) for c in cols]
    ref = GaussianMixturePrior(
        [GaussianPrior(c.mean_vector[px].reshape(1, 2, 4), c.spatial_covariance[px][:, px])
         for c in canvas.components], [0.3, 0.7])
    x = torch.randn(5, 1, 2, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(den(x, 500, "m"), ref.eps(x, float(abar[500])), rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_runs_and_scores(family):
    sched = SamplingSchedule.preset("sd", 3)
    case = build_cases([family], sched.abar)[0]
    strategies = {"multidiffusion": ("multidiffusion", {}), "regiongraph": ("regiongraph", {}),
                  "poe K1": ("poe", {"corrector_steps": 1})}
    res = run_case(case, sched, strategies, samples=64)
    assert "oracle" in res and "multidiffusion" in res
    key = "w2" if case.gaussian else "energy"
    assert all(math.isfinite(r[key]) for lab, r in res.items() if key in r)
    assert res["multidiffusion"]["inputs_per_step"] == case.problem.views.num_views
    if family in ("grid", "long", "cylinder"):
        assert res["regiongraph"]["inputs_per_step"] > case.problem.views.num_views
    if family == "illusion":
        assert res["poe K1"]["inputs_per_step"] == 4 and "w2_sampled" in res["poe K1"]
    if case.gaussian:
        assert "| " + case.name + " |" in gaussian_table({case.name: {"family": family, "strategies": res}})


def test_mode_corr_sees_one_mode_per_canvas():
    sched = SamplingSchedule.preset("sd", 2)
    case = build_cases(["mixture"], sched.abar)[0]
    x = case.target.sample(400, generator=torch.Generator().manual_seed(0))
    assert mode_corr(case, x) > 0.5
    # the same windows with independent modes: each half from a different sample
    y = x.clone()
    W = y.shape[-1]
    y[..., W // 2:] = x.roll(1, 0)[..., W // 2:]
    assert abs(mode_corr(case, y)) < 0.15
