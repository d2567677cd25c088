"""The real-model adapters and task functions on tiny random models (offline, CPU).

Built from configs (tests/tiny_models.py): SD UNet + VAE + CLIP text encoder with a local BPE
tokenizer, a depth-style ControlNet, DeepFloyd IF stage I / II with a small T5 and a word-level
tokenizer, and an MDM-shaped transformer. No test touches the network.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import tiny_models as tm  # noqa: E402

from syncsde import pipelines as P  # noqa: E402
from syncsde.denoisers.diffusers_models import (  # noqa: E402
    ControlNetDenoiser, DynamicThresholding, IFDenoiser, IFSuperResolutionDenoiser, ImagePrompt,
    PromptEncoder, StableDiffusionDenoiser, threshold_eps)
from syncsde.denoisers.mdm import (  # noqa: E402
    MDMDenoiser, mdm_schedule, recover_joints)
from syncsde.models import (  # noqa: E402
    ModelNotAvailableError, denoiser_from_pipeline, infer_kind, load_pipeline)
from syncsde.sampler import sample  # noqa: E402
from syncsde.tasks import masked_problem, wide_problem  # noqa: E402

PROMPT = "a photo of a cat"
STEPS = 4


def _has_pixel_maps() -> bool:
    from syncsde import ops

    return hasattr(ops, "dihedral")


needs_pixel_maps = pytest.mark.skipif(not _has_pixel_maps(),
                                      reason="pixel-map view ops not built yet")


@pytest.fixture(scope="module")
def tmpdir_module(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="module")
def sd(tmpdir_module):
    return tm.sd_pipeline(tmpdir_module / "sd")


@pytest.fixture(scope="module")
def sd_v(tmpdir_module):
    return tm.sd_pipeline(tmpdir_module / "sdv", prediction_type="v_prediction")


@pytest.fixture(scope="module")
def if_pipes():
    return tm.if_pipelines()


def _plain_sd(pipe, prompt, latents, steps=STEPS, guidance=7.5, negative=None):
    """The diffusers pipeline itself (DDIM), from given initial latents."""
    return pipe(prompt, negative_prompt=negative, height=32, width=32, num_inference_steps=steps,
                guidance_scale=guidance, latents=latents.clone()[None], output_type="latent").images[0]


def _one_window(den, cond, negative=None, C=4, S=16):
    """A problem with one view covering the whole canvas: the plain single-image case."""
    return wide_problem((C, S, S), S, S, cond=cond, negative=negative)


# ---- prompt encoding ----------------------------------------------------------------------
def test_prompt_encoder_caches_and_maps_none_to_empty(sd):
    enc = PromptEncoder(sd.tokenizer, sd.text_encoder)
    a = enc([PROMPT, None, PROMPT, ""])
    assert a.shape == (4, sd.tokenizer.model_max_length, 32)
    assert enc.misses == 2  # PROMPT and "" encoded once each
    torch.testing.assert_close(a[0], a[2])
    torch.testing.assert_close(a[1], a[3])
    ref, neg = sd.encode_prompt(PROMPT, "cpu", 1, True)
    torch.testing.assert_close(a[0], ref[0])
    torch.testing.assert_close(a[1], neg[0])
    b = enc([a[0]])  # embeddings pass through
    torch.testing.assert_close(b[0], a[0])
    assert enc.token_indices(PROMPT, "cat") == [5]
    with pytest.raises(TypeError):
        enc([3])


# ---- Stable Diffusion -----------------------------------------------------------------------
def test_sd_denoiser_shapes_dtypes(sd):
    den = denoiser_from_pipeline(sd)
    assert isinstance(den, StableDiffusionDenoiser) and den.prediction_type == "epsilon"
    assert den is denoiser_from_pipeline(sd)  # cached: the prompt cache survives calls
    x = torch.randn(3, 4, 16, 16, dtype=torch.float64)
    out = den(x, 981, [PROMPT, None, "a dog"])
    assert out.shape == x.shape and out.dtype == torch.float64 and torch.isfinite(out).all()
    with pytest.raises(ValueError):
        den(x, 981, [PROMPT])


@pytest.mark.parametrize("which", ["sd", "sd_v"])
def test_independent_reproduces_diffusers_pipeline(which, request):
    pipe = request.getfixturevalue(which)
    den = denoiser_from_pipeline(pipe)
    assert den.prediction_type == pipe.scheduler.config.prediction_type
    res = sample(_one_window(den, PROMPT), den, "independent", schedule=den.schedule(STEPS),
                 guidance_scale=7.5, seed=3, progress=False)
    noise = torch.randn((4, 16, 16), generator=torch.Generator().manual_seed(3))
    ref = _plain_sd(pipe, PROMPT, noise)
    scale = ref.abs().max()
    assert (res.output - ref).abs().max() <= 1e-4 * max(1.0, float(scale))
    img = den.decode(res.output)
    ref_img = pipe.vae.decode(ref[None] / pipe.vae.config.scaling_factor).sample
    torch.testing.assert_close(img, (ref_img / 2 + 0.5).clamp(0, 1), atol=1e-4, rtol=0)


@needs_pixel_maps
def test_syncsde_mask_free_trajectory_is_plain_and_coupled_ones_differ(sd):
    den = denoiser_from_pipeline(sd)
    m = torch.zeros(16, 16)
    m[4:12, 4:12] = 1
    prob = masked_problem((4, 16, 16), m, "a photo of the beach", "a big boat",
                          "a photo of the beach with a big boat")
    res = sample(prob, den, "syncsde", schedule=den.schedule(STEPS), guidance_scale=7.5, seed=1,
                 progress=False)
    ind = sample(prob, den, "independent", schedule=den.schedule(STEPS), guidance_scale=7.5,
                 seed=1, progress=False)
    noise = torch.randn((3, 4, 16, 16), generator=torch.Generator().manual_seed(1))
    free = _plain_sd(sd, "a photo of the beach", noise[0])
    assert (res.views[0] - free).abs().max() <= 1e-4 * max(1.0, float(free.abs().max()))
    torch.testing.assert_close(ind.views[2], _plain_sd(sd, "a photo of the beach with a big boat",
                                                      noise[2]), atol=1e-3, rtol=1e-4)
    for i in (1, 2):
        assert (res.views[i] - ind.views[i]).abs().max() > 1e-2


def test_wide_image_seeded_and_synchronized(sd):
    kw = dict(height=32, width=64, num_inference_steps=3, progress=False)
    a = P.wide_image(sd, PROMPT, seed=5, strategy="syncsde", **kw)
    b = P.wide_image(sd, PROMPT, seed=5, strategy="syncsde", **kw)
    c = P.wide_image(sd, PROMPT, seed=6, strategy="syncsde", **kw)
    ind = P.wide_image(sd, PROMPT, seed=5, strategy="independent", **kw)
    assert a.images[0].size == (64, 32) and a.tensors.shape == (1, 3, 32, 64)
    assert a.latents.shape == (4, 16, 32) and a.settings["num_views"] == 5
    torch.testing.assert_close(a.latents, b.latents, atol=0, rtol=0)
    assert (a.latents - c.latents).abs().max() > 1e-2
    # window 0 is free under SyncSDE (= the plain pipeline on its crop of the canvas noise);
    # later windows are pulled to their predecessors
    torch.testing.assert_close(a.result.views[0], ind.result.views[0], atol=1e-5, rtol=1e-5)
    canvas = torch.randn((4, 16, 32), generator=torch.Generator().manual_seed(5))
    plain = _plain_sd(sd, PROMPT, canvas[:, :, :16].contiguous(), steps=3)
    assert (a.result.views[0] - plain).abs().max() <= 1e-4 * max(1.0, float(plain.abs().max()))
    assert (a.result.views[-1] - ind.result.views[-1]).abs().max() > 1e-2
    md = P.wide_image(sd, PROMPT, seed=5, strategy="multidiffusion", **kw)
    assert md.settings["strategy"] == "multidiffusion"
    default = P.wide_image(sd, PROMPT, seed=5, **kw)  # the task default (syncsde.task_defaults)
    assert default.settings["strategy"] == "regiongraph"
    late = P.wide_image(sd, PROMPT, seed=5, strategy="regiongraph",
                        strategy_options={"start": 0.3}, **kw)
    torch.testing.assert_close(default.latents, late.latents, atol=0, rtol=0)
    assert (default.latents - md.latents).abs().max() > 1e-4
    # a canvas that wraps round the width is a 360 panorama: MultiDiffusion by default
    wrapped = P.wide_image(sd, PROMPT, seed=5, circular=True, **kw)
    assert wrapped.settings["strategy"] == "multidiffusion"


@needs_pixel_maps
def test_mask_generation_from_png(sd, tmp_path):
    from PIL import Image

    a = np.zeros((64, 64), np.uint8)
    a[16:48, 16:48] = 255
    Image.fromarray(a).save(tmp_path / "m.png")
    res = P.mask_generation(sd, str(tmp_path / "m.png"), "the beach", "a big boat",
                            "the beach with a big boat", height=32, width=32,
                            num_inference_steps=3, progress=False, decode_all=True)
    assert len(res.images) == 3 and res.latents.shape == (4, 16, 16)
    assert res.extras["mask"].sum() == 64  # 8x8 latent pixels
    torch.testing.assert_close(res.latents, res.result.views[2])
    # the default (inpaint): the answer is the background trajectory outside the object and
    # the object trajectory inside, exactly
    assert res.settings["strategy"] == "inpaint"
    m = res.extras["mask"].bool()
    torch.testing.assert_close(res.latents[:, ~m], res.result.views[0][:, ~m], atol=0, rtol=0)
    torch.testing.assert_close(res.latents[:, m], res.result.views[1][:, m], atol=0, rtol=0)


def test_wide_image_sequential_windows(sd):
    kw = dict(height=32, width=64, num_inference_steps=3, progress=False, seed=1)
    res = P.wide_image(sd, PROMPT, strategy="sequential", **kw)
    again = P.wide_image(sd, PROMPT, strategy="sequential", **kw)
    assert res.settings["strategy"] == "sequential" and res.latents.shape == (4, 16, 32)
    torch.testing.assert_close(res.latents, again.latents, atol=0, rtol=0)
    k1 = P.wide_image(sd, PROMPT, strategy="sequential", strategy_options={"corrector_steps": 0}, **kw)
    assert (k1.latents - res.latents).abs().max() > 1e-3
    with pytest.raises(ValueError, match="one window after another"):
        P.wide_image(sd, PROMPT, strategy="sequential", latents=torch.zeros(4, 16, 32), **kw)


def test_load_mask_forms(tmp_path):
    arr = np.zeros((8, 8))
    arr[:4] = 200
    m = P.load_mask(arr, (4, 4))
    assert m.tolist() == [[1.0] * 4] * 2 + [[0.0] * 4] * 2
    m2 = P.load_mask(torch.tensor(arr / 255.0)[None], (8, 8))
    assert m2.sum() == 32


# ---- editing ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd3(tmpdir_module):
    return tm.sd_pipeline(tmpdir_module / "sd3", three_levels=True)


def test_attention_recorder_running_sums(sd3):
    den = denoiser_from_pipeline(sd3)
    procs = {n: type(p) for n, p in sd3.unet.attn_processors.items()}
    x = torch.randn(1, 4, 16, 16)
    rec = P.AttentionRecorder(sd3.unet, (16, 16), den.prompts.token_indices(PROMPT, "cat"))
    with rec:
        P.ddim_loop(den, x, den.schedule(3), [PROMPT], after_eps=lambda info: rec.end_step())
    assert {n: type(p) for n, p in sd3.unet.attn_processors.items()} == procs  # restored
    assert rec.steps == 3 and rec.self_steps == 3 and not rec._step_maps
    assert rec.self_sum.shape == (256, 256) and rec.cross_sum.shape == (16, 16)
    torch.testing.assert_close(rec.self_map().sum(1), torch.ones(256), atol=1e-4, rtol=0)
    cm = rec.cross_map()
    assert cm.min() >= 0 and cm.max() <= 1
    # the recording processors compute the same attention as the default ones
    y1 = P.ddim_loop(den, x, den.schedule(3), [PROMPT])
    with P.AttentionRecorder(sd3.unet, (16, 16), [5]):
        y2 = P.ddim_loop(den, x, den.schedule(3), [PROMPT])
    torch.testing.assert_close(y1, y2, atol=1e-4, rtol=1e-4)


def test_attention_mask_propagation_math(sd3):
    rec = P.AttentionRecorder(sd3.unet, (4, 4), [1], max_cross_tokens=4)
    rec.steps, rec.self_steps = 2, 2
    cross = torch.zeros(4, 4)
    cross[0, :2] = 1.0
    rec.cross_sum = 2 * cross
    S = torch.eye(16) * 0.5 + 0.5 / 16  # half self, half uniform
    rec.self_sum = 2 * S
    prop = rec.propagated()
    torch.testing.assert_close(prop.reshape(-1), S @ cross.reshape(-1))
    assert rec.mask(0.3).sum() == 2 and rec.mask(0.05).sum() == 16


@needs_pixel_maps
def test_edit_image_end_to_end(sd3):
    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    res = P.edit_image(sd3, img, "a photo of a cat on the grass", "cat", "dog",
                       num_inference_steps=3, progress=False, decode_reconstruction=True)
    assert res.settings["target_prompt"] == "a photo of a dog on the grass"
    m = res.extras["mask"]
    assert m.shape == (16, 16) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert len(res.images) == 2 and res.images[0].size == (32, 32)
    torch.testing.assert_close(res.latents, res.result.views[2])
    with pytest.raises(ValueError):
        P.replace_word("a photo of a cat", "horse", "dog")


def test_edit_image_projection_keeps_the_source_latent_outside_the_mask(sd3):
    """strategy="projection": edit_image hands it the encoded source (clean_source), so the
    edited latent equals the source latent wherever the mask keeps the image."""
    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    m = torch.zeros(16, 16)
    m[4:12, 4:12] = 1
    res = P.edit_image(sd3, img, "a photo of a cat on the grass", "cat", "dog", mask=m,
                       strategy="projection", num_inference_steps=3, progress=False)
    keep = (1 - m).bool()
    x0 = res.extras["x0"]
    torch.testing.assert_close(res.latents[:, keep], x0[:, keep].to(res.latents.dtype),
                               rtol=0, atol=0)
    assert (res.latents[:, m.bool()] - x0[:, m.bool()]).abs().max() > 1e-3
    assert torch.isfinite(res.latents).all()


# ---- ControlNet -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cn(tmpdir_module):
    return tm.controlnet_pipeline(tmpdir_module / "cn")


def test_controlnet_eps_any_batch_and_pipeline_parity(cn):
    den = denoiser_from_pipeline(cn)
    assert isinstance(den, ControlNetDenoiser)
    depth = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 4, 16, 16)
    eps = P.controlnet_eps(cn, x, 501, PROMPT, depth, guidance_scale=7.5)
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    eps2 = P.controlnet_eps(cn, x, 501, PROMPT, depth.flip(-1), guidance_scale=7.5)
    assert (eps - eps2).abs().max() > 1e-4  # the control image matters
    eps3 = P.controlnet_eps(cn, x[:2], 501, PROMPT, depth[:2], guidance_scale=7.5)
    torch.testing.assert_close(eps3, eps[:2], atol=1e-5, rtol=1e-5)
    # the sampler with a ControlNet view equals StableDiffusionControlNetPipeline
    cond = ImagePrompt(PROMPT, depth[0])
    prob = wide_problem((4, 16, 16), 16, 16, cond=cond, negative=ImagePrompt(None, depth[0]))
    res = sample(prob, den, "independent", schedule=den.schedule(STEPS), guidance_scale=7.5,
                 seed=2, progress=False)
    noise = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(2))
    ref = cn(PROMPT, image=depth[:1], height=32, width=32, num_inference_steps=STEPS,
             guidance_scale=7.5, latents=noise, output_type="latent").images[0]
    assert (res.output - ref).abs().max() <= 1e-4 * max(1.0, float(ref.abs().max()))
    with pytest.raises(TypeError):
        den(x[:1], 501, [PROMPT])  # a ControlNet view needs its control image


# ---- DeepFloyd IF ---------------------------------------------------------------------------
def _manual_if_ddim(pipe, prompt, noise, steps, guidance):
    """diffusers' DDIMScheduler (thresholding from IF's config) driven by hand: IFPipeline
    itself cannot run DDIM on its 6-channel output."""
    from diffusers import DDIMScheduler

    sch = DDIMScheduler.from_config(pipe.scheduler.config)
    sch.set_timesteps(steps)
    pe, ne = pipe.encode_prompt(prompt, True, negative_prompt=None, device="cpu")
    emb = torch.cat([ne, pe])
    x = noise[None].clone()
    with torch.no_grad():
        for t in sch.timesteps:
            u, c = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=emb).sample.chunk(2)
            e = u[:, :3] + guidance * (c[:, :3] - u[:, :3])
            x = sch.step(e, t, x).prev_sample
    return x[0]


def test_if_stage1_with_thresholding_matches_diffusers_ddim(if_pipes):
    s1, _ = if_pipes
    den = denoiser_from_pipeline(s1)
    assert isinstance(den, IFDenoiser) and den.prompts.style == "t5"
    x = torch.randn(2, 3, 16, 16)
    assert den(x, 957, ["a horse", None]).shape == x.shape  # variance half dropped
    strat = DynamicThresholding.from_config("independent", den.scheduler_config)
    res = sample(_one_window(den, "a horse", C=3), den, strat, schedule=den.schedule(STEPS),
                 guidance_scale=10.0, seed=4, progress=False)
    noise = torch.randn((3, 16, 16), generator=torch.Generator().manual_seed(4))
    ref = _manual_if_ddim(s1, "a horse", noise, STEPS, 10.0)
    torch.testing.assert_close(res.output, ref, atol=1e-4, rtol=0)


def test_threshold_eps_is_a_no_op_inside_the_range():
    y = torch.randn(2, 3, 4, 4) * 0.1
    eps = torch.randn(2, 3, 4, 4) * 0.01
    out = threshold_eps(y, eps, 0.9, 0.95, ratio=0.95, max_value=1.5)
    torch.testing.assert_close(out, eps, atol=1e-5, rtol=1e-4)


@needs_pixel_maps
def test_ambiguous_image_two_stages(if_pipes):
    s1, s2 = if_pipes
    kw = dict(num_inference_steps=3, progress=False, seed=0)
    res = P.ambiguous_image(s1, "an oil painting of a horse", "an oil painting of a village",
                            "rot90_cw", stage2=s2, **kw)
    assert isinstance(denoiser_from_pipeline(s2, prompts=denoiser_from_pipeline(s1).prompts),
                      IFSuperResolutionDenoiser)
    a, b, own = res.tensors
    assert a.shape == (3, 32, 32) and res.extras["stage1"].shape == (2, 3, 16, 16)
    # the prompt-a image is view 2's image rotated back (one image, two readings)
    torch.testing.assert_close(a, torch.rot90(b, 1, dims=(-2, -1)))
    again = P.ambiguous_image(s1, "an oil painting of a horse", "an oil painting of a village",
                              "rot90_cw", stage2=s2, **kw)
    torch.testing.assert_close(res.tensors, again.tensors, atol=0, rtol=0)
    ind = P.ambiguous_image(s1, "an oil painting of a horse", "an oil painting of a village",
                            "rot90_cw", strategy="independent", **kw)
    syn = P.ambiguous_image(s1, "an oil painting of a horse", "an oil painting of a village",
                            "rot90_cw", strategy="syncsde", **kw)
    assert res.settings["strategy"] == "poe" and syn.settings["strategy"] == "syncsde"
    torch.testing.assert_close(syn.extras["stage1"][0], ind.extras["stage1"][0])  # free view
    assert (syn.extras["stage1"][1] - ind.extras["stage1"][1]).abs().max() > 1e-3


# ---- loading --------------------------------------------------------------------------------
def test_from_pretrained_roundtrip(sd, tmp_path):
    sd.save_pretrained(tmp_path / "saved")
    assert infer_kind(str(tmp_path / "saved")) == "sd"
    pipe = load_pipeline(str(tmp_path / "saved"), local_files_only=True)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    den, ref = denoiser_from_pipeline(pipe), denoiser_from_pipeline(sd)
    x = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(den(x, 500, [PROMPT, None]), ref(x, 500, [PROMPT, None]))


def test_from_pretrained_if_roundtrip(if_pipes, tmp_path):
    s1, s2 = if_pipes
    s1.save_pretrained(tmp_path / "if1")
    s2.save_pretrained(tmp_path / "if2")
    assert infer_kind(str(tmp_path / "if1")) == "if-stage1"
    assert infer_kind(str(tmp_path / "if2")) == "if-stage2"
    p1 = load_pipeline(str(tmp_path / "if1"), local_files_only=True)
    p2 = load_pipeline(str(tmp_path / "if2"), local_files_only=True)
    assert p2.text_encoder is None and p1.watermarker is None
    d1 = denoiser_from_pipeline(p1)
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(d1(x, 500, ["a horse"]), denoiser_from_pipeline(s1)(x, 500, ["a horse"]))


@pytest.mark.parametrize("model,words", [
    ("stabilityai/stable-diffusion-2-base", ["hf download stabilityai/stable-diffusion-2-base",
                                             "--local-dir"]),
    ("DeepFloyd/IF-I-M-v1.0", ["accept the license", "hf auth login",
                               "hf download DeepFloyd/IF-I-M-v1.0"]),
    ("lllyasviel/control_v11f1p_sd15_depth", ["hf download lllyasviel/control_v11f1p_sd15_depth"]),
])
def test_missing_weights_error_says_how_to_get_them(model, words, tmp_path):
    with pytest.raises(ModelNotAvailableError) as e:
        load_pipeline(model, local_files_only=True, cache_dir=str(tmp_path))
    msg = str(e.value)
    assert model in msg and e.value.model == model
    for w in words:
        assert w in msg, msg


def test_missing_local_folder_error(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="no such folder"):
        load_pipeline(str(tmp_path / "nothing-here"), kind="sd", local_files_only=True)


# ---- MDM ------------------------------------------------------------------------------------
def test_mdm_adapter_and_long_motion():
    model = tm.TinyMDM(njoints=263)
    den = MDMDenoiser(model, diffusion_steps=50)
    x = torch.randn(3, 263, 1, 20)
    out = den(x, 49, ["walk", None, "run"])
    assert out.shape == x.shape
    assert [c["uncond"] for c in model.calls[-2:]] == [False, True]
    kw = dict(length=50, window=20, overlap=5, num_inference_steps=5, diffusion_steps=50,
              progress=False, seed=0)
    syn = P.long_motion(den, "a person walks", **kw)
    ind = P.long_motion(den, "a person walks", strategy="independent", **kw)
    assert syn.latents.shape == (263, 1, 50) and syn.extras["features"].shape == (50, 263)
    assert syn.settings["num_views"] == 3 and np.isfinite(syn.extras["features"]).all()
    torch.testing.assert_close(syn.result.views[0], ind.result.views[0], atol=1e-5, rtol=1e-5)
    assert (syn.result.views[1] - ind.result.views[1]).abs().max() > 1e-3
    mean, std = np.zeros(263, np.float32), np.ones(263, np.float32)
    withj = P.long_motion(den, "a person walks", mean=mean, std=std, **kw)
    assert withj.extras["joints"].shape == (50, 22, 3)


def test_first_step_guard_caps_only_the_overshooting_steps():
    from syncsde import ops
    from syncsde.strategies import SyncSDE

    for ds, n in ((50, 50), (1000, 50)):
        sched = mdm_schedule(n, ds)
        g = SyncSDE(inv_lambda=3.0, max_pull=1.0)
        g._schedule = g.inv_lambda.bind(sched.timesteps)
        steps = sched.steps()
        for info in steps:
            c = ops.ddim_coefficients(info.abar_t, info.abar_s)
            assert c.gamma * g.inv_lambda_at(info) <= c.c_x * (1 + 1e-9)
        first, late = steps[0], steps[len(steps) // 2]
        assert g.inv_lambda_at(first) < g._schedule(first.t)  # the first step is guarded
        assert g.inv_lambda_at(late) == pytest.approx(g._schedule(late.t))  # later steps are not


def test_recover_joints_straight_walk(tmp_path):
    from syncsde.denoisers.mdm import save_stick_figure_gif

    f = np.zeros((10, 263))
    f[:, 2] = 0.1  # forward (z) velocity in the root frame, no turning
    f[:, 3] = 1.0  # root height
    f[:, 4:67] = np.tile([0.0, -0.5, 0.0], 21)
    j = recover_joints(f)
    assert j.shape == (10, 22, 3)
    np.testing.assert_allclose(j[:, 0, 2], 0.1 * np.arange(10), atol=1e-12)
    np.testing.assert_allclose(j[:, 1:, 1], -0.5)
    f[:, 0] = np.pi / 4  # turning: a quarter of pi per frame (a half turn of the body)
    j2 = recover_joints(f)
    assert np.isfinite(j2).all() and abs(j2[2, 0, 0]) > 1e-3
    path = save_stick_figure_gif(j, str(tmp_path / "m.gif"))
    assert os.path.getsize(path) > 0


# ---- CLI ------------------------------------------------------------------------------------
def _parser():
    import argparse

    from syncsde.cli_models import add_model_commands

    p = argparse.ArgumentParser()
    subs = p.add_subparsers(dest="cmd")
    names = add_model_commands(subs)
    assert set(names) == {"wide", "mask", "edit", "ambiguous", "motion"}
    return p


def test_cli_wide_writes_png_with_settings(sd, tmp_path):
    from PIL import Image

    sd.save_pretrained(tmp_path / "model")
    args = _parser().parse_args(["wide", "--model", str(tmp_path / "model"), "--prompt", PROMPT,
                                 "--height", "32", "--width", "48", "--steps", "2", "--device",
                                 "cpu", "--local-files-only", "--out", str(tmp_path / "out"),
                                 "--no-progress"])
    files = args.func(args)
    assert len(files) == 1
    im = Image.open(files[0])
    meta = json.loads(im.text["syncsde"])
    assert im.size == (48, 32) and meta["prompt"] == PROMPT and meta["strategy"] == "regiongraph"
    assert meta["num_inference_steps"] == 2 and im.text["seed"] == "0"


def test_cli_wide_vae_tiling_flags_reach_the_decoder(sd, tmp_path):
    """--vae-tiling on decodes in tiles (what wide_image(vae_tiling=True) gives, recorded in the
    PNG), --vae-tile-overlap >= --vae-tile is refused with the library's message."""
    from PIL import Image

    from syncsde.pipelines import wide_image

    sd.save_pretrained(tmp_path / "model")
    base = ["wide", "--model", str(tmp_path / "model"), "--prompt", PROMPT, "--height", "32",
            "--width", "64", "--steps", "2", "--device", "cpu", "--local-files-only",
            "--no-progress"]
    args = _parser().parse_args(base + ["--out", str(tmp_path / "on"), "--vae-tiling", "on",
                                        "--vae-tile", "4", "--vae-tile-overlap", "1"])
    files = args.func(args)
    with Image.open(files[0]) as im:
        meta = json.loads(im.text["syncsde"])
        got = np.asarray(im)
    assert meta["vae_tiling"] is True
    want = wide_image(sd, PROMPT, height=32, width=64, num_inference_steps=2, seed=0,
                      progress=False, vae_tiling=True, vae_tile=4, vae_tile_overlap=1).images[0]
    plain = wide_image(sd, PROMPT, height=32, width=64, num_inference_steps=2, seed=0,
                       progress=False).images[0]
    assert np.array_equal(got, np.asarray(want))
    assert not np.array_equal(np.asarray(want), np.asarray(plain))   # tiling changed the decode
    bad = _parser().parse_args(base + ["--out", str(tmp_path / "bad"), "--vae-tiling", "on",
                                       "--vae-tile", "4", "--vae-tile-overlap", "4"])
    with pytest.raises(ValueError, match="vae_tile_overlap"):
        bad.func(bad)


def test_cli_motion_writes_features_and_gif(tmp_path):
    mean, std = tmp_path / "mean.npy", tmp_path / "std.npy"
    np.save(mean, np.zeros(263, np.float32))
    np.save(std, np.ones(263, np.float32))
    args = _parser().parse_args(["motion", "--model-factory", "tiny_models:TinyMDM", "--prompt",
                                 "walk", "--length", "30", "--window", "20", "--overlap", "10",
                                 "--steps", "3", "--diffusion-steps", "50", "--device", "cpu",
                                 "--mean", str(mean), "--std", str(std), "--out",
                                 str(tmp_path / "out"), "--no-progress"])
    files = args.func(args)
    feats = np.load(files[0])
    assert feats.shape == (30, 263) and any(f.endswith(".gif") for f in files)
    assert json.loads(open(files[1]).read())["window"] == 20


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_pipeline_on_cuda(tmpdir_module):
    ref = tm.sd_pipeline(tmpdir_module / "ref32")
    pipe = tm.sd_pipeline(tmpdir_module / "cuda16").to("cuda", torch.float16)
    kw = dict(height=32, width=64, num_inference_steps=3, progress=False, seed=0)
    a = P.wide_image(pipe, PROMPT, **kw)
    b = P.wide_image(ref, PROMPT, **kw)
    assert a.latents.dtype == torch.float32 and a.latents.device.type == "cuda"
    assert torch.isfinite(a.latents).all()
    assert (a.latents.cpu() - b.latents).abs().max() < 0.05 * b.latents.abs().max()


@pytest.mark.parametrize("bad, message", [
    ("missing.png", "no such file"), ("notimage.png", "not a readable image"),
    ("folder", "folder"), (np.zeros((0, 5)), "non-empty"), (np.zeros((4, 4)), "selects no pixel"),
    (np.full((4, 4), np.nan), "NaN"), (np.array(["a", "b"]), "numeric")])
def test_load_mask_refuses_bad_masks(tmp_path, bad, message):
    (tmp_path / "notimage.png").write_bytes(b"not a png")
    (tmp_path / "folder").mkdir()
    if isinstance(bad, str):
        bad = str(tmp_path / bad)
    with pytest.raises(ValueError, match=message):
        P.load_mask(bad, (4, 4))
    with pytest.raises(ValueError, match="size"):
        P.load_mask(np.ones((4, 4)), (0, 4))
