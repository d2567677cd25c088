"""Exact-score priors: kernels, exact E[eps|x_t] against Monte Carlo, DDIM with the exact score,
target laws (product / conditional / composition) against brute-force formulas."""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

from syncsde import ops
from syncsde import schedules as S
from syncsde.metrics import frechet_to_law
from syncsde.priors import (
    GaussianLaw,
    GaussianMixturePrior,
    GaussianPrior,
    PriorDenoiser,
    field_covariance,
    gaussian_conditional,
    gaussian_product,
    masked_composition,
)

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def torch_threads(n):
    # The C core and torch run separate OpenMP runtimes; alternating them with 2 spinning teams
    # each on 2 cores is ~20x slower. Loops that alternate the two use one torch thread.
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def min_eig(c):
    return float(torch.linalg.eigvalsh(0.5 * (c + c.T)).min())


def random_spd(d, seed, scale=1.0):
    g = gen(seed)
    a = torch.randn(d, d, generator=g, dtype=F64)
    return scale * (a @ a.T / d + 0.3 * torch.eye(d, dtype=F64))


def mvn_logpdf(x, mu, cov):
    return torch.distributions.MultivariateNormal(mu, covariance_matrix=cov).log_prob(x)


# ---- kernels -----------------------------------------------------------------------------
@pytest.mark.parametrize("kernel,kw", [("se", {}), ("matern", dict(nu=0.5)), ("matern", dict(nu=1.5)),
                                       ("matern", dict(nu=2.5)), ("power", dict(exponent=1.0)),
                                       ("power", dict(exponent=3.0))])
@pytest.mark.parametrize("shape", [(7,), (3, 4)])
def test_field_covariance_psd_and_stationary(kernel, kw, shape):
    c = field_covariance(kernel, shape, lengthscale=2.0, variance=1.5, jitter=0.0, **kw)
    P = math.prod(shape)
    assert c.dtype == F64 and c.shape == (P, P)
    torch.testing.assert_close(c, c.T)
    assert min_eig(c) > -1e-10
    torch.testing.assert_close(c.diagonal(), torch.full((P,), 1.5, dtype=F64))
    # a window's covariance is the restriction of the canvas covariance (depends on r only)
    big = field_covariance(kernel, (20,), lengthscale=2.0, variance=1.5, jitter=0.0, **kw)
    small = field_covariance(kernel, (6,), lengthscale=2.0, variance=1.5, jitter=0.0, **kw)
    torch.testing.assert_close(big[5:11, 5:11], small)


def test_field_covariance_values():
    l = 2.0
    r = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=F64)
    c = lambda k, **kw: field_covariance(k, 5, lengthscale=l, jitter=0.0, **kw)[0]
    torch.testing.assert_close(c("se"), torch.exp(-r**2 / (2 * l**2)))
    torch.testing.assert_close(c("matern", nu=0.5), torch.exp(-r / l))
    q = math.sqrt(3) * r / l
    torch.testing.assert_close(c("matern", nu=1.5), (1 + q) * torch.exp(-q))
    q = math.sqrt(5) * r / l
    torch.testing.assert_close(c("matern", nu=2.5), (1 + q + q**2 / 3) * torch.exp(-q))
    torch.testing.assert_close(c("power", exponent=2.5), (1 + r**2 / l**2) ** -1.25)
    # 2-D: Euclidean distance between row-major grid points; jitter on the diagonal
    c2 = field_covariance("se", (2, 3), lengthscale=1.0, jitter=1e-3)
    assert float(c2[0, 4]) == pytest.approx(math.exp(-1.0))  # (0,0) -> (1,1): r^2 = 2
    assert float(c2[0, 0]) == pytest.approx(1.001)


def test_field_covariance_errors():
    with pytest.raises(ValueError, match="unknown kernel"):
        field_covariance("rbf", 4)
    with pytest.raises(ValueError, match="nu"):
        field_covariance("matern", 4, nu=1.0)
    with pytest.raises(ValueError, match="lengthscale"):
        field_covariance("se", 4, lengthscale=-1.0)
    with pytest.raises(ValueError, match="lengthscale"):
        field_covariance("se", 4, lengthscale=0.0)
    with pytest.raises(ValueError, match="exponent"):
        field_covariance("power", 4, exponent=0.0)
    with pytest.raises(ValueError, match="variance"):
        field_covariance("se", 4, variance=-2.0)
    for bad in [(2, 3, 4), (0,), (3, 0), (), "abc"]:
        with pytest.raises(ValueError, match="spatial_shape"):
            field_covariance("se", bad)


# ---- GaussianPrior basics ----------------------------------------------------------------
def test_gaussian_prior_eps_formula_batches_dtypes():
    cov = field_covariance("matern", (3, 4), lengthscale=1.5, nu=1.5)
    mean = torch.randn(2, 3, 4, generator=gen(1), dtype=F64)
    p = GaussianPrior(mean, cov, channels=2)
    assert p.event_shape == (2, 3, 4) and p.spatial_shape == (3, 4)
    big = p.covariance
    assert big.shape == (24, 24)
    torch.testing.assert_close(big[:12, :12], cov)
    torch.testing.assert_close(big[:12, 12:], torch.zeros(12, 12, dtype=F64))
    torch.testing.assert_close(p.mean_vector, mean.reshape(-1))
    a = 0.37
    x = torch.randn(5, 2, 3, 4, generator=gen(2), dtype=F64)
    A = a * big + (1 - a) * torch.eye(24, dtype=F64)
    ref = math.sqrt(1 - a) * torch.linalg.solve(A, (x.reshape(5, 24) - math.sqrt(a) * p.mean_vector).T).T
    e = p.eps(x, a)
    assert e.shape == x.shape and e.dtype == F64
    torch.testing.assert_close(e.reshape(5, 24), ref, rtol=1e-9, atol=1e-10)
    e32 = p.eps(x.float(), a)
    assert e32.dtype == torch.float32
    torch.testing.assert_close(e32, e.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p.eps(x[3], a), e[3])                      # unbatched
    torch.testing.assert_close(p.eps(x.reshape(5, 1, 2, 3, 4), a), e.reshape(5, 1, 2, 3, 4))
    en = p.eps(x.numpy(), a)
    assert isinstance(en, np.ndarray) and np.allclose(en, e.numpy())
    torch.testing.assert_close(p.x0(x, a), (x - math.sqrt(1 - a) * e) / math.sqrt(a))
    assert torch.count_nonzero(p.eps(x, 1.0)) == 0
    with pytest.raises(ValueError, match="shape"):
        p.eps(torch.zeros(5, 3, 3, 4), a)
    with pytest.raises(ValueError, match="abar_t"):
        p.eps(x, 0.0)


def test_gaussian_prior_construction_and_sampling():
    cov = field_covariance("se", 6, lengthscale=2.0)
    p = GaussianPrior(torch.tensor([[1.0], [-2.0], [0.5]]), cov, channels=3)  # per-channel constant
    assert p.event_shape == (3, 6)
    x = p.sample(20000, gen(3))
    assert x.shape == (20000, 3, 6) and x.dtype == F64
    torch.testing.assert_close(x.mean(0), p.mean_vector.reshape(3, 6), atol=0.05, rtol=0)
    emp = torch.cov(x[:, 1].T)
    torch.testing.assert_close(emp, cov, atol=0.05, rtol=0)
    assert p.sample(4, gen(0), dtype=torch.float32).dtype == torch.float32
    torch.testing.assert_close(p.sample(3, gen(7)), p.sample(3, gen(7)))
    # spatial shape from the mean, or given
    assert GaussianPrior(torch.zeros(2, 2, 3), field_covariance("se", (2, 3)), 2).spatial_shape == (2, 3)
    assert GaussianPrior(None, field_covariance("se", (2, 3)), 1, spatial_shape=(2, 3)).event_shape == (1, 2, 3)
    assert GaussianPrior.field("power", (2, 3), channels=4, exponent=1.5).event_shape == (4, 2, 3)
    with pytest.raises(ValueError, match="square"):
        GaussianPrior(None, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="broadcast"):
        GaussianPrior(torch.zeros(3, 5), cov, channels=3)
    with pytest.raises(ValueError, match="semi-definite"):
        GaussianPrior(None, torch.diag(torch.tensor([1.0, -1.0])))
    with pytest.raises(ValueError, match="spatial_shape"):
        GaussianPrior(None, cov, spatial_shape=(2, 2))
    with pytest.raises(ValueError, match="channels"):
        GaussianPrior(None, cov, channels=0)


# ---- exact eps against Monte Carlo -------------------------------------------------------
def mc_eps(law, x_t, a, n=400_000, seed=11):
    """Self-normalized importance estimate of E[eps | x_t] with x0 ~ law: weights
    w_j ∝ N(x_t; sqrt(a) x0_j, (1-a) I), eps_j = (x_t - sqrt(a) x0_j) / sqrt(1-a)."""
    x0 = law.sample(n, gen(seed)).reshape(n, -1)
    xt = x_t.reshape(1, -1)
    eps_j = (xt - math.sqrt(a) * x0) / math.sqrt(1 - a)
    logw = -0.5 * (eps_j**2).sum(1)          # N(x_t; sqrt(a) x0, (1-a) I) up to a constant
    w = torch.softmax(logw, 0)
    est = (w[:, None] * eps_j).sum(0)
    se = torch.sqrt((w[:, None] ** 2 * (eps_j - est) ** 2).sum(0))
    ess = 1.0 / float((w**2).sum())
    return est, se, ess


def check_mc(law, a, seed):
    x0 = law.sample(1, gen(seed)).reshape(-1)
    x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * torch.randn(x0.shape, generator=gen(seed + 1), dtype=F64)
    exact = law.eps(x_t.reshape(1, *law.event_shape), a).reshape(-1)
    est, se, ess = mc_eps(law, x_t, a, seed=seed + 2)
    assert ess > 2000
    assert bool((torch.abs(est - exact) <= 5 * se + 2e-3).all()), (exact, est, se)


@pytest.mark.parametrize("a", [0.15, 0.5, 0.85])
def test_prior_eps_matches_monte_carlo(a):
    p = GaussianPrior(torch.tensor([[0.3, -0.2, 0.5]]), field_covariance("matern", 3, lengthscale=1.5, nu=1.5))
    check_mc(p, a, seed=100)


@pytest.mark.parametrize("a", [0.15, 0.5, 0.85])
def test_mixture_eps_matches_monte_carlo(a):
    p1 = GaussianPrior(torch.tensor([[1.5, 1.0, 1.2]]), field_covariance("se", 3, lengthscale=1.0, variance=0.4))
    p2 = GaussianPrior(torch.tensor([[-1.0, -1.5, -0.5]]), field_covariance("matern", 3, lengthscale=2.0, nu=0.5))
    m = GaussianMixturePrior([p1, p2], [0.35, 0.65])
    for seed in (200, 300):
        check_mc(m, a, seed=seed)
    r = m.responsibilities(m.sample(5, gen(1)), a)
    assert r.shape == (5, 2)
    torch.testing.assert_close(r.sum(-1), torch.ones(5, dtype=F64))


@pytest.mark.parametrize("a", [0.3, 0.8])
def test_law_eps_matches_monte_carlo_singular(a):
    cov = random_spd(3, seed=5)
    cov[0, :] = 0.0
    cov[:, 0] = 0.0                         # one entry known exactly: a zero eigenvalue
    law = GaussianLaw(torch.tensor([0.7, -0.3, 0.2]), cov)
    assert float(law.eigenvalues.min()) == 0.0
    check_mc(law, a, seed=400)
    # the known entry's eps is its exact value
    x_t = torch.tensor([[0.1, 0.2, 0.3]], dtype=F64)
    assert float(law.eps(x_t, a)[0, 0]) == pytest.approx((0.1 - math.sqrt(a) * 0.7) / math.sqrt(1 - a))


def test_mixture_mean_cov_and_sampling():
    p1 = GaussianPrior(1.0, field_covariance("se", 4, lengthscale=1.0), spatial_shape=4)
    p2 = GaussianPrior(-2.0, field_covariance("matern", 4, lengthscale=2.0, nu=2.5), spatial_shape=4)
    m = GaussianMixturePrior([p1, p2], [1.0, 3.0])
    torch.testing.assert_close(m.weights, torch.tensor([0.25, 0.75], dtype=F64))
    x = m.sample(40000, gen(9))
    assert x.shape == (40000, 1, 4)
    torch.testing.assert_close(x.reshape(40000, 4).mean(0), m.mean_vector, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(x.reshape(40000, 4).T), m.covariance, atol=0.08, rtol=0)
    with pytest.raises(ValueError, match="event shape"):
        GaussianMixturePrior([p1, GaussianPrior(None, field_covariance("se", 5))])
    with pytest.raises(ValueError, match="weights"):
        GaussianMixturePrior([p1, p2], [1.0, -1.0])
    with pytest.raises(ValueError, match="weights"):
        GaussianMixturePrior([p1, p2], [1.0])


def test_mixture_extreme_responsibilities_are_stable():
    p1 = GaussianPrior(50.0, field_covariance("se", 3, variance=1e-2), spatial_shape=3)
    p2 = GaussianPrior(-50.0, field_covariance("se", 3, variance=1e-2), spatial_shape=3)
    m = GaussianMixturePrior([p1, p2])
    x = torch.full((1, 1, 3), 49.9, dtype=F64)
    e = m.eps(x, 0.999)
    assert bool(torch.isfinite(e).all())
    torch.testing.assert_close(e, p1.eps(x, 0.999))


# ---- DDIM with the exact score reproduces the prior --------------------------------------
def ddim_sample(law, n, steps=200, seed=0):
    abar = S.alphas_cumprod("squaredcos_cap_v2")
    ts = S.ddim_timesteps(steps, spacing="trailing")      # starts at t = 999 (abar ~ 2e-9)
    x = torch.randn(n, *law.event_shape, generator=gen(seed), dtype=F64)
    with torch_threads(1):
        for t, s in S.step_pairs(ts, 1000, steps):
            a_t, a_s = float(abar[t]), S.prev_abar(abar, t, s, 1.0)
            x = ops.ddim_step(x, law.eps(x, a_t), a_t, a_s, out=x)
    return x


def test_ddim_with_exact_eps_reproduces_prior():
    mean = torch.tensor([[0.5], [-1.0]], dtype=F64)
    p = GaussianPrior.field("matern", 8, channels=2, lengthscale=3.0, nu=1.5, mean=mean)
    wrong = GaussianPrior.field("matern", 8, channels=2, lengthscale=1.5, nu=1.5, mean=mean)
    x = ddim_sample(p, 3000)
    d_right, d_wrong = frechet_to_law(x, p), frechet_to_law(x, wrong)
    d_ref = frechet_to_law(p.sample(3000, gen(5)), p)      # pure finite-sample error
    assert d_right < 3 * d_ref + 0.01 and d_right < 0.05
    assert d_wrong > 20 * d_right


def test_ddim_with_exact_eps_reproduces_mixture():
    p1 = GaussianPrior.field("matern", 6, lengthscale=3.0, nu=1.5, mean=0.5)
    p2 = GaussianPrior.field("se", 6, lengthscale=2.0, mean=-1.5, variance=0.5)
    m = GaussianMixturePrior([p1, p2], [0.3, 0.7])
    x = ddim_sample(m, 3000, seed=1)
    d_ref = frechet_to_law(m.sample(3000, gen(6)), m.mean_vector, m.covariance)
    assert frechet_to_law(x, m.mean_vector, m.covariance) < 3 * d_ref + 0.01
    assert frechet_to_law(x, p2) > 0.3
    # mode weights: fraction of samples nearer to the second mean
    frac2 = float((x.reshape(3000, -1).mean(1) < -0.5).double().mean())
    assert frac2 == pytest.approx(0.7, abs=0.03)


# ---- PriorDenoiser -----------------------------------------------------------------------
def test_prior_denoiser_protocol():
    abar = S.alphas_cumprod("scaled_linear")
    pa = GaussianPrior.field("se", (3, 3), channels=2, mean=1.0)
    pb = GaussianPrior.field("matern", (3, 3), channels=2, nu=0.5, mean=-1.0)
    pc = GaussianMixturePrior([pa, pb], [0.2, 0.8])
    d = PriorDenoiser({"a": pa, "b": pb, "c": pc}, abar)
    assert d.abar.dtype == F64 and d.abar.shape == (1000,)
    x = torch.randn(4, 2, 3, 3, generator=gen(0))
    t = 601
    a = float(abar[t])
    out = d(x, t, ["a", "b", None, "c"])
    assert out.shape == x.shape and out.dtype == torch.float32
    torch.testing.assert_close(out[0], pa.eps(x[0], a))
    torch.testing.assert_close(out[1], pb.eps(x[1], a))
    uncond = GaussianMixturePrior([pa, pb, pa, pb], [1 / 3, 1 / 3, 0.2 / 3, 0.8 / 3])
    torch.testing.assert_close(out[2], uncond.eps(x[2:3], a)[0])
    torch.testing.assert_close(out[3], pc.eps(x[3], a))
    torch.testing.assert_close(d(x, torch.tensor(t), "a"), pa.eps(x, a))
    torch.testing.assert_close(d(x, t, None), uncond.eps(x, a))
    # prediction types are consistent with the exact eps
    e = d(x.double(), t, ["a", "b", None, "c"])
    x0 = PriorDenoiser(d.priors, abar, "sample")(x.double(), t, ["a", "b", None, "c"])
    v = PriorDenoiser(d.priors, abar, "v_prediction")(x.double(), t, ["a", "b", None, "c"])
    torch.testing.assert_close(x0, (x.double() - math.sqrt(1 - a) * e) / math.sqrt(a))
    torch.testing.assert_close(v, math.sqrt(a) * e - math.sqrt(1 - a) * x0)
    # one prior: unconditional is that prior
    d1 = PriorDenoiser({"a": pa}, abar)
    torch.testing.assert_close(d1(x, t, None), pa.eps(x, a))
    with pytest.raises(KeyError, match="unknown prompt"):
        d(x, t, ["a", "zzz", "a", "a"])
    with pytest.raises(ValueError, match="keys"):
        d(x, t, ["a", "b"])
    with pytest.raises(ValueError, match="t must"):
        d(x, 1000, "a")
    with pytest.raises(ValueError, match="prediction_type"):
        PriorDenoiser({"a": pa}, abar, "flow")
    with pytest.raises(ValueError, match="event shape"):
        PriorDenoiser({"a": pa, "z": GaussianPrior.field("se", 4)}, abar)


# ---- target laws -------------------------------------------------------------------------
def test_gaussian_product_against_densities():
    pa = GaussianPrior(torch.tensor([[0.5, -1.0, 0.2], [0.0, 0.3, 1.0]]),
                       field_covariance("matern", 3, lengthscale=1.5, nu=1.5), channels=2)
    pb = GaussianLaw(torch.tensor([1.0, 0.0, -0.5, 0.2, 0.4, 0.1]), random_spd(6, seed=3), (2, 3))
    perm = torch.tensor([5, 3, 1, 0, 2, 4])
    law = gaussian_product(pa, pb, perm)
    assert law.event_shape == (2, 3)
    assert min_eig(law.covariance) > 0
    # log N(x; law) - log p_A(x) - log p_B(P x) is the same constant for every x
    x = torch.randn(10, 6, generator=gen(4), dtype=F64)
    diff = (mvn_logpdf(x, law.mean_vector, law.covariance)
            - mvn_logpdf(x, pa.mean_vector, pa.covariance)
            - mvn_logpdf(x[:, perm], pb.mean_vector, pb.covariance))
    torch.testing.assert_close(diff, diff[0].expand(10), rtol=0, atol=1e-9)
    # brute force with an explicit permutation matrix
    Pm = torch.zeros(6, 6, dtype=F64)
    Pm[torch.arange(6), perm] = 1.0
    ia, ib = torch.linalg.inv(pa.covariance), torch.linalg.inv(pb.covariance)
    lam = ia + Pm.T @ ib @ Pm
    torch.testing.assert_close(law.covariance, torch.linalg.inv(lam), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(law.mean_vector,
                               torch.linalg.solve(lam, ia @ pa.mean_vector + Pm.T @ ib @ pb.mean_vector),
                               rtol=1e-9, atol=1e-10)
    # identity perm and equal factors: same mean, half the covariance
    same = gaussian_product(pa, pa, torch.arange(6))
    torch.testing.assert_close(same.covariance, pa.covariance / 2, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(same.mean_vector, pa.mean_vector, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="permutation"):
        gaussian_product(pa, pb, torch.tensor([0, 0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match="sizes"):
        gaussian_product(pa, GaussianLaw(torch.zeros(4), torch.eye(4)), torch.arange(6))


def test_gaussian_conditional_against_precision_formula():
    cov = random_spd(5, seed=8)
    mu = torch.tensor([0.1, -0.4, 0.9, 0.0, 0.3], dtype=F64)
    prior = GaussianLaw(mu, cov)
    known = torch.tensor([1, 0, 0, 1, 0], dtype=torch.bool)
    vals = torch.tensor([2.0, 99.0, 99.0, -1.0, 99.0], dtype=F64)   # unknown entries ignored
    law = gaussian_conditional(prior, known, vals)
    k, u = known.nonzero().reshape(-1), (~known).nonzero().reshape(-1)
    lam = torch.linalg.inv(cov)                                       # brute force via precision
    cov_u = torch.linalg.inv(lam[u][:, u])
    mean_u = mu[u] - cov_u @ lam[u][:, k] @ (vals[k] - mu[k])
    torch.testing.assert_close(law.mean_vector[u], mean_u, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(law.mean_vector[k], vals[k])
    torch.testing.assert_close(law.covariance[u][:, u], cov_u, rtol=1e-9, atol=1e-10)
    assert float(law.covariance[k].abs().max()) == 0.0 and float(law.covariance[:, k].abs().max()) == 0.0
    assert min_eig(law.covariance) > -1e-12
    x = law.sample(7, gen(0))
    torch.testing.assert_close(x[:, k], vals[k].expand(7, 2))
    # field prior with a spatial mask broadcast over channels
    p = GaussianPrior.field("se", (2, 3), channels=2, lengthscale=1.0, mean=0.5)
    mask = torch.tensor([[1, 0, 0], [0, 0, 1]])
    law2 = gaussian_conditional(p, mask, torch.ones(2, 2, 3))
    assert law2.event_shape == (2, 2, 3)
    flat = mask.bool().expand(2, 2, 3).reshape(-1)
    torch.testing.assert_close(law2.mean_vector[flat], torch.ones(4, dtype=F64))
    assert float(law2.covariance.diagonal()[flat].abs().max()) == 0.0
    assert float(law2.covariance.diagonal()[~flat].min()) > 0
    with pytest.raises(ValueError, match="binary"):
        gaussian_conditional(p, torch.full((2, 3), 0.5), torch.ones(2, 2, 3))
    with pytest.raises(ValueError, match="known_mask"):
        gaussian_conditional(p, torch.ones(4, 4), torch.ones(2, 2, 3))


def test_masked_composition_brute_force():
    pbg = GaussianPrior.field("se", (2, 3), channels=2, lengthscale=1.2, mean=1.0)
    pobj = GaussianPrior.field("matern", (2, 3), channels=2, lengthscale=2.0, nu=0.5, mean=-2.0)
    mask = torch.tensor([[0, 1, 1], [0, 0, 1]])
    law = masked_composition(pbg, pobj, mask)
    m = mask.double().expand(2, 2, 3).reshape(-1)
    D = 12
    cov = torch.empty(D, D, dtype=F64)
    cb, co = pbg.covariance, pobj.covariance
    for i in range(D):
        for j in range(D):
            cov[i, j] = (1 - m[i]) * (1 - m[j]) * cb[i, j] + m[i] * m[j] * co[i, j]
    torch.testing.assert_close(law.covariance, cov)
    torch.testing.assert_close(law.mean_vector, torch.where(m > 0, -2.0, 1.0).double())
    assert min_eig(law.covariance) > 0
    # agrees with sampling the two fields and compositing
    n = 30000
    xs = (1 - m) * pbg.sample(n, gen(1)).reshape(n, D) + m * pobj.sample(n, gen(2)).reshape(n, D)
    assert frechet_to_law(xs, law) < 0.02
    with pytest.raises(ValueError, match="mask"):
        masked_composition(pbg, pobj, torch.ones(3, 3))
