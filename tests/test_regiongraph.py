"""Region-graph (Kikuchi) composition: counting numbers, exactness on a Markov grid field
(NumPy), the strategy's step against a NumPy composition, and its law on a 2-D grid."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from syncsde.exact_laws import gaussian_w2, push_forward_law
from syncsde.priors import FieldDenoiser, GaussianPrior, PriorDenoiser, field_covariance
from syncsde.sampler import SamplingSchedule, sample
from syncsde.strategies import Strategy, make_strategy
from syncsde.strategies_regiongraph import Region, region_graph
from syncsde.tasks import ambiguous_problem, sequence_problem, wide_problem
from syncsde.views import WindowViews

from resume_check import assert_resumes_bit_identically

F64 = torch.float64


def _pixels(r: Region, H: int, W: int, circular: bool) -> list[int]:
    return [row * W + ((r.left + k) % W if circular else r.left + k)
            for row in range(r.top, r.top + r.h) for k in range(r.w)]


def test_two_by_two_block_is_windows_minus_strips_plus_centre():
    v = WindowViews.grid((1, 12, 12), (8, 8), 4)
    got = {(r.top, r.left, r.h, r.w): c for r, c, _ in region_graph(v)[4:]}
    # windows A (0,0) B (0,4) C (4,0) D (4,4): strips A∩B, A∩C, B∩D, C∩D and the centre
    assert got == {(0, 4, 8, 4): -1, (4, 0, 4, 8): -1, (4, 4, 4, 8): -1, (4, 4, 8, 4): -1,
                   (4, 4, 4, 4): 1}


@pytest.mark.parametrize("canvas,size,stride,circular", [
    ((1, 16, 16), (8, 8), 4, False), ((1, 16, 20), (8, 8), (3, 5), False),
    ((1, 1, 40), (1, 16), (1, 6), False), ((1, 6, 24), (6, 6), (1, 3), True),
    ((1, 10, 30), (6, 8), (2, 5), True)])
def test_every_pixel_and_every_covered_pair_is_counted_once(canvas, size, stride, circular):
    """The counting numbers make sum_R c_R 1[p in R] = 1 for every pixel and
    sum_R c_R 1[p, q in R] = 1 for every pair inside one window (brute force over pixels): the
    composed log density then counts every single-site and pairwise term of a pairwise field
    once."""
    v = WindowViews.grid(canvas, size, stride, circular=circular)
    H, W = canvas[1:]
    g = region_graph(v)
    single = np.zeros(H * W)
    pair = np.zeros((H * W, H * W))
    in_window = np.zeros((H * W, H * W), bool)
    for r, c, owner in g:
        px = _pixels(r, H, W, circular)
        single[px] += c
        pair[np.ix_(px, px)] += c
        wpx = _pixels(g[owner][0], H, W, circular)
        assert set(px) <= set(wpx)  # the owner window contains the region
    for r, _, _ in g[:v.num_views]:
        px = _pixels(r, H, W, circular)
        in_window[np.ix_(px, px)] = True
    np.testing.assert_array_equal(single, 1)
    np.testing.assert_array_equal(pair[in_window], 1)


def _composed_precision(views, cov):
    H, W = views.canvas_shape[1:]
    Q = np.zeros((H * W, H * W))
    for r, c, _ in region_graph(views):
        px = _pixels(r, H, W, views.circular)
        Q[np.ix_(px, px)] += c * np.linalg.inv(cov[np.ix_(px, px)])
    return Q


def test_exact_for_the_separable_exponential_field_and_not_for_se():
    """The separable exponential field is Markov on the 8-neighbour grid at every scale, so
    p(X) = prod_R p(R)^c_R holds exactly on a 2-D grid of windows overlapping by >= 1 pixel:
    the composed precision sum_R c_R P_R^T S_RR^-1 P_R equals S^-1 (NumPy inverses)."""
    v = WindowViews.grid((1, 9, 13), (5, 5), (2, 4))
    cov = field_covariance("exp_separable", (9, 13), lengthscale=2.0, jitter=0.0).numpy()
    Q = np.linalg.inv(cov)
    np.testing.assert_allclose(_composed_precision(v, cov), Q, atol=1e-8 * np.abs(Q).max())
    se = field_covariance("se", (9, 13), lengthscale=1.5, jitter=1e-3).numpy()
    Qse = np.linalg.inv(se)
    assert np.abs(_composed_precision(v, se) - Qse).max() > 1e-3 * np.abs(Qse).max()


def test_strategy_step_equals_the_numpy_composition():
    """One DDIM step t -> s with the region-graph eps: canvas_s = c_x x - c_e sum_R c_R P_R^T
    eps_R(P_R x), eps_R from the window law of each region (NumPy)."""
    C, H, W = 1, 8, 10
    abar = SamplingSchedule.preset("sd", 10).abar
    sched = SamplingSchedule(abar, [500], final_abar=float(abar[200]))
    prob = wide_problem((C, H, W), window=(4, 6), stride=(2, 2), cond="f")
    kw = {"kernel": "matern", "nu": 1.5, "lengthscale": 2.0, "mean": 0.2}
    den = FieldDenoiser({"f": kw}, abar)
    x = torch.randn(C, H, W, generator=torch.Generator().manual_seed(0), dtype=F64)
    prob.initial_canvas = x
    r = sample(prob, den, "regiongraph", sched, seed=0, dtype=F64, progress=False)
    a, s = float(abar[500]), float(abar[200])
    cov = field_covariance("matern", (H, W), nu=1.5, lengthscale=2.0).numpy()
    xv = x.numpy().reshape(-1)
    eps = np.zeros(H * W)
    for reg, c, _ in region_graph(prob.views):
        px = _pixels(reg, H, W, False)
        S = cov[np.ix_(px, px)]
        eps[px] += c * math.sqrt(1 - a) * np.linalg.solve(a * S + (1 - a) * np.eye(len(px)),
                                                           xv[px] - math.sqrt(a) * 0.2)
    cx = math.sqrt(s / a)
    ce = cx * math.sqrt(1 - a) - math.sqrt(1 - s)
    np.testing.assert_allclose(r.canvas.numpy().reshape(-1), cx * xv - ce * eps, atol=1e-10)


@pytest.mark.parametrize("guidance", ["windows", "regions"])
def test_guided_step_equals_the_numpy_composition(guidance):
    """Under CFG (w = 2.5, unconditional = the negative prompt "u"): ``guidance="windows"``
    composes the conditional eps by the region graph and adds the windows' average guidance
    term, eq. (2); ``"regions"`` composes the guided eps, eq. (1). One DDIM step in NumPy."""
    C, H, W, w = 1, 8, 10, 2.5
    abar = SamplingSchedule.preset("sd", 10).abar
    sched = SamplingSchedule(abar, [500], final_abar=float(abar[200]))
    prob = wide_problem((C, H, W), window=(4, 6), stride=(2, 2), cond="f")
    prob.negative = ["u"] * prob.views.num_views
    laws = {"f": {"kernel": "matern", "nu": 1.5, "lengthscale": 2.0, "mean": 0.2},
            "u": {"kernel": "se", "lengthscale": 1.0, "mean": -0.3}}
    den = FieldDenoiser(laws, abar)
    x = torch.randn(C, H, W, generator=torch.Generator().manual_seed(1), dtype=F64)
    prob.initial_canvas = x
    r = sample(prob, den, make_strategy("regiongraph", guidance=guidance), sched, seed=0,
               dtype=F64, progress=False, guidance_scale=w)
    a, s = float(abar[500]), float(abar[200])
    cov = {"f": field_covariance("matern", (H, W), nu=1.5, lengthscale=2.0).numpy(),
           "u": field_covariance("se", (H, W), lengthscale=1.0).numpy()}
    mean = {"f": 0.2, "u": -0.3}
    xv = x.numpy().reshape(-1)

    def eps_region(key, px):
        S = cov[key][np.ix_(px, px)]
        return math.sqrt(1 - a) * np.linalg.solve(a * S + (1 - a) * np.eye(len(px)),
                                                  xv[px] - math.sqrt(a) * mean[key])

    eps = np.zeros(H * W)
    guide_sum, coverage = np.zeros(H * W), np.zeros(H * W)
    for k, (reg, c, _) in enumerate(region_graph(prob.views)):
        px = _pixels(reg, H, W, False)
        ec, eu = eps_region("f", px), eps_region("u", px)
        if guidance == "regions":
            eps[px] += c * (eu + w * (ec - eu))
        else:
            eps[px] += c * ec
            if k < prob.views.num_views:   # the windows come first
                guide_sum[px] += ec - eu
                coverage[px] += 1
    if guidance == "windows":
        eps += (w - 1) * guide_sum / coverage
    cx = math.sqrt(s / a)
    ce = cx * math.sqrt(1 - a) - math.sqrt(1 - s)
    np.testing.assert_allclose(r.canvas.numpy().reshape(-1), cx * xv - ce * eps, atol=1e-10)


def test_guidance_option_is_checked_and_irrelevant_without_guidance():
    with pytest.raises(ValueError, match="guidance must be"):
        make_strategy("regiongraph", guidance="views")
    sched = SamplingSchedule.preset("sd", 4)
    prob = wide_problem((1, 6, 12), window=6, stride=3, cond="f")
    den = FieldDenoiser({"f": {"kernel": "se", "lengthscale": 2.0}}, sched.abar)
    a, b = (sample(prob, den, make_strategy("regiongraph", guidance=g), sched, seed=1, dtype=F64,
                   progress=False).canvas for g in ("windows", "regions"))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_equals_collage_on_a_chain():
    sched = SamplingSchedule.preset("sd", 6)
    prob = sequence_problem(1, 40, window=16, overlap=10, cond="f")  # deep intersections: c = 0
    den = FieldDenoiser({"f": {"kernel": "se", "lengthscale": 3.0}}, sched.abar)
    a = sample(prob, den, "regiongraph", sched, seed=2, batch=3, dtype=F64, progress=False)
    b = sample(prob, den, "collage", sched, seed=2, batch=3, dtype=F64, progress=False)
    torch.testing.assert_close(a.canvas, b.canvas, rtol=0, atol=1e-10)


def test_reaches_the_oracle_on_a_markov_grid():
    """On a 3x3 grid of windows of the separable exponential field the region-graph law is far
    closer to the target than averaging (MultiDiffusion); exact laws, no sampling error."""
    sched = SamplingSchedule.preset("sd", 20)
    shape = (1, 12, 12)
    kw = {"kernel": "exp_separable", "lengthscale": 3.0}
    prob = wide_problem(shape, window=6, stride=3, cond="f")
    den = FieldDenoiser({"f": kw}, sched.abar)
    target = GaussianPrior.field("exp_separable", shape[1:], lengthscale=3.0)
    oracle = push_forward_law(wide_problem(shape, window=12, stride=12, cond="t"),
                              PriorDenoiser({"t": target}, sched.abar), "independent", sched)
    w_o = gaussian_w2(oracle, target)
    w_rg = gaussian_w2(push_forward_law(prob, den, "regiongraph", sched), target)
    w_md = gaussian_w2(push_forward_law(prob, den, "multidiffusion", sched), target)
    assert w_rg < w_o + 0.15 * (w_md - w_o)


def test_bad_views_are_refused():
    sched = SamplingSchedule.preset("sd", 2)
    p = GaussianPrior.field("se", (4, 4), lengthscale=1.0)
    with pytest.raises(ValueError, match="window views"):
        sample(ambiguous_problem((1, 4, 4), "rot180", "a", "a"), PriorDenoiser({"a": p}, sched.abar),
               "regiongraph", sched, progress=False)
    wide = WindowViews((1, 4, 10), (4, 7), torch.tensor([[0, 0], [0, 5]]), circular=True)
    with pytest.raises(ValueError, match="two pieces"):
        region_graph(wide)
    assert make_strategy("regiongraph").name == "regiongraph"


def test_corrector_move_equals_the_numpy_langevin_step():
    """K = 1: X' = X - h eps(X) / sqrt(1-a) + sqrt(2h) z (z from the generator seeded with
    seed * 1000003 + step), then the DDIM step with eps(X'); eps from (1) in NumPy."""
    C, H, W = 1, 6, 8
    abar = SamplingSchedule.preset("sd", 10).abar
    sched = SamplingSchedule(abar, [400], final_abar=float(abar[150]))
    prob = wide_problem((C, H, W), window=4, stride=2, cond="f")
    den = FieldDenoiser({"f": {"kernel": "se", "lengthscale": 1.5}}, abar)
    x = torch.randn(C, H, W, generator=torch.Generator().manual_seed(3), dtype=F64)
    prob.initial_canvas = x
    r = sample(prob, den, make_strategy("regiongraph", corrector_steps=1, snr=0.7, seed=5), sched,
               seed=0, dtype=F64, progress=False)
    a, s = float(abar[400]), float(abar[150])
    cov = field_covariance("se", (H, W), lengthscale=1.5).numpy()
    graph = region_graph(prob.views)

    def eps_np(v):
        e = np.zeros(H * W)
        for reg, c, _ in graph:
            px = _pixels(reg, H, W, False)
            S = cov[np.ix_(px, px)]
            e[px] += c * math.sqrt(1 - a) * np.linalg.solve(a * S + (1 - a) * np.eye(len(px)), v[px])
        return e

    h = 0.7 * (1 - a)
    z = torch.randn((C, H, W), generator=torch.Generator().manual_seed(5 * 1_000_003 + 0),
                    dtype=torch.float32)  # step 0 of seed 5
    xv = x.numpy().reshape(-1)
    x1 = xv - h / math.sqrt(1 - a) * eps_np(xv) + math.sqrt(2 * h) * z.double().numpy().reshape(-1)
    cx = math.sqrt(s / a)
    ce = cx * math.sqrt(1 - a) - math.sqrt(1 - s)
    np.testing.assert_allclose(r.canvas.numpy().reshape(-1), cx * x1 - ce * eps_np(x1), atol=1e-10)
    for bad in ({"corrector_steps": -1}, {"snr": 0.0}, {"corrector_steps": 1.5}):
        with pytest.raises(ValueError):
            make_strategy("regiongraph", **bad)


def test_corrector_closes_the_noised_composition_gap_on_a_markov_grid():
    """Annealed Langevin on the composed path ends at q_0 = p for the separable exponential
    field: sampled, the corrected law is closer to the target than the uncorrected one
    (both against the same exact target, same sample size)."""
    sched = SamplingSchedule.preset("sd", 10)
    shape = (1, 8, 8)
    prob = wide_problem(shape, window=4, stride=2, cond="f")
    den = FieldDenoiser({"f": {"kernel": "exp_separable", "lengthscale": 3.0}}, sched.abar)
    target = GaussianPrior.field("exp_separable", shape[1:], lengthscale=3.0)
    n = 6000

    def w2(**kw):
        out = sample(prob, den, "regiongraph", sched, seed=0, batch=n, dtype=F64, progress=False,
                     **kw).output
        from syncsde.metrics import frechet_to_law
        return frechet_to_law(out.reshape(n, -1), target.mean_vector, target.covariance)

    assert w2(corrector_steps=2, snr=0.5) < 0.7 * w2()


@pytest.mark.parametrize("strategy", ["regiongraph", "poe"])
def test_corrected_runs_resume_from_a_checkpoint_bit_identically(strategy, tmp_path):
    """The corrector noise depends on (seed, step) only: an interrupted run resumed from its
    checkpoint equals the uninterrupted run."""
    sched = SamplingSchedule.preset("sd", 6)
    if strategy == "regiongraph":
        prob = wide_problem((1, 6, 10), window=4, stride=2, cond="f")
        den = FieldDenoiser({"f": {"kernel": "se", "lengthscale": 1.5}}, sched.abar)
    else:
        a = GaussianPrior.field("se", (4, 4), lengthscale=1.0)
        prob = ambiguous_problem((1, 4, 4), "rot180", "a", "a")
        den = PriorDenoiser({"a": a}, sched.abar)
    kw = dict(seed=3, progress=False, dtype=F64, corrector_steps=2)
    assert_resumes_bit_identically(str(tmp_path / "run.safetensors"), 3, prob, den, strategy,
                                   sched, **kw)


@pytest.mark.parametrize("guidance_scale", [1.0, 2.5])
def test_mix_shrinks_the_composed_eps_toward_the_window_average(guidance_scale):
    """eq. (3): with ``mix = beta`` one DDIM step's canvas is the affine combination
    ``(1 - beta) canvas(beta=0) + beta canvas(beta=1)`` (the step is affine in eps), and beta = 0
    is MultiDiffusion's average (same canvas as the multidiffusion strategy)."""
    abar = SamplingSchedule.preset("sd", 10).abar
    sched = SamplingSchedule(abar, [500], final_abar=float(abar[200]))
    prob = wide_problem((1, 8, 10), window=(4, 6), stride=(2, 2), cond="f")
    prob.negative = ["u"] * prob.views.num_views
    laws = {"f": {"kernel": "matern", "nu": 1.5, "lengthscale": 2.0, "mean": 0.2},
            "u": {"kernel": "se", "lengthscale": 1.0, "mean": -0.3}}
    den = FieldDenoiser(laws, abar)
    prob.initial_canvas = torch.randn(1, 8, 10, generator=torch.Generator().manual_seed(2),
                                      dtype=F64)

    def run(strategy):
        return sample(prob, den, strategy, sched, seed=0, dtype=F64, progress=False,
                      guidance_scale=guidance_scale).canvas

    full, none, part = (run(make_strategy("regiongraph", mix=b)) for b in (1.0, 0.0, 0.3))
    torch.testing.assert_close(part, 0.7 * none + 0.3 * full, rtol=0, atol=1e-10)
    torch.testing.assert_close(none, run("multidiffusion"), rtol=0, atol=1e-10)
    assert (full - none).abs().max() > 1e-3   # the two ends differ on this grid
    for bad in (-0.1, 1.5, "half", True, float("nan")):
        with pytest.raises(ValueError, match="mix must be"):
            make_strategy("regiongraph", mix=bad)


class _Switch(Strategy):
    """Reference for ``start`` / ``stop``: MultiDiffusion's step before step ``first`` and from
    step ``last`` on, the full region graph in between (written out by hand, not through the
    option under test)."""

    name, init = "switch", "canvas"

    def __init__(self, first, last):
        self.first, self.last = first, last
        self.md, self.rg = make_strategy("multidiffusion"), make_strategy("regiongraph")

    def prepare(self, run):
        self.rg.prepare(run)

    def step(self, run, y, eps, info, noise):
        inside = self.first <= info.index < self.last
        return (self.rg if inside else self.md).step(run, y, eps, info, noise)


class _Counting:
    def __init__(self, den):
        self.den, self.inputs = den, 0

    def __call__(self, x_t, t, cond=None):
        self.inputs += x_t.shape[0]
        return self.den(x_t, t, cond)


@pytest.mark.parametrize("start,stop,first,last", [(0.5, 1.0, 2, 4), (0.0, 0.5, 0, 2),
                                                   (0.25, 0.75, 1, 3)])
def test_start_and_stop_compose_regions_only_inside_their_fraction_of_the_steps(start, stop,
                                                                                first, last):
    sched = SamplingSchedule.preset("sd", 4)
    prob = wide_problem((1, 8, 10), window=(4, 6), stride=(2, 2), cond="f")
    den = FieldDenoiser({"f": {"kernel": "matern", "nu": 1.5, "lengthscale": 2.0}}, sched.abar)
    counted = _Counting(den)
    got = sample(prob, counted, make_strategy("regiongraph", start=start, stop=stop), sched,
                 seed=3, dtype=F64, progress=False).canvas
    want = sample(prob, den, _Switch(first, last), sched, seed=3, dtype=F64, progress=False).canvas
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    full = sample(prob, den, "regiongraph", sched, seed=3, dtype=F64, progress=False).canvas
    assert (got - full).abs().max() > 1e-4   # the schedule changes the result
    # the region inputs are paid only on the active steps
    strategy = make_strategy("regiongraph")
    plain = _Counting(den)
    sample(prob, plain, strategy, sched, seed=3, dtype=F64, progress=False)
    windows = prob.views.num_views
    extra = strategy.extra_inputs_per_step
    assert plain.inputs == 4 * (windows + extra)
    assert counted.inputs == 4 * windows + (last - first) * extra


def test_start_and_stop_are_checked():
    for bad in (-0.1, 1.5, "half", True, float("nan")):
        with pytest.raises(ValueError, match="start must be"):
            make_strategy("regiongraph", start=bad)
        with pytest.raises(ValueError, match="stop must be"):
            make_strategy("regiongraph", stop=bad)
    with pytest.raises(ValueError, match="start must be below stop"):
        make_strategy("regiongraph", start=0.5, stop=0.5)
