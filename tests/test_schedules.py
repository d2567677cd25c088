"""Schedules and timestep lists against diffusers' DDIMScheduler; SyncSDE reference values."""
from __future__ import annotations


import pytest
import torch

from syncsde import ops
from syncsde import schedules as S

diffusers = pytest.importorskip("diffusers")
DDIMScheduler = diffusers.DDIMScheduler

SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
          set_alpha_to_one=False, clip_sample=False, num_train_timesteps=1000)
IF = dict(beta_schedule="squaredcos_cap_v2", steps_offset=0, set_alpha_to_one=True,
          clip_sample=False, thresholding=False, num_train_timesteps=1000)


def _ours(cfg):
    abar = S.alphas_cumprod(cfg["beta_schedule"], cfg["num_train_timesteps"],
                            cfg.get("beta_start", 0.0001), cfg.get("beta_end", 0.02))
    return abar, S.final_abar(abar, cfg["set_alpha_to_one"])


@pytest.mark.parametrize("kind,kw,rtol", [
    ("scaled_linear", dict(beta_start=0.00085, beta_end=0.012), 2e-6),
    ("linear", dict(beta_start=0.0001, beta_end=0.02), 2e-6),
    ("squaredcos_cap_v2", {}, 2e-5),  # the last entries (~1e-9) carry float32 cumprod error
])
def test_alphas_cumprod_matches_diffusers(kind, kw, rtol):
    ours = S.alphas_cumprod(kind, 1000, **kw)
    ref = DDIMScheduler(beta_schedule=kind, **kw).alphas_cumprod
    assert ours.dtype == torch.float64 and ours.shape == (1000,)
    torch.testing.assert_close(ours, ref.double(), rtol=rtol, atol=1e-9)


def test_cosine_is_squaredcos_cap_v2():
    torch.testing.assert_close(S.alphas_cumprod("cosine"), S.alphas_cumprod("squaredcos_cap_v2"),
                               rtol=0, atol=0)
    betas = 1 - S.alphas_cumprod("cosine") / torch.cat([torch.ones(1, dtype=torch.float64),
                                                        S.alphas_cumprod("cosine")[:-1]])
    assert float(betas.max()) == pytest.approx(0.999)


def test_alphas_cumprod_bad_kind():
    with pytest.raises(ValueError, match="unknown schedule kind"):
        S.alphas_cumprod("quadratic")


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 7, 10, 30, 50, 333, 1000])
@pytest.mark.parametrize("offset", [0, 1])
def test_ddim_timesteps_match_diffusers(spacing, n, offset):
    sch = DDIMScheduler(timestep_spacing=spacing, steps_offset=offset)
    sch.set_timesteps(n)
    assert S.ddim_timesteps(n, 1000, spacing, offset) == sch.timesteps.tolist()


def test_ddim_timesteps_errors():
    with pytest.raises(ValueError, match="spacing"):
        S.ddim_timesteps(10, spacing="karras")
    with pytest.raises(ValueError, match="num_inference_steps"):
        S.ddim_timesteps(1001)


def test_known_timestep_lists():
    sd = S.ddim_timesteps(50, steps_offset=1)
    assert sd[:3] == [981, 961, 941] and sd[-1] == 1
    ifs = S.ddim_timesteps(30)
    assert ifs[:2] == [957, 924] and ifs[-2:] == [33, 0]


def test_step_pairs_and_prev_abar():
    abar = S.alphas_cumprod("scaled_linear")
    ts = S.ddim_timesteps(50, steps_offset=1)
    pairs = S.step_pairs(ts, 1000, 50)
    assert pairs[0] == (981, 961) and pairs[-1] == (1, -19)
    final = S.final_abar(abar, False)
    assert final == float(abar[0]) and S.final_abar(abar, True) == 1.0
    assert S.prev_abar(abar, 1, -19, final) == final
    assert S.prev_abar(abar, 981, 961, final) == float(abar[961])
    assert S.step_abars(abar, pairs[:1], final) == [(float(abar[981]), float(abar[961]))]


@pytest.mark.parametrize("cfg,n", [(SD, 50), (IF, 30)])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step_matches_diffusers(cfg, n, eta):
    sch = DDIMScheduler(**cfg)
    sch.set_timesteps(n)
    abar, final = _ours(cfg)
    ts = S.ddim_timesteps(n, 1000, "leading", cfg["steps_offset"])
    assert ts == sch.timesteps.tolist()
    abar_d = sch.alphas_cumprod.double()
    final_d = float(sch.final_alpha_cumprod)
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for t, s in S.step_pairs(ts, 1000, n):
        x = torch.randn(2, 4, 8, 8, generator=g)
        eps = torch.randn(2, 4, 8, 8, generator=g)
        z = torch.randn(2, 4, 8, 8, generator=g)
        # diffusers on float64 copies of the float32 inputs: its own float32 arithmetic loses up
        # to 1/sqrt(abar_t) ~ 17x float32 eps at IF's first step, which is not what we test.
        ref = sch.step(eps.double(), t, x.double(), eta=eta,
                       variance_noise=z.double() if eta > 0 else None).prev_sample
        # (a) the step rule: same (float32) abar table as the scheduler -> 1e-6
        ours = ops.ddim_step(x, eps, float(abar_d[t]), S.prev_abar(abar_d, t, s, final_d), eta=eta,
                             noise=z if eta > 0 else None)
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours.double(), ref, rtol=1e-6, atol=1e-6)
        # (b) with our float64 table. Near abar_t = 1 (IF, t = 0: 1 - abar ~ 4e-5) diffusers'
        # float32 abar carries ~1e-3 relative error in sqrt(1 - abar): up to ~5e-6 in x_s.
        ours = ops.ddim_step(x, eps, float(abar[t]), S.prev_abar(abar, t, s, final), eta=eta,
                             noise=z if eta > 0 else None)
        torch.testing.assert_close(ours.double(), ref, rtol=1e-6, atol=1e-5)
        worst = max(worst, float((ours.double() - ref).abs().max()))
    print(f"max |ours - diffusers| = {worst:.2e}")


SD_REF = {981: (0.1236, 5.0), 501: (0.0675, 2.5535), 21: (0.7144, 0.1070), 1: (0.2941, 0.0051)}
IF_REF = {957: 0.7876, 495: 0.1028, 33: 0.902}


def test_syncsde_reference_values_sd():
    abar, final = _ours(SD)
    ts = S.ddim_timesteps(50, steps_offset=1)
    sched = S.LinearInvLambda(5.0).bind(ts)
    assert sched.T == 981
    seen = set()
    for t, s in S.step_pairs(ts, 1000, 50):
        if t in SD_REF:
            gamma = ops.ddim_coefficients(float(abar[t]), S.prev_abar(abar, t, s, final)).gamma
            assert round(gamma, 4) == pytest.approx(SD_REF[t][0], abs=1e-12)
            assert round(sched(t), 4) == pytest.approx(SD_REF[t][1], abs=1e-12)
            seen.add(t)
    assert seen == set(SD_REF)


def test_syncsde_reference_values_if():
    abar, final = _ours(IF)
    ts = S.ddim_timesteps(30)
    sched = S.LinearInvLambda(5.0).bind(ts)
    seen = set()
    for t, s in S.step_pairs(ts, 1000, 30):
        if t in IF_REF:
            gamma = ops.ddim_coefficients(float(abar[t]), S.prev_abar(abar, t, s, final)).gamma
            assert round(gamma, 3) == pytest.approx(round(IF_REF[t], 3), abs=1e-12)
            seen.add(t)
    assert seen == set(IF_REF)
    assert sched(957) == 5.0 and sched(0) == 0.0
    assert sched(495) == pytest.approx(2.586, abs=5e-4)


def test_inv_lambda_schedules():
    lin = S.LinearInvLambda(3.0, T=100)
    assert lin(50) == 1.5 and lin.bind([1, 2]) is lin
    with pytest.raises(ValueError, match="bind"):
        S.LinearInvLambda(5.0)(10)
    assert S.ConstantInvLambda(2.0)(999) == 2.0
    mesh = S.CutoffInvLambda(S.LinearInvLambda(5.0, T=1000), t_min=200)
    assert mesh(958) == pytest.approx(4.79) and mesh(232) == pytest.approx(1.16)
    assert mesh(200) == 0.0 and mesh(34) == 0.0
    lazy = S.CutoffInvLambda(S.LinearInvLambda(5.0)).bind([901, 501, 1])
    assert lazy(901) == 5.0 and lazy(150) == 0.0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="inv_lambda"):
            S.LinearInvLambda(bad)
        with pytest.raises(ValueError):
            S.ConstantInvLambda(bad)


def test_linear_inv_lambda_binds_a_one_step_schedule_at_t0():
    """diffusers' leading spacing with one step samples only t = 0: the pull there is 0 (the
    authors' 1/lambda(t) = inv_lambda t / T), not an error."""
    from syncsde.schedules import LinearInvLambda

    s = LinearInvLambda(5.0).bind([0])
    assert s(0) == 0.0
    assert LinearInvLambda(5.0).bind([981, 1])(981) == 5.0


def test_one_step_syncsde_run_on_the_scenes_model():
    pytest.importorskip("diffusers")
    import torch

    from syncsde.models import load_pipeline
    from syncsde.pipelines import wide_image

    torch.set_num_threads(1)
    r = wide_image(load_pipeline("scenes"), "a day over the sea", height=32, width=64,
                   num_inference_steps=1, guidance_scale=3.0, progress=False)
    assert r.tensors.shape == (1, 3, 32, 64) and torch.isfinite(r.tensors).all()
