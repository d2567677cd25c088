"""SyncVC on the shared engine: zero iterations is SyncSDE bit for bit, the controls lower the
objective they minimise (greedy and joint, Tweedie-only and through the model), rewards against
direct references (window overlap, illusion transform, the adjoint reward), the extra reward,
paper defaults, and clear errors for bad options."""
import math

import pytest
import torch

from syncsde.denoisers.base import predict_eps
from syncsde.guidance import SyncVC
from syncsde.priors import FieldDenoiser, GaussianPrior, PriorDenoiser
from syncsde.sampler import SamplingSchedule, _Run, sample
from syncsde.tasks import ambiguous_problem, wide_problem

DT = torch.float64
SCHED = SamplingSchedule.preset("sd", 6)
FIELD = {"f": {"kernel": "se", "lengthscale": 2.0}}


def wide():
    return wide_problem((1, 4, 16), window=(4, 8), stride=(1, 4), cond="f")


def ambiguous():
    a = GaussianPrior.field("se", (6, 6), lengthscale=1.0, mean=0.5)
    b = GaussianPrior.field("se", (6, 6), lengthscale=2.5, mean=-0.5)
    return ambiguous_problem((1, 6, 6), "rot90_cw", "A", "B"), PriorDenoiser({"A": a, "B": b}, SCHED.abar)


def run_for(prob, den, batch=3):
    v = prob.views
    return _Run(v, prob.correlation, None, list(SCHED.timesteps), DT, torch.device("cpu"), 1,
                None, den, list(prob.cond), None, 1.0, None)


def state(prob, den, k=2, batch=3, seed=0):
    info = SCHED.steps()[k]
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(prob.views.num_views, batch, *prob.views.view_shape, generator=g, dtype=DT)
    eps = predict_eps(den, y.reshape(-1, *y.shape[2:]), info.t, info.abar_t,
                      [c for c in prob.cond for _ in range(batch)]).reshape(y.shape)
    return y, eps, info


def x0_of(y, eps, a):
    return (y - math.sqrt(1 - a) * eps) / math.sqrt(a)


def wide_refs(x0, views):
    """Direct reference of Eq. 8: window i-1 shifted by the stride onto window i's overlap."""
    ref = torch.zeros_like(x0)
    mask = torch.zeros(x0.shape[0], 1, 1, *x0.shape[-2:], dtype=x0.dtype)
    lefts = views.offsets[:, 1].tolist()
    w = views.size[1]
    for i in range(1, len(lefts)):
        shift = lefts[i] - lefts[i - 1]
        ref[i, ..., : w - shift] = x0[i - 1, ..., shift:]
        mask[i, ..., : w - shift] = 1
    return ref, mask


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_zero_iterations_is_syncsde_bit_for_bit(eta):
    prob, den = wide(), FieldDenoiser(FIELD, SCHED.abar)
    base = sample(prob, den, "syncsde", SCHED, seed=2, batch=3, eta=eta, inv_lambda=5.0,
                  progress=False, dtype=DT)
    for opts in ({"iterations": 0}, {"iterations": 0, "lr": 0.0}, {"strength": 0.0},
                 {"reward_weight": 0.0}):
        vc = sample(prob, den, "syncvc", SCHED, seed=2, batch=3, eta=eta, inv_lambda=5.0,
                    progress=False, dtype=DT, **opts)
        assert torch.equal(base.views, vc.views) and torch.equal(base.canvas, vc.canvas)
    vc = sample(prob, den, "syncvc", SCHED, seed=2, batch=3, eta=eta, inv_lambda=5.0,
                progress=False, dtype=DT)
    assert not torch.equal(base.views, vc.views)


def objective(s, x0, ref, mask, y_ctrl, y):
    """The SyncVC loss per view (sum over batch), written out directly."""
    u = (y_ctrl - y) / s.strength
    data = s.reward_weight * (mask * (x0 - ref) ** 2).mean(dim=(-3, -2, -1))
    kl = s.kl_weight * ((s.strength * u) ** 2).mean(dim=(-3, -2, -1))
    return (data + kl).sum(-1)


@pytest.mark.parametrize("reward", ["correlation", "adjoint"])
@pytest.mark.parametrize("order", ["greedy", "joint"])
@pytest.mark.parametrize("grad_through", ["tweedie", "model"])
def test_controls_lower_the_objective_on_window_overlaps(reward, order, grad_through):
    prob, den = wide(), FieldDenoiser(FIELD, SCHED.abar)
    s = SyncVC(reward=reward, order=order, grad_through=grad_through, lr=0.05, iterations=4)
    run = run_for(prob, den)
    s.prepare(run)
    assert s._iters == 4
    y, eps, info = state(prob, den)
    a = info.abar_t
    ref0, mask = wide_refs(x0_of(y, eps, a), prob.views)
    before = objective(s, x0_of(y, eps, a), ref0, mask, y, y)
    y1, eps1 = y.clone(), eps.clone()
    (s._greedy if order == "greedy" else s._joint)(run, y1, eps1, info)
    assert torch.equal(y1[0], y[0])  # view 0: no reward, no control
    x1 = x0_of(y1, eps1, a)
    if grad_through == "model":  # eps refreshed at the controlled states
        want = predict_eps(den, y1.reshape(-1, 1, 4, 8), info.t, a, ["f"] * 9).reshape(y.shape)
        torch.testing.assert_close(eps1, want, rtol=0, atol=1e-12)
    ref1, _ = wide_refs(x1, prob.views)  # greedy: references from controlled earlier views
    after = objective(s, x1, ref1, mask, y1, y)
    assert bool((after[1:] < before[1:]).all()), (before, after)
    expected_backward = 4 * (2 if order == "greedy" else 1)
    assert s.costs.backward == expected_backward


def test_adjoint_reward_reference_is_the_illusion_transform():
    prob, den = ambiguous()
    s = SyncVC(reward="adjoint")
    s.prepare(run_for(prob, den))
    x0 = torch.randn(2, 3, 1, 6, 6, dtype=DT)
    ref, mask = s._adjoint_ref(run_for(prob, den), x0, 1)
    # view 0 is the identity, view 1 = rot90_cw: ref_1 = rot90_cw(x0_0) on every pixel
    torch.testing.assert_close(ref, torch.rot90(x0[0], -1, (-2, -1)))
    assert bool((mask == 1).all())
    # and the correlation reward (the task's PreviousView) gives the same reference
    ref_c = prob.correlation.references(x0, prob.views)[1]
    torch.testing.assert_close(ref_c, ref)


def test_illusion_controls_pull_view_two_towards_the_transformed_view_one():
    prob, den = ambiguous()
    s = SyncVC(lr=0.05, kl_weight=0.0)
    run = run_for(prob, den)
    s.prepare(run)
    assert s._iters == 5 and s._controlled == [1]
    y, eps, info = state(prob, den)
    a = info.abar_t
    gap = lambda yy, ee: (x0_of(yy, ee, a)[1] - torch.rot90(x0_of(yy, ee, a)[0], -1, (-2, -1))).abs().mean()
    g0 = gap(y, eps)
    s._greedy(run, y, eps, info)
    assert gap(y, eps) < g0


def test_extra_reward_controls_view_zero_too():
    prob, den = wide(), FieldDenoiser(FIELD, SCHED.abar)
    calls = []

    def brighter(images, view):
        calls.append(view)
        return images.mean(dim=(1, 2, 3))

    s = SyncVC(extra_reward=brighter, reward_weight=0.0, lr=0.05)
    run = run_for(prob, den)
    s.prepare(run)
    y, eps, info = state(prob, den)
    y0 = y.clone()
    s._greedy(run, y, eps, info)
    assert sorted(set(calls)) == [0, 1, 2]
    assert bool(((y - y0).mean(dim=(-3, -2, -1)) > 0).all())  # every view moved up


@pytest.mark.parametrize("kw, match", [
    ({"iterations": 0, "lr": 0.1}, "iterations=0"), ({"iterations": 3, "lr": 0.0}, "lr=0"),
    ({"iterations": -1}, "iterations"), ({"iterations": 2.0}, "iterations"),
    ({"iterations": True}, "iterations"), ({"lr": -0.1}, "lr"),
    ({"reward_weight": -1.0}, "reward_weight"), ({"kl_weight": -0.5}, "kl_weight"),
    ({"strength": float("inf")}, "strength"), ({"reward": "lpips"}, "reward"),
    ({"order": "random"}, "order"), ({"extra_reward": 1.0}, "extra_reward"),
    ({"grad_through": "vae"}, "grad_through"), ({"inv_lambda": -1.0}, "inv_lambda")])
def test_bad_options_are_clear_errors(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SyncVC(**kw)


def test_texture_views_default_to_three_iterations():
    trimesh = pytest.importorskip("trimesh")
    from syncsde.mesh import Camera, TextureEarlierViews, TextureViews, mesh_from_arrays
    from syncsde.sampler import Problem
    s = trimesh.creation.icosphere(1)
    V = TextureViews(mesh_from_arrays(s.vertices, s.faces), [Camera(0, 0, 2.2), Camera(90, 0, 2.2)],
                     6, 5, channels=1)
    den = FieldDenoiser(FIELD, SCHED.abar)
    prob = Problem(V, ["f", "f"], correlation=TextureEarlierViews(), init="independent")
    vc = SyncVC(reward="adjoint")
    r = sample(prob, den, vc, SCHED, progress=False, dtype=DT)
    assert vc._iters == 3 and torch.isfinite(r.views).all()
    assert vc.costs.backward == 3 * len(SCHED.timesteps)  # one controlled view, 3 iterations


def test_adam_converges_to_the_closed_form_control():
    """With eps fixed the objective is quadratic: on masked pixels the optimal control moves the
    clean estimate by rho / (rho + lambda a) of the way to the reference (docs/method.md)."""
    prob, den = wide(), FieldDenoiser(FIELD, SCHED.abar)
    rho, lam = 1.0, 0.5
    s = SyncVC(iterations=400, lr=0.02, reward_weight=rho, kl_weight=lam, strength=1.0)
    run = run_for(prob, den, batch=1)
    s.prepare(run)
    y, eps, info = state(prob, den, k=3, batch=1)
    a = info.abar_t
    x0 = x0_of(y, eps, a)
    ref, mask = wide_refs(x0, prob.views)
    s._greedy(run, y, eps, info)
    x1 = x0_of(y, eps, a)
    # greedy: window 2's reference is the *controlled* window 1
    ref2, _ = wide_refs(x1, prob.views)
    frac = rho / (rho + lam * a)
    for i, r in ((1, ref[1]), (2, ref2[2])):
        want = x0[i] + mask[i] * frac * (r - x0[i])
        torch.testing.assert_close(x1[i], want, rtol=0, atol=0.03)
