"""SyncDiffusion on the shared engine: weight 0 is MultiDiffusion bit for bit, the guided step
lowers the distance it targets (model and Tweedie-only gradients, pixel and Gram distances), the
weight schedule, the distances against NumPy references, differentiable eps against the
sampler's C path and finite differences, and clear errors for bad options."""
import math

import numpy as np
import pytest
import torch

from syncsde.denoisers.base import FunctionDenoiser, predict_eps
from syncsde.guidance import (
    FeatureDistance,
    GramDistance,
    LPIPSDistance,
    PixelDistance,
    SyncDiffusion,
    differentiable_eps,
)
from syncsde.priors import (
    FieldDenoiser,
    GaussianMixturePrior,
    GaussianPrior,
    PriorDenoiser,
)
from syncsde.sampler import SamplingSchedule, _Run, sample
from syncsde.tasks import wide_problem

DT = torch.float64
SCHED = SamplingSchedule.preset("sd", 6)
FIELD = {"f": {"kernel": "se", "lengthscale": 2.0}}


def wide():
    return wide_problem((1, 4, 16), window=(4, 8), stride=(1, 4), cond="f")


def run_for(prob, den, batch=3):
    v = prob.views
    return _Run(v, prob.correlation, None, list(SCHED.timesteps), DT, torch.device("cpu"), 1,
                torch.zeros(batch, *v.canvas_shape, dtype=DT), den, list(prob.cond), None, 1.0, None)


def state(prob, den, k=2, batch=3, seed=0):
    """Views at step k's level (random, not consistent: a harder case) and their eps."""
    info = SCHED.steps()[k]
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(prob.views.num_views, batch, *prob.views.view_shape, generator=g, dtype=DT)
    eps = predict_eps(den, y.reshape(-1, *y.shape[2:]), info.t, info.abar_t,
                      [c for c in prob.cond for _ in range(batch)]).reshape(y.shape)
    return y, eps, info


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_weight_zero_is_multidiffusion_bit_for_bit(eta):
    prob, den = wide(), FieldDenoiser(FIELD, SCHED.abar)
    md = sample(prob, den, "multidiffusion", SCHED, seed=3, batch=4, eta=eta, progress=False, dtype=DT)
    for opts in ({"weight": 0.0}, {"first": 0}):
        sd = sample(prob, den, "syncdiffusion", SCHED, seed=3, batch=4, eta=eta, progress=False,
                    dtype=DT, **opts)
        assert torch.equal(md.canvas, sd.canvas) and torch.equal(md.views, sd.views)
    # and a positive weight does change the result
    sd = sample(prob, den, "syncdiffusion", SCHED, seed=3, batch=4, eta=eta, progress=False, dtype=DT)
    assert not torch.equal(md.canvas, sd.canvas)


@pytest.mark.parametrize("distance", ["pixel", "gram"])
@pytest.mark.parametrize("grad_through", ["model", "tweedie"])
def test_a_guided_step_lowers_the_distance_to_the_anchor(distance, grad_through):
    prob, den = wide(), FieldDenoiser(FIELD, SCHED.abar)
    s = SyncDiffusion(weight=0.05, distance=distance, grad_through=grad_through, refresh=True)
    run = run_for(prob, den)
    s.prepare(run)
    y, eps, info = state(prob, den)
    before = s.distances(y, eps, info.abar_t)
    assert torch.all(before[s._anchor] == 0)
    s._guide(run, y, eps, info, 0.05)
    after = s.distances(y, eps, info.abar_t)
    others = s._others
    assert torch.all(after[others] < before[others]), (before, after)
    # refresh left eps equal to the model's prediction at the moved states
    want = predict_eps(den, y.reshape(-1, *y.shape[2:]), info.t, info.abar_t,
                       ["f"] * (3 * y.shape[0])).reshape(y.shape)
    torch.testing.assert_close(eps, want, rtol=0, atol=1e-12)
    assert s.costs.backward == 1 and s.costs.guided_steps == 1


def test_the_gradient_is_the_distance_gradient_by_finite_differences():
    """The step moves window j by -w * grad_j d(x0_j(y_j), x0_anchor); check grad_j against central
    differences of the distance through the exact prior (no autograd in the reference)."""
    prob, den = wide(), FieldDenoiser(FIELD, SCHED.abar)
    s = SyncDiffusion(weight=1.0, distance="pixel", refresh=False, anchor=0)
    run = run_for(prob, den, batch=1)
    s.prepare(run)
    y, eps, info = state(prob, den, batch=1)
    y0 = y.clone()
    s._guide(run, y, eps, info, 1.0)
    grad = (y0 - y)[1, 0]  # window 1's step = its gradient (w = 1)
    a = info.abar_t
    x0a = ((y0[0] - math.sqrt(1 - a) * eps[0]) / math.sqrt(a)).numpy()

    def dist(yj):
        e = den(torch.from_numpy(yj)[None], info.t, ["f"])[0].numpy()
        x0 = (yj - math.sqrt(1 - a) * e) / math.sqrt(a)
        return float(np.mean((x0 - x0a[0]) ** 2))

    base = y0[1, 0].numpy()
    fd = np.zeros_like(base)
    h = 1e-6
    for idx in np.ndindex(base.shape):
        p, m = base.copy(), base.copy()
        p[idx] += h
        m[idx] -= h
        fd[idx] = (dist(p) - dist(m)) / (2 * h)
    np.testing.assert_allclose(grad.numpy(), fd, rtol=1e-5, atol=1e-8)


def test_weight_schedule_every_and_first():
    s = SyncDiffusion(weight=20.0, decay=0.95, every=5, first=12)
    want = [20.0 * 0.95 ** k if (k + 1) % 5 == 0 and k < 12 else 0.0 for k in range(50)]
    assert [s.weight_at(k) for k in range(50)] == pytest.approx(want)
    assert [k for k in range(50) if s.weight_at(k)] == [4, 9]


@pytest.mark.parametrize("kw, match", [
    ({"weight": -1.0}, "weight"), ({"weight": float("nan")}, "weight"),
    ({"decay": 0.0}, "decay"), ({"decay": 1.5}, "decay"), ({"every": 0}, "every"),
    ({"first": -1}, "first"), ({"distance": "lpips"}, "distance"), ({"distance": 3}, "distance"),
    ({"grad_through": "unet"}, "grad_through"), ({"decode": "vae"}, "decode"),
    ({"every": 2.0}, "every"), ({"refresh": 1}, "refresh"), ({"anchor": -2}, "anchor")])
def test_bad_options_are_clear_errors(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SyncDiffusion(**kw)


def test_anchor_outside_the_views_and_black_box_models_are_refused():
    prob = wide()
    den = FieldDenoiser(FIELD, SCHED.abar)
    with pytest.raises(ValueError, match="anchor view 7"):
        sample(prob, den, "syncdiffusion", SCHED, anchor=7, progress=False)
    box = FunctionDenoiser(lambda x, t, c: den(x.detach(), t, c))
    with pytest.raises(ValueError, match="tweedie"):
        sample(prob, box, "syncdiffusion", SCHED, progress=False)
    r = sample(prob, box, "syncdiffusion", SCHED, grad_through="tweedie", progress=False)
    assert torch.isfinite(r.canvas).all()


def test_decode_hook_is_applied_to_both_sides():
    prob, den = wide(), FieldDenoiser(FIELD, SCHED.abar)
    seen = []

    def decode(z):
        seen.append(tuple(z.shape))
        return torch.tanh(z) * 2

    r = sample(prob, den, "syncdiffusion", SCHED, decode=decode, batch=2, progress=False, dtype=DT)
    assert torch.isfinite(r.canvas).all()
    assert (2, 1, 4, 8) in seen and (2 * 2, 1, 4, 8) in seen  # anchor, then the 2 other windows


# ---- distances ----------------------------------------------------------------------------
def test_pixel_and_gram_distances_against_numpy():
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 2, 5, 6, generator=g, dtype=DT), torch.randn(1, 2, 5, 6, generator=g, dtype=DT)
    np.testing.assert_allclose(PixelDistance()(x, t).numpy(),
                               ((x - t) ** 2).numpy().reshape(2, -1).mean(1))

    def feats(a):  # [C, H, W] -> [3C, H*W]: channels, right and down differences (0 at the edge)
        dx = np.zeros_like(a)
        dy = np.zeros_like(a)
        dx[:, :, :-1] = a[:, :, 1:] - a[:, :, :-1]
        dy[:, :-1, :] = a[:, 1:, :] - a[:, :-1, :]
        return np.concatenate([a, dx, dy]).reshape(3 * a.shape[0], -1)

    want = []
    for b in range(2):
        fx, ft = feats(x[b].numpy()), feats(t[0].numpy())
        gx, gt = fx @ fx.T / fx.shape[1] / fx.shape[0], ft @ ft.T / ft.shape[1] / ft.shape[0]
        want.append(np.mean((gx - gt) ** 2))
    np.testing.assert_allclose(GramDistance()(x, t).numpy(), want)


def test_feature_and_lpips_hooks():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).double()
    d = FeatureDistance(net)
    x = torch.randn(2, 3, 6, 6, dtype=DT, requires_grad=True)
    assert torch.allclose(d(x, x.detach()), torch.zeros(2, dtype=DT), atol=1e-12)
    out = d(x, torch.randn(1, 3, 6, 6, dtype=DT))
    assert out.shape == (2,) and bool((out > 0).all())
    out.sum().backward()
    assert x.grad is not None

    class FakeLPIPS(torch.nn.Module):
        def forward(self, a, b):
            self.seen = (float(a.min()), float(a.max()))
            return ((a - b) ** 2).mean(dim=(1, 2, 3), keepdim=True)

    m = FakeLPIPS()
    lp = LPIPSDistance(m, input_range=(0, 1))
    v = lp(torch.ones(3, 3, 4, 4, dtype=DT), torch.zeros(1, 3, 4, 4, dtype=DT))
    assert m.seen == (1.0, 1.0) and torch.allclose(v, torch.full((3,), 4.0, dtype=DT))
    with pytest.raises(ValueError, match="input_range"):
        LPIPSDistance(m, input_range=(1, 0))


# ---- differentiable eps ---------------------------------------------------------------------
def _laws():
    a = GaussianPrior.field("se", (3, 4), lengthscale=1.5, mean=0.3)
    b = GaussianPrior.field("matern", (3, 4), lengthscale=2.0, mean=-0.5)
    return {"a": a, "b": b, "mix": GaussianMixturePrior([a, b], [0.3, 0.7])}


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_differentiable_eps_equals_the_sampler_path_and_finite_differences(kind):
    den = PriorDenoiser(_laws(), SCHED.abar, prediction_type=kind)
    info = SCHED.steps()[2]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 3, 4, generator=g, dtype=DT, requires_grad=True)
    cond, neg = ["a", "mix", "b", "mix"], ["b", None, "a", "a"]
    for gs in (1.0, 3.0):
        want = predict_eps(den, x.detach(), info.t, info.abar_t, cond, neg, gs)
        got = differentiable_eps(den, x, info.t, info.abar_t, cond, neg, gs)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        assert torch.autograd.gradcheck(
            lambda z, gs=gs: differentiable_eps(den, z, info.t, info.abar_t, cond, neg, gs), (x,))


def test_scenes_feature_distance_is_a_differentiable_perceptual_distance():
    from syncsde.guidance.distances import scenes_feature_distance
    from syncsde.scenes.model import CLASSIFIER_DIR
    if not (CLASSIFIER_DIR / "model.safetensors").is_file():
        pytest.skip("no bundled scenes classifier in this checkout")
    d = scenes_feature_distance()
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1).requires_grad_(True)
    same = d(x, x.detach())
    assert torch.allclose(same, torch.zeros(2), atol=1e-6)
    other = d(x, torch.rand(1, 3, 32, 32, generator=g) * 2 - 1)
    assert bool((other > 1e-3).all())
    other.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
