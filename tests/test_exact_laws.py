"""Exact output laws: the affine push-forward against Monte Carlo sampling of the same strategy
and against a NumPy composition of the DDIM maps; the law distances against brute force."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from syncsde.exact_laws import energy_distance, gaussian_kl, gaussian_w2, push_forward_law
from syncsde.priors import (FieldDenoiser, GaussianLaw, GaussianMixturePrior, GaussianPrior,
                            PriorDenoiser, field_covariance)
from syncsde.sampler import Problem, SamplingSchedule, sample
from syncsde.tasks import ambiguous_problem, wide_problem
from syncsde.views import WindowViews

F64 = torch.float64


def _mc_moments(problem, den, strategy, sched, n, **opts):
    r = sample(problem, den, strategy, sched, seed=3, batch=n, dtype=F64, progress=False, **opts)
    x = r.output.reshape(n, -1).numpy()
    return x.mean(0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("strategy,opts", [("syncsde", {"inv_lambda": 5.0}), ("multidiffusion", {}),
                                           ("collage", {})])
def test_push_forward_matches_monte_carlo_on_windows(strategy, opts):
    sched = SamplingSchedule.preset("sd", 8)
    prob = wide_problem((1, 2, 12), window=(2, 6), stride=(1, 3), cond="f")
    den = FieldDenoiser({"f": {"kernel": "se", "lengthscale": 1.5, "mean": 0.3}}, sched.abar)
    law = push_forward_law(prob, den, strategy, sched, **opts)
    n = 40000
    mu, cov = _mc_moments(prob, den, strategy, sched, n, **opts)
    sd = np.sqrt(np.diag(law.covariance.numpy()))
    # the sample mean is within 5 standard errors everywhere, the covariance within 5 of its
    # standard errors (var of a sample covariance entry ~ (S_ii S_jj + S_ij^2) / n)
    assert np.all(np.abs(mu - law.mean_vector.numpy()) <= 5 * sd / math.sqrt(n) + 1e-12)
    S = law.covariance.numpy()
    se = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S ** 2) / n)
    assert np.all(np.abs(cov - S) <= 5 * se + 1e-12)
    assert law.noise_dim == 24  # canvas init: one canvas of noise


def test_push_forward_matches_monte_carlo_with_independent_init_and_fixed_views():
    """SyncSDE on the ambiguous task draws one noise map per view (noise dim 2 x 16); the view
    given in ``initial_views`` (here view 0) is a constant of the map."""
    sched = SamplingSchedule.preset("sd", 6)
    a = GaussianPrior.field("se", (4, 4), lengthscale=1.0, mean=0.5)
    b = GaussianPrior.field("se", (4, 4), lengthscale=2.0, mean=-0.5)
    den = PriorDenoiser({"A": a, "B": b}, sched.abar)
    prob = ambiguous_problem((1, 4, 4), "rot90_cw", "A", "B")
    law = push_forward_law(prob, den, "syncsde", sched, inv_lambda=5.0)
    assert law.noise_dim == 32
    n = 40000
    mu, cov = _mc_moments(prob, den, "syncsde", sched, n, inv_lambda=5.0)
    S = law.covariance.numpy()
    assert np.abs(mu - law.mean_vector.numpy()).max() <= 5 * np.sqrt(np.diag(S).max() / n)
    se = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S ** 2) / n)
    assert np.all(np.abs(cov - S) <= 5 * se + 1e-12)
    fixed = torch.randn(1, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    prob2 = Problem(prob.views, prob.cond, correlation=prob.correlation, init="independent",
                    initial_views={0: fixed})
    assert push_forward_law(prob2, den, "syncsde", sched, inv_lambda=5.0).noise_dim == 16


def test_oracle_law_equals_numpy_composition_of_ddim_maps():
    """Plain DDIM with the exact score of N(mu, S): x_s = c_x x_t - c_e eps(x_t) with
    eps = sqrt(1-a) (a S + (1-a) I)^-1 (x_t - sqrt(a) mu): the output is b + A z, composed here
    step by step in NumPy (no sampler, no torch ops)."""
    sched = SamplingSchedule.preset("sd", 12)
    S = field_covariance("matern", (3, 4), lengthscale=2.0, nu=1.5).numpy()
    mu = np.linspace(-1, 1, 12)
    law = GaussianLaw(mu, S, (1, 3, 4))
    prob = Problem(WindowViews((1, 3, 4), (3, 4), [(0, 0)]), ["t"], init="independent")
    got = push_forward_law(prob, PriorDenoiser({"t": law}, sched.abar), "independent", sched)
    A, b = np.eye(12), np.zeros(12)
    for info in sched.steps():
        a, s = info.abar_t, info.abar_s
        P = math.sqrt(1 - a) * np.linalg.inv(a * S + (1 - a) * np.eye(12))
        cx, ce = math.sqrt(s / a), math.sqrt(s / a) * math.sqrt(1 - a) - math.sqrt(1 - s)
        # x_s = cx x_t - ce P (x_t - sqrt(a) mu)
        M = cx * np.eye(12) - ce * P
        A, b = M @ A, M @ b + ce * P @ (math.sqrt(a) * mu)
    np.testing.assert_allclose(got.mean_vector.numpy(), b, atol=1e-10)
    np.testing.assert_allclose(got.covariance.numpy(), A @ A.T, atol=1e-10)


def test_non_affine_runs_are_refused():
    sched = SamplingSchedule.preset("sd", 5)
    comps = [GaussianPrior.field("se", (4, 4), lengthscale=1.0, mean=m) for m in (-0.3, 0.3)]
    den = PriorDenoiser({"m": GaussianMixturePrior(comps)}, sched.abar)
    prob = wide_problem((1, 4, 4), 4, 4, cond="m")
    with pytest.raises(ValueError, match="not affine"):
        push_forward_law(prob, den, "independent", sched)


def test_gaussian_kl_and_w2_against_references():
    g = torch.Generator().manual_seed(0)
    d = 5
    A = torch.randn(d, d, generator=g, dtype=F64)
    B = torch.randn(d, d, generator=g, dtype=F64)
    p = GaussianLaw(torch.randn(d, generator=g, dtype=F64), A @ A.T + 0.5 * torch.eye(d, dtype=F64))
    q = GaussianLaw(torch.randn(d, generator=g, dtype=F64), B @ B.T + 0.5 * torch.eye(d, dtype=F64))
    ref = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(p.mean_vector, p.covariance),
        torch.distributions.MultivariateNormal(q.mean_vector, q.covariance))
    assert gaussian_kl(p, q) == pytest.approx(float(ref), rel=1e-9)
    assert gaussian_kl(p, p) == pytest.approx(0.0, abs=1e-9)
    # singular q: p has mass off q's support -> inf; p inside the support -> finite
    Pm = torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0], dtype=F64))
    q_sing = GaussianLaw(torch.zeros(d, dtype=F64), Pm)
    assert gaussian_kl(p, q_sing) == math.inf
    p_in = GaussianLaw(torch.zeros(d, dtype=F64), 0.5 * Pm)
    assert gaussian_kl(p_in, q_sing) == pytest.approx(0.5 * (4 * 0.5 - 4 - 4 * math.log(0.5)))
    # 1-D W2: (m1-m2)^2 + (s1-s2)^2
    w = gaussian_w2(GaussianLaw([1.0], [[4.0]]), GaussianLaw([-1.0], [[9.0]]))
    assert w == pytest.approx(4.0 + 1.0)


def test_energy_distance_against_a_double_loop():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 3)), rng.normal(0.5, 1.0, size=(25, 3))

    def mean_d(a, b, same):
        tot = cnt = 0
        for i in range(len(a)):
            for j in range(len(b)):
                if same and i == j:
                    continue
                tot += math.sqrt(sum((a[i, k] - b[j, k]) ** 2 for k in range(a.shape[1])))
                cnt += 1
        return tot / cnt

    ref = 2 * mean_d(x, y, False) - mean_d(x, x, True) - mean_d(y, y, True)
    assert energy_distance(x, y, chunk=7) == pytest.approx(ref, rel=1e-12)
    # it sees a difference of laws with equal first two moments (mode mixing): +-1 vs N(0, 1)
    n = 1500
    pm = rng.choice([-1.0, 1.0], size=(n, 1))
    z = rng.normal(size=(n, 1))
    z2 = rng.normal(size=(n, 1))
    assert energy_distance(pm, z) > 10 * abs(energy_distance(z2, z))


@pytest.mark.parametrize("solver", ["euler", "dpmpp_2m"])
def test_push_forward_through_diffusers_solvers_matches_monte_carlo(solver):
    """Euler (sigma space, initial noise scaled by init_noise_sigma) and DPM-Solver++ (multistep
    state) are affine too: the pushed-forward law equals the sampled moments."""
    pytest.importorskip("diffusers")
    from syncsde.benchmark import make_solver

    sched = make_solver(solver, 6)
    prob = wide_problem((1, 2, 10), window=(2, 6), stride=(1, 4), cond="f")
    den = FieldDenoiser({"f": {"kernel": "se", "lengthscale": 1.5}}, sched.scheduler.alphas_cumprod)
    law = push_forward_law(prob, den, "syncsde", sched, inv_lambda=5.0)
    n = 30000
    mu, cov = _mc_moments(prob, den, "syncsde", sched, n, inv_lambda=5.0)
    S = law.covariance.numpy()
    assert np.abs(mu - law.mean_vector.numpy()).max() <= 5 * np.sqrt(np.diag(S).max() / n)
    se = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S ** 2) / n)
    assert np.all(np.abs(cov - S) <= 5 * se + 1e-6)


def test_solver_table_rows():
    pytest.importorskip("diffusers")
    from syncsde.benchmark import run_solver_table, solver_table

    res = run_solver_table(["ambiguous"], ["ddim", "ddpm"], [3], "syncsde", 200, 0, lambda s: None)
    row = res["ambiguous"]
    assert row["ddim 3"]["strategy_exact"] and not row["ddpm 3"]["strategy_exact"]
    assert all(math.isfinite(v) for r in row.values() for k, v in r.items() if not k.endswith("exact"))
    assert "| ddpm 3 |" in solver_table(res)
