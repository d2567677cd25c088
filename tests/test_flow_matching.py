"""Flow matching (SD3, FLUX) on tiny models built from configs: parity with the diffusers
pipelines under ``independent``, the eps <-> velocity conversion, the SyncSDE term in velocity
form (docs/models/flow_matching.md), FLUX's shift and guidance, clear refusals."""
from __future__ import annotations

import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("diffusers")

import diffusers  # noqa: E402
import tiny_models as tm  # noqa: E402

from syncsde import pipelines as P  # noqa: E402
from syncsde.denoisers.flow import FluxDenoiser, SD3Denoiser  # noqa: E402
from syncsde.models import denoiser_from_pipeline, infer_kind  # noqa: E402
from syncsde.sampler import _Run  # noqa: E402
from syncsde.solvers import FLOW_SIGMA_CAP, DiffusersSolver, FlowMatchSolver  # noqa: E402
from syncsde.strategies import Independent, SyncSDE  # noqa: E402
from syncsde.tasks import wide_problem  # noqa: E402

STEPS = 4
PROMPTS = ["a photo of a cat", "a dog on the grass"]


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    return tm.sd3_pipeline(tmp_path_factory.mktemp("sd3"))


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    return tm.flux_pipeline(tmp_path_factory.mktemp("flux"))


def _close(a, b, tol=1e-4):
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    assert a.shape == b.shape, (a.shape, b.shape)
    err = float((a - b).abs().max())
    assert err <= tol * max(1.0, float(b.abs().max())), err
    return err


def _ours(pipe, prompt, **kw):
    kw.setdefault("num_inference_steps", STEPS)
    kw.setdefault("guidance_scale", 5.0)  # the task default (7.5) is not the pipelines' (7 / 3.5)
    return P.wide_image(pipe, prompt, height=32, width=32, window=32, strategy="independent",
                        progress=False, **kw)


def _theirs(pipe, prompt, **kw):
    kw.setdefault("num_inference_steps", STEPS)
    kw.setdefault("guidance_scale", 5.0)
    out = pipe(prompt, height=32, width=32, **kw).images
    if isinstance(pipe, diffusers.FluxPipeline) and kw.get("output_type") == "latent":
        out = FluxDenoiser.unpack(out, 16, 16)  # FLUX returns packed latents
    return out


# ---- parity with the pipelines ----------------------------------------------------------------
def test_adapters(sd3, flux):
    assert isinstance(denoiser_from_pipeline(sd3), SD3Denoiser)
    den = denoiser_from_pipeline(flux)
    assert isinstance(den, FluxDenoiser) and den.latent_channels == 4
    assert infer_kind("stabilityai/stable-diffusion-3-medium-diffusers") == "sd3"
    assert infer_kind("black-forest-labs/FLUX.1-dev") == "flux"


@pytest.mark.parametrize("negative", [None, "a red car"])
def test_sd3_one_window_equals_the_pipeline(sd3, negative):
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    ours = _ours(sd3, "a photo of a cat", negative_prompt=negative, guidance_scale=7.0,
                 output_type="latent", generator=g())
    ref = _theirs(sd3, "a photo of a cat", negative_prompt=negative, guidance_scale=7.0,
                  output_type="latent", generator=g())
    assert ours.settings["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    _close(ours.images, ref)


def test_sd3_batch_decode_and_callback(sd3):
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    ours = _ours(sd3, PROMPTS, num_images_per_prompt=2, output_type="pt", generator=g())
    ref = _theirs(sd3, PROMPTS, num_images_per_prompt=2, output_type="pt", generator=g())
    assert ours.images.shape == (4, 3, 32, 32)
    _close(ours.images, ref)  # decode with the VAE's shift factor

    def halve(pipe, i, t, kw):
        if i == 1:
            kw["latents"] = kw["latents"] * 0.5
        return kw

    ours = _ours(sd3, PROMPTS, output_type="latent", generator=g(), callback_on_step_end=halve)
    ref = _theirs(sd3, PROMPTS, output_type="latent", generator=g(), callback_on_step_end=halve)
    _close(ours.images, ref)  # the callback sees the flow latent x, not the VP state


def test_sd3_prompt_embeds(sd3):
    pe, ne, pp, npp = sd3.encode_prompt(PROMPTS, None, None, device="cpu",
                                        negative_prompt=["a car", "a boat"])
    emb = dict(prompt_embeds=pe, negative_prompt_embeds=ne, pooled_prompt_embeds=pp,
               negative_pooled_prompt_embeds=npp)
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    _close(_ours(sd3, None, output_type="latent", generator=g(), **emb).images,
           _theirs(sd3, None, output_type="latent", generator=g(), **emb))


@pytest.mark.parametrize("guidance", [3.5, 7.0])
def test_flux_one_window_equals_the_pipeline(flux, guidance):
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    ours = _ours(flux, "a photo of a cat", guidance_scale=guidance, output_type="latent",
                 generator=g())
    ref = _theirs(flux, "a photo of a cat", guidance_scale=guidance, output_type="latent",
                  generator=g())
    _close(ours.images, ref)


def test_flux_true_cfg_with_a_negative_prompt(flux):
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    kw = dict(negative_prompt="a red car", true_cfg_scale=3.0, guidance_scale=3.5,
              output_type="latent")
    ours = _ours(flux, "a photo of a cat", generator=g(), **kw)
    ref = _theirs(flux, "a photo of a cat", generator=g(), **kw)
    _close(ours.images, ref)
    plain = _theirs(flux, "a photo of a cat", generator=g(), guidance_scale=3.5,
                    output_type="latent")
    assert float((ref - plain).abs().max()) > 1e-3  # the real CFG did something


def test_flux_shift_follows_the_view_size(flux):
    den = denoiser_from_pipeline(flux)
    kw = den.schedule_kwargs(16, 16)  # 64 image tokens
    solver = DiffusersSolver(flux.scheduler, STEPS, **kw)
    assert isinstance(solver, FlowMatchSolver)
    # by hand: mu linear in the token count, sigma' = e^mu / (e^mu + 1/sigma - 1)
    mu = 0.5 + (1.15 - 0.5) / (4096 - 256) * (64 - 256)
    assert kw["mu"] == pytest.approx(mu, abs=1e-12)
    base = [1.0 - k * (1 - 1 / STEPS) / (STEPS - 1) for k in range(STEPS)]  # linspace(1, 1/N, N)
    want = [math.exp(mu) / (math.exp(mu) + (1 / s - 1)) for s in base] + [0.0]
    assert solver.sigmas == pytest.approx(want, abs=1e-6)


# ---- the conversion and the SyncSDE term in velocity form -------------------------------------
def _flow_solver():
    return FlowMatchSolver(diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0), STEPS)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_flow_step_is_euler_on_the_velocity(k):
    """A velocity v at x (sigma); the denoiser's eps at the represented level and the solver's
    step must give x + (sigma_next - sigma) v, computed here in plain float64."""
    solver = _flow_solver()
    info = solver.steps()[k]
    sigma, sigma_n = solver.sigmas[k], solver.sigmas[k + 1]
    g = torch.Generator().manual_seed(k)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    se = min(sigma, FLOW_SIGMA_CAP)
    s_t = math.sqrt((1 - se) ** 2 + se ** 2)
    sn = min(sigma_n, FLOW_SIGMA_CAP)
    s_n = math.sqrt((1 - sn) ** 2 + sn ** 2)
    x0 = x - sigma * v
    eps = (x - (1 - se) * x0) / se
    y = x / s_t
    assert info.abar_t == pytest.approx(((1 - se) / s_t) ** 2)
    out = solver.step(y.float(), eps.float(), info, None)
    want = (x + (sigma_n - sigma) * v) / s_n
    torch.testing.assert_close(out.double(), want, atol=2e-5, rtol=1e-5)


def test_syncsde_term_in_velocity_form():
    """docs/models/flow_matching.md: the eps-form conditional score
    eps += inv M (y - Xtilde) / sqrt(1 - abar) is, in velocity form,
    v += inv M (x - Xtilde_x) / (sigma (1 - sigma)), so one Euler step moves the flow latent by
    -(sigma - sigma_next) inv M (x - Xtilde_x) / (sigma (1 - sigma)) more than independent."""
    solver = _flow_solver()
    k = 1
    info = solver.steps()[k]
    sigma, sigma_n = solver.sigmas[k], solver.sigmas[k + 1]
    assert sigma < FLOW_SIGMA_CAP
    prob = wide_problem((4, 8, 24), 8, 4, cond="x")
    views = prob.views
    strat = SyncSDE(inv_lambda=5.0, max_pull=None)
    run = _Run(views, prob.correlation, None, list(solver.timesteps), torch.float32,
               torch.device("cpu"), 0, solver=solver)
    strat.prepare(run)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(views.num_views, *views.view_shape, generator=g)
    eps = torch.randn(y.shape, generator=g)
    ind = Independent().step(run, y.clone(), eps.clone(), info, None)
    ref = strat._corr.references(y.clone(), views)
    syn = strat.step(run, y.clone(), eps.clone(), info, None)
    s_t = math.sqrt((1 - sigma) ** 2 + sigma ** 2)
    s_n = math.sqrt((1 - sigma_n) ** 2 + sigma_n ** 2)
    inv = strat.inv_lambda_at(info)
    assert inv > 0
    dx = -(sigma - sigma_n) * inv * strat._masks * (s_t * y - s_t * ref) / (sigma * (1 - sigma))
    torch.testing.assert_close(syn, ind + dx / s_n, atol=1e-5, rtol=1e-5)
    assert float(dx.abs().max()) > 1e-2  # the term is not trivially zero here


# ---- tasks, strategies, refusals --------------------------------------------------------------
def test_wide_and_mask_run_with_every_strategy(sd3, flux):
    for pipe in (sd3, flux):
        for strategy in ("syncsde", "multidiffusion", "synctweedies"):
            res = P.wide_image(pipe, "a photo of a cat", height=32, width=64, window=32,
                               stride=16, num_inference_steps=2, progress=False,
                               strategy=strategy, output_type="latent")
            assert res.latents.shape == (4, 16, 32) and torch.isfinite(res.latents).all()
    m = torch.zeros(16, 16)
    m[4:12, 4:12] = 1
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    res = P.mask_generation(sd3, m, "a photo of the beach", "a big boat", "the beach with a boat",
                            num_inference_steps=STEPS, guidance_scale=7.0, progress=False,
                            output_type="latent", generator=g())
    ref = _theirs(sd3, "a photo of the beach", guidance_scale=7.0, output_type="latent",
                  generator=g())
    _close(res.result.views[0], ref[0])  # the free background trajectory is plain sampling


def test_refusals(sd3, flux):
    with pytest.raises(ValueError, match="even latent sizes"):
        P.wide_image(flux, "a cat", height=32, width=64, window=30, stride=16,
                     num_inference_steps=1, progress=False, output_type="latent")
    with pytest.raises(ValueError, match="DDIM"):
        P.wide_image(sd3, "a cat", height=32, width=32, scheduler="ddim",
                     num_inference_steps=1, progress=False)
    with pytest.raises(ValueError, match="SD 1.x/2.x"):
        P.edit_image(sd3, torch.rand(3, 32, 32), source_prompt="a cat", target_prompt="a dog",
                     mask=torch.ones(16, 16), num_inference_steps=2, progress=False)
    with pytest.raises(TypeError, match="IFDenoiser"):
        P.ambiguous_image(flux, "a cat", "a dog", num_inference_steps=2, progress=False)
    with pytest.raises(ValueError, match="true_cfg_scale"):
        P.wide_image(sd3, "a cat", height=32, width=32, true_cfg_scale=2.0,
                     num_inference_steps=1, progress=False)
    with pytest.raises(ValueError, match="clip_skip"):
        P.wide_image(flux, "a cat", height=32, width=32, clip_skip=1, num_inference_steps=1,
                     progress=False)


def test_a_pipeline_loaded_on_the_fly_stays_alive(flux, tmp_path):
    """The FLUX / SD3 prompt encoders call the pipeline's encode_prompt: a pipeline loaded from
    a folder inside the task function (nobody else holds it) must stay alive with its denoiser."""
    import gc

    from syncsde.models import load_denoiser

    flux.save_pretrained(tmp_path / "fx")
    res = P.wide_image(str(tmp_path / "fx"), "a photo of a cat", height=32, width=32,
                       num_inference_steps=2, guidance_scale=3.5, progress=False,
                       output_type="latent", generator=torch.Generator().manual_seed(3))
    ref = _theirs(flux, "a photo of a cat", num_inference_steps=2, guidance_scale=3.5,
                  output_type="latent", generator=torch.Generator().manual_seed(3))
    _close(res.images, ref)  # the default window is the canvas here (native size 128 > 16)
    den = load_denoiser(str(tmp_path / "fx"))
    gc.collect()
    out = den(torch.zeros(1, 4, 16, 16), 500.0, ["a photo of a cat"])
    assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()
