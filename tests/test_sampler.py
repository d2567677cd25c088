"""The lockstep sampler, strategies and tasks on exact-score Gaussian priors."""
from __future__ import annotations


import pytest
import torch

from syncsde import ops
from syncsde.priors import GaussianPrior, PriorDenoiser
from syncsde.sampler import Problem, SamplingSchedule, sample
from syncsde.sequential import _window_seed
from syncsde.strategies import STRATEGIES, SyncSDE
from syncsde.tasks import (ambiguous_problem, edit_problem, masked_problem, sequence_problem,
                           wide_problem)
from syncsde.views import WindowViews, window_offsets

SCHED = SamplingSchedule.preset("sd", 12)


def field_denoiser(shape, keys=("a",), lengthscales=(2.0,)):
    C, H, W = shape
    priors = {k: GaussianPrior.field("se", (H, W), channels=C, lengthscale=l)
              for k, l in zip(keys, lengthscales)}
    return PriorDenoiser(priors, SCHED.abar)


# ---- a slow, obviously sequential reference for SyncSDE on windows -----------------------
def sequential_syncsde(den, views: WindowViews, y_T, inv_lambda, cond="a"):
    """Generate view 0 to the end, store every state; then view 1 pulled to the stored states
    of the earlier views (later on top), and so on."""
    n = views.num_views
    (h, w) = views.size
    steps = SCHED.steps()
    T = max(SCHED.timesteps)
    stored = []  # stored[i][k] = state of view i before step k
    for i in range(n):
        y = y_T[i].clone()
        hist = []
        top, left = (int(v) for v in views.offsets[i])
        for k, info in enumerate(steps):
            hist.append(y.clone())
            eps = den(y[None], info.t, [cond])[0]
            c = ops.ddim_coefficients(info.abar_t, info.abar_s)
            new = c.c_x * y + c.c_eps * eps
            if i > 0:
                canvas = torch.zeros(views.canvas_shape)
                covered = torch.zeros(views.canvas_shape[1:])
                for j in range(i):
                    tj, lj = (int(v) for v in views.offsets[j])
                    canvas[:, tj:tj + h, lj:lj + w] = stored[j][k]
                    covered[tj:tj + h, lj:lj + w] = 1
                ref = canvas[:, top:top + h, left:left + w]
                m = covered[top:top + h, left:left + w]
                new = new - c.gamma * inv_lambda * info.t / T * m * (y - ref)
            y = new
        stored.append(hist)
        stored[i].append(y)
    return torch.stack([stored[i][-1] for i in range(n)])


def test_lockstep_equals_sequential_generation():
    shape = (2, 6, 20)
    den = field_denoiser((2, 6, 8))
    prob = wide_problem(shape, window=(6, 8), stride=(1, 3), cond="a")
    res = sample(prob, den, "syncsde", SCHED, seed=3, progress=False, dtype=torch.float64,
                 inv_lambda=5.0, max_pull=None)
    g = torch.Generator().manual_seed(3)
    canvas = torch.randn(shape, generator=g, dtype=torch.float32).to(torch.float64)
    y_T = prob.views.forward(canvas)
    ref = sequential_syncsde(den, prob.views, y_T, 5.0)
    torch.testing.assert_close(res.views, ref, rtol=0, atol=1e-6)


def test_multidiffusion_equals_synctweedies_on_crops():
    shape = (1, 5, 24)
    den = field_denoiser((1, 5, 8))
    prob = wide_problem(shape, window=(5, 8), stride=(1, 4), cond="a")
    md = sample(prob, den, "multidiffusion", SCHED, seed=1, progress=False, dtype=torch.float64)
    st = sample(prob, den, "synctweedies", SCHED, seed=1, progress=False, dtype=torch.float64)
    torch.testing.assert_close(md.canvas, st.canvas, rtol=0, atol=1e-8)
    ind = sample(prob, den, "independent", SCHED, seed=1, progress=False, dtype=torch.float64)
    assert (ind.canvas - md.canvas).abs().max() > 1e-3  # the test can tell strategies apart


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_single_window_every_strategy_is_plain_ddim(name):
    shape = (2, 6, 6)
    den = field_denoiser(shape)
    prob = wide_problem(shape, window=6, stride=2, cond="a")
    assert prob.views.num_views == 1
    strat = STRATEGIES[name]()
    if hasattr(strat, "run"):  # a scheme over whole runs (sequential windows): one window = one run
        res = strat.run(prob, den, SCHED, seed=5, progress=False, dtype=torch.float64)
        seed = _window_seed(5, 0)
    else:
        res = sample(prob, den, strat, SCHED, seed=5, progress=False, dtype=torch.float64)
        seed = 5
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float32).to(torch.float64)[None]
    for info in SCHED.steps():
        x = ops.ddim_step(x, den(x, info.t, ["a"]), info.abar_t, info.abar_s)
    torch.testing.assert_close(res.canvas, x[0], rtol=0, atol=1e-10)


def test_seeds_reproduce_and_differ():
    shape = (1, 4, 16)
    den = field_denoiser((1, 4, 8))
    prob = wide_problem(shape, window=(4, 8), stride=(1, 4), cond="a")
    a = sample(prob, den, "syncsde", SCHED, seed=7, progress=False)
    b = sample(prob, den, "syncsde", SCHED, seed=7, progress=False)
    c = sample(prob, den, "syncsde", SCHED, seed=8, progress=False)
    assert torch.equal(a.canvas, b.canvas)
    assert not torch.equal(a.canvas, c.canvas)


def test_batched_sampling_equals_one_by_one_for_each_sample():
    shape = (1, 4, 12)
    den = field_denoiser((1, 4, 6))
    prob = wide_problem(shape, window=(4, 6), stride=(1, 3), cond="a")
    res = sample(prob, den, "syncsde", SCHED, seed=2, batch=3, progress=False, dtype=torch.float64)
    assert res.canvas.shape == (3, *shape)
    g = torch.Generator().manual_seed(2)
    canvas = torch.randn((3, *shape), generator=g, dtype=torch.float32).to(torch.float64)
    for b in range(3):
        single = Problem(prob.views, prob.cond, correlation=prob.correlation, init="canvas",
                         initial_views={i: v for i, v in enumerate(prob.views.forward(canvas[b]))})
        one = sample(single, den, "syncsde", SCHED, seed=99, progress=False, dtype=torch.float64)
        torch.testing.assert_close(one.canvas, res.canvas[b], rtol=0, atol=1e-10)


def test_checkpoint_resume_after_interruption(tmp_path):
    shape = (1, 4, 16)
    den = field_denoiser((1, 4, 8))
    prob = wide_problem(shape, window=(4, 8), stride=(1, 4), cond="a")
    full = sample(prob, den, "syncsde", SCHED, seed=4, eta=0.5, progress=False)
    ck = str(tmp_path / "run.pt")

    def stop_at_5(k, t, y):
        if k == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample(prob, den, "syncsde", SCHED, seed=4, eta=0.5, progress=False, checkpoint=ck,
               callback=stop_at_5)
    resumed = sample(prob, den, "syncsde", SCHED, seed=4, eta=0.5, progress=False, checkpoint=ck)
    torch.testing.assert_close(resumed.canvas, full.canvas, rtol=0, atol=0)
    other = wide_problem((1, 4, 20), window=(4, 8), stride=(1, 4), cond="a")
    with pytest.raises(ValueError, match="another run"):
        sample(other, field_denoiser((1, 4, 8)), "syncsde", SCHED, progress=False, checkpoint=ck)


def test_window_grid_covers_off_grid_canvases_and_wraps():
    assert window_offsets(20, 8, 5) == [0, 5, 10, 12]
    assert window_offsets(20, 8, 5, circular=True) == [0, 5, 10, 15]
    v = WindowViews.grid((1, 9, 21), (4, 8), (3, 5))
    cov = v.coverage()
    assert (cov > 0).all()
    vc = WindowViews.grid((1, 4, 20), (4, 8), (1, 5), circular=True)
    assert vc.num_views == 4 and (vc.coverage() > 0).all()
    # the last window wraps: it covers columns 15..19 and 0..2
    x = torch.arange(20.0).expand(1, 4, 20).contiguous()
    assert vc.forward(x)[3, 0, 0].tolist() == [15, 16, 17, 18, 19, 0, 1, 2]


def test_callback_and_progress_switch():
    shape = (1, 4, 12)
    den = field_denoiser((1, 4, 6))
    prob = wide_problem(shape, window=(4, 6), stride=(1, 3), cond="a")
    seen = []
    sample(prob, den, "independent", SCHED, progress=False, callback=lambda k, t, y: seen.append(t))
    assert seen == SCHED.timesteps


# ---- bad task input -----------------------------------------------------------------------
def test_bad_inputs_get_clear_errors():
    den = field_denoiser((1, 4, 6))
    with pytest.raises(ValueError, match="larger than the canvas"):
        wide_problem((1, 4, 12), window=(4, 16), stride=4)
    with pytest.raises(ValueError, match="mask has shape"):
        masked_problem((1, 8, 8), torch.zeros(4, 4), "a", "b", "c")
    with pytest.raises(ValueError, match="unknown view"):
        ambiguous_problem((1, 8, 8), "rot45", "a", "b")
    with pytest.raises(ValueError, match="inv_lambda"):
        SyncSDE(inv_lambda=-1.0)
    with pytest.raises(ValueError, match="num_steps"):
        SamplingSchedule.preset("sd", 0)
    with pytest.raises(ValueError, match="zero steps"):
        sample(wide_problem((1, 4, 12), (4, 6), 3, cond="a"), den,
               schedule=SamplingSchedule(SCHED.abar, [], 1.0))
    with pytest.raises(ValueError, match="unknown strategy"):
        sample(wide_problem((1, 4, 12), (4, 6), 3, cond="a"), den, "magic", SCHED)
    with pytest.raises(ValueError, match="overlap"):
        sequence_problem(3, 100, window=40, overlap=40)


def test_nan_from_denoiser_is_reported_with_the_step():
    prob = wide_problem((1, 4, 12), window=(4, 6), stride=3, cond="a")

    def bad(x, t, cond):
        return torch.full_like(x, float("nan")) if t < 500 else torch.zeros_like(x)

    from syncsde.denoisers import FunctionDenoiser
    with pytest.raises(FloatingPointError, match="non-finite values at step"):
        sample(prob, FunctionDenoiser(bad), "syncsde", SCHED, progress=False)


# ---- tasks run end to end on priors -------------------------------------------------------
def test_tasks_run_and_syncsde_pulls_where_it_should():
    shape = (1, 8, 8)
    den = field_denoiser(shape, keys=("a", "b", "c"), lengthscales=(1.0, 3.0, 2.0))
    amb = ambiguous_problem(shape, "rot90_cw", "a", "b")
    free = sample(amb, den, "independent", SCHED, seed=0, progress=False)
    sync = sample(amb, den, "syncsde", SCHED, seed=0, progress=False)
    torch.testing.assert_close(free.views[0], sync.views[0])  # trajectory 1 is free
    gap_free = (ops.dihedral(free.views[0], "rot90_cw") - free.views[1]).abs().mean()
    gap_sync = (ops.dihedral(sync.views[0], "rot90_cw") - sync.views[1]).abs().mean()
    assert gap_sync < 0.5 * gap_free

    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1
    mp = masked_problem(shape, mask, "a", "b", "c")
    free = sample(mp, den, "independent", SCHED, seed=0, progress=False)
    sync = sample(mp, den, "syncsde", SCHED, seed=0, progress=False)
    assert sync.output.shape == shape
    torch.testing.assert_close(free.views[0], sync.views[0])  # the background is free

    def gaps(r):
        return (((r.output - r.views[0]) * (1 - mask)).abs().mean(),
                ((r.output - r.views[1]) * mask).abs().mean())

    (bg_free, obj_free), (bg_sync, obj_sync) = gaps(free), gaps(sync)
    assert bg_sync < 0.5 * bg_free and obj_sync < 0.5 * obj_free

    x_T = torch.randn(shape)
    ep = edit_problem(x_T, mask, "a", "b", null=None)
    res = sample(ep, den, "syncsde", SCHED, seed=0, progress=False, guidance_scale=2.0)
    assert res.output.shape == shape

    seq = sequence_problem(2, 30, window=10, overlap=4, cond="s")
    den_seq = PriorDenoiser({"s": GaussianPrior.field("se", (1, 10), channels=2, lengthscale=2.0)},
                            SCHED.abar)
    res = sample(seq, den_seq, "syncsde", SCHED, seed=0, progress=False, inv_lambda=3.0)
    assert res.canvas.shape == (2, 1, 30) and torch.isfinite(res.canvas).all()
