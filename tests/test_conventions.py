"""diffusers' calling conventions on the one-call functions, checked against diffusers itself.

With one window covering the canvas and the ``independent`` strategy a task function is plain
sampling, so every argument (prompt lists, ``num_images_per_prompt``, generators, embeddings,
``clip_skip``, ``output_type``, step-end callbacks) must give what StableDiffusionPipeline gives
with the same arguments."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("diffusers")

import diffusers  # noqa: E402
import tiny_models as tm  # noqa: E402

from syncsde import pipelines as P  # noqa: E402

STEPS = 4
PROMPTS = ["a photo of a cat", "a dog on the grass"]
SD_BETAS = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                beta_end=0.012)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tm.sd_pipeline(tmp_path_factory.mktemp("conv"))


@pytest.fixture(autouse=True)
def _ddim(sd):
    sd.scheduler = tm.sd_scheduler()
    yield
    sd.scheduler = tm.sd_scheduler()


def _ours(sd, prompt, **kw):
    kw.setdefault("num_inference_steps", STEPS)
    return P.wide_image(sd, prompt, height=32, width=32, window=32, strategy="independent",
                        progress=False, **kw)


def _theirs(sd, prompt, **kw):
    kw.setdefault("num_inference_steps", STEPS)
    return sd(prompt, height=32, width=32, **kw).images


def _close(a, b, tol=1e-4):
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    assert a.shape == b.shape, (a.shape, b.shape)
    err = float((a - b).abs().max())
    assert err <= tol * max(1.0, float(b.abs().max())), err
    return err


def test_prompt_list_num_images_and_generator(sd):
    kw = dict(negative_prompt=["a red car", "a boat"], num_images_per_prompt=2, guidance_scale=7.5)
    ours = _ours(sd, PROMPTS, generator=torch.Generator().manual_seed(3), output_type="latent", **kw)
    ref = _theirs(sd, PROMPTS, generator=torch.Generator().manual_seed(3), output_type="latent", **kw)
    assert ours.images.shape == (4, 4, 16, 16) and ours.latents.shape == (4, 4, 16, 16)
    _close(ours.images, ref)
    # the four images really differ (per-sample prompts and noise reached the model)
    assert float((ref[0] - ref[2]).abs().max()) > 1e-2 and float((ref[0] - ref[1]).abs().max()) > 1e-2


def test_output_types_decode_as_diffusers(sd):
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    pt = _ours(sd, PROMPTS, generator=g(), output_type="pt")
    ref = _theirs(sd, PROMPTS, generator=g(), output_type="pt")
    _close(pt.images, ref)
    npy = _ours(sd, PROMPTS, generator=g(), output_type="np")
    ref_np = _theirs(sd, PROMPTS, generator=g(), output_type="np")
    assert isinstance(npy.images, np.ndarray) and npy.images.shape == (2, 32, 32, 3)
    _close(npy.images, ref_np)
    pil = _ours(sd, PROMPTS, generator=g())
    assert len(pil.images) == 2 and pil.images[0].size == (32, 32)
    got = np.asarray(pil.images[1], dtype=np.float32) / 255
    assert np.abs(got - ref_np[1]).max() <= 1 / 255 + 1e-6
    with pytest.raises(ValueError, match="output_type"):
        _ours(sd, "a cat", output_type="jpg")


def test_list_of_generators_one_per_image(sd):
    gens = lambda: [torch.Generator().manual_seed(s) for s in (11, 12)]  # noqa: E731
    ours = _ours(sd, PROMPTS, generator=gens(), output_type="latent")
    ref = _theirs(sd, PROMPTS, generator=gens(), output_type="latent")
    _close(ours.images, ref)
    with pytest.raises(ValueError, match="generators"):
        _ours(sd, PROMPTS, generator=gens()[:1] * 3, output_type="latent")


def test_single_prompt_keeps_the_unbatched_result(sd):
    one = _ours(sd, "a photo of a cat", seed=4, output_type="latent")
    assert one.latents.shape == (4, 16, 16) and one.images.shape == (1, 4, 16, 16)
    ref = _theirs(sd, "a photo of a cat", generator=torch.Generator().manual_seed(4),
                  output_type="latent")
    _close(one.images, ref)


def test_prompt_embeds_and_clip_skip(sd):
    pos, neg = sd.encode_prompt(PROMPTS, "cpu", 1, True, negative_prompt=["a car", "a boat"])
    ours = _ours(sd, None, prompt_embeds=pos, negative_prompt_embeds=neg, output_type="latent",
                 generator=torch.Generator().manual_seed(2))
    ref = _theirs(sd, None, prompt_embeds=pos, negative_prompt_embeds=neg, output_type="latent",
                  generator=torch.Generator().manual_seed(2))
    _close(ours.images, ref)
    skip = _ours(sd, PROMPTS, clip_skip=1, output_type="latent",
                 generator=torch.Generator().manual_seed(2))
    # the reference embeddings by hand (diffusers' own clip_skip path reaches for
    # ``text_encoder.text_model``, which transformers 5 no longer has): the hidden state one
    # layer before the last, through the final layer norm; the negative branch without skip
    enc, tok = sd.text_encoder, sd.tokenizer
    ids = tok(PROMPTS, padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = enc(ids, output_hidden_states=True).hidden_states[-2]
        skipped = getattr(enc, "text_model", enc).final_layer_norm(hidden)
    _, empty = sd.encode_prompt(PROMPTS, "cpu", 1, True)
    ref_skip = _theirs(sd, None, prompt_embeds=skipped, negative_prompt_embeds=empty,
                       output_type="latent", generator=torch.Generator().manual_seed(2))
    _close(skip.images, ref_skip)
    plain = _theirs(sd, PROMPTS, output_type="latent", generator=torch.Generator().manual_seed(2))
    assert float((ref_skip - plain).abs().max()) > 1e-3  # clip_skip changed something
    with pytest.raises(ValueError, match="prompt_embeds"):
        _ours(sd, "a cat", prompt_embeds=pos)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_guidance_at_most_one_is_no_cfg(sd, scale):
    ours = _ours(sd, PROMPTS, guidance_scale=scale, negative_prompt=["a car"] * 2, output_type="latent",
                 generator=torch.Generator().manual_seed(8))
    ref = _theirs(sd, PROMPTS, guidance_scale=scale, negative_prompt=["a car"] * 2, output_type="latent",
                  generator=torch.Generator().manual_seed(8))
    _close(ours.images, ref)


def _zero_at(k):
    def cb(pipe, i, t, kw):
        if i == k:
            kw["latents"] = torch.zeros_like(kw["latents"])
        return kw
    return cb


def _scale_at(k, factor):
    def cb(pipe, i, t, kw):
        if i == k:
            kw["latents"] = kw["latents"] * factor
        return kw
    return cb


def _stop_at(k, seen):
    def cb(pipe, i, t, kw):
        seen.append(i)
        if i == k:
            pipe._interrupt = True
        return kw
    return cb


@pytest.mark.parametrize("sched", ["ddim", "euler", "dpmpp_2m"])
def test_callback_changes_latents_as_in_diffusers(sd, sched):
    make = {"ddim": tm.sd_scheduler,
            "euler": lambda: diffusers.EulerDiscreteScheduler(**SD_BETAS),
            "dpmpp_2m": lambda: diffusers.DPMSolverMultistepScheduler(**SD_BETAS)}[sched]
    for cb in (_zero_at(1), _scale_at(1, 0.5)):
        sd.scheduler = make()
        ours = _ours(sd, PROMPTS, callback_on_step_end=cb, output_type="latent",
                     generator=torch.Generator().manual_seed(6))
        sd.scheduler = make()
        ref = _theirs(sd, PROMPTS, callback_on_step_end=cb, output_type="latent",
                      generator=torch.Generator().manual_seed(6))
        _close(ours.images, ref)
    # the callback had an effect (the result differs from the run without it)
    sd.scheduler = make()
    plain = _ours(sd, PROMPTS, output_type="latent", generator=torch.Generator().manual_seed(6))
    assert float((plain.images - ours.images).abs().max()) > 1e-3


def test_callback_interrupt_stops_after_that_step(sd):
    seen_ours, seen_ref = [], []
    ours = _ours(sd, PROMPTS, callback_on_step_end=_stop_at(1, seen_ours), output_type="latent",
                 generator=torch.Generator().manual_seed(9))
    ref = _theirs(sd, PROMPTS, callback_on_step_end=_stop_at(1, seen_ref), output_type="latent",
                  generator=torch.Generator().manual_seed(9))
    assert seen_ours == seen_ref == [0, 1]
    assert ours.settings["steps_run"] == 2
    _close(ours.images, ref)
    # and the state is the one after step 1 of the full run (checked on our own run)
    states = []

    def grab(pipe, i, t, kw):
        states.append(kw["latents"].clone())
        return kw

    _ours(sd, PROMPTS, callback_on_step_end=grab, output_type="latent",
          generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(ours.images, states[1], atol=0, rtol=0)


def test_callback_tensor_inputs(sd):
    shapes = {}

    def cb(pipe, i, t, kw):
        shapes.update({k: tuple(v.shape) for k, v in kw.items()})
        assert not pipe.interrupt and pipe.do_classifier_free_guidance
        if i == 0:
            kw["view_latents"] = torch.zeros_like(kw["view_latents"])
        return kw

    res = P.wide_image(sd, PROMPTS, height=32, width=48, window=32, stride=8,
                       num_inference_steps=2, strategy="syncsde", progress=False,
                       callback_on_step_end=cb, output_type="latent",
                       callback_on_step_end_tensor_inputs=["latents", "view_latents"])
    n = res.result.views.shape[0]
    assert n == 3 and shapes == {"latents": (2, 4, 16, 24), "view_latents": (3, 2, 4, 16, 16)}
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        _ours(sd, "a cat", callback_on_step_end=cb, num_inference_steps=1,
              callback_on_step_end_tensor_inputs=["prompt_embeds"])


def test_ddpm_batch_with_one_generator(sd):
    sd.scheduler = diffusers.DDPMScheduler(**SD_BETAS)
    ours = _ours(sd, PROMPTS, num_images_per_prompt=2, output_type="latent",
                 generator=torch.Generator().manual_seed(1))
    sd.scheduler = diffusers.DDPMScheduler(**SD_BETAS)
    ref = _theirs(sd, PROMPTS, num_images_per_prompt=2, output_type="latent",
                  generator=torch.Generator().manual_seed(1))
    _close(ours.images, ref)


def test_mask_generation_lists_free_trajectory_is_the_plain_pipeline(sd):
    m = torch.zeros(16, 16)
    m[4:12, 4:12] = 1
    bg = ["a photo of the beach", "a snowy village"]
    res = P.mask_generation(sd, m, bg, "a big boat", ["the beach with a boat", "a village"],
                            num_inference_steps=STEPS, progress=False, output_type="latent",
                            generator=torch.Generator().manual_seed(7))
    assert res.latents.shape == (2, 4, 16, 16) and res.result.views.shape == (3, 2, 4, 16, 16)
    ref = _theirs(sd, bg, output_type="latent", generator=torch.Generator().manual_seed(7))
    _close(res.result.views[0], ref)  # background: pulled by nothing, plain sampling
    with pytest.raises(ValueError, match="batch"):
        P.mask_generation(sd, m, bg, ["a", "b", "c"], "a village", num_inference_steps=1,
                          progress=False)


def test_ambiguous_generator_output_type_and_stop():
    stage1, _ = tm.if_pipelines()
    kw = dict(num_inference_steps=3, progress=False, strategy="syncsde")
    by_seed = P.ambiguous_image(stage1, "a cat", "a dog", **kw, seed=3, output_type="pt")
    by_gen = P.ambiguous_image(stage1, "a cat", "a dog", **kw,
                               generator=torch.Generator().manual_seed(3), output_type="pt")
    assert isinstance(by_gen.images, torch.Tensor) and by_gen.images.shape == (3, 3, 16, 16)
    torch.testing.assert_close(by_gen.images, by_seed.images, atol=0, rtol=0)
    seen = []
    stopped = P.ambiguous_image(stage1, "a cat", "a dog", **kw, seed=3, output_type="latent",
                                callback_on_step_end=_stop_at(0, seen))
    assert seen == [0] and stopped.settings["steps_run"] == 1
    assert float((stopped.images - by_seed.latents).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="output_type"):
        P.ambiguous_image(stage1, "a cat", "a dog", **kw, output_type="webp")


def test_sync_pipeline_wraps_without_mutating(sd):
    import syncsde
    from syncsde.sync_pipeline import SyncPipeline

    before = dict(vars(sd))
    sync = syncsde.SyncPipeline.from_pipe(sd)
    assert isinstance(sync, SyncPipeline)
    out = sync(PROMPTS, task="wide", strategy="independent", height=32, width=32, window=32,
               num_inference_steps=STEPS, progress=False, output_type="latent",
               generator=torch.Generator().manual_seed(3), num_images_per_prompt=2)
    assert set(vars(sd)) == set(before) and all(vars(sd)[k] is v for k, v in before.items())
    ref = _theirs(sd, PROMPTS, output_type="latent", num_images_per_prompt=2,
                  generator=torch.Generator().manual_seed(3))
    _close(out.images, ref)
    _close(out[0], ref)
    tup = sync(PROMPTS, task="wide", strategy="independent", height=32, width=32, window=32,
               num_inference_steps=STEPS, progress=False, output_type="latent",
               generator=torch.Generator().manual_seed(3), return_dict=False)
    assert isinstance(tup, tuple) and tup[0].shape == (2, 4, 16, 16)
    # the callback gets the SyncPipeline and stops it as a diffusers pipeline
    seen_ours, seen_ref = [], []
    stopped = sync(PROMPTS, task="wide", strategy="independent", height=32, width=32, window=32,
                   num_inference_steps=STEPS, progress=False, output_type="latent",
                   generator=torch.Generator().manual_seed(3),
                   callback_on_step_end=_stop_at(2, seen_ours))
    ref = _theirs(sd, PROMPTS, output_type="latent", generator=torch.Generator().manual_seed(3),
                  callback_on_step_end=_stop_at(2, seen_ref))
    assert seen_ours == seen_ref == [0, 1, 2]
    _close(stopped.images, ref)
    m = torch.zeros(16, 16)
    m[:, 8:] = 1
    res = sync(("a photo of the beach", "a big boat", "the beach with a big boat"), task="mask",
               mask=m, num_inference_steps=2, progress=False, output_type="np")
    assert res.images.shape == (1, 32, 32, 3)
    with pytest.raises(ValueError, match="task"):
        sync("a cat", task="video")
    with pytest.raises(ValueError, match="mask="):
        sync("a cat", task="mask")


def test_edit_generator_and_output_type(sd):
    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    kw = dict(source_prompt="a photo of a cat", target_prompt="a photo of a dog",
              mask=torch.ones(16, 16), num_inference_steps=2, progress=False)
    by_seed = P.edit_image(sd, img, seed=4, output_type="pt", **kw)
    by_gen = P.edit_image(sd, img, generator=torch.Generator().manual_seed(4), output_type="pt",
                          **kw)
    assert by_gen.images.shape == (1, 3, 32, 32)
    torch.testing.assert_close(by_gen.images, by_seed.images, atol=0, rtol=0)
    lat = P.edit_image(sd, img, seed=4, output_type="latent", **kw)
    torch.testing.assert_close(lat.images[0], by_seed.latents, atol=0, rtol=0)
    pil = P.edit_image(sd, img, seed=4, **kw)
    assert len(pil.images) == 1 and pil.images[0].size == (32, 32)


@pytest.mark.parametrize("kw,err,match", [
    (dict(num_images_per_prompt=0), ValueError, "num_images_per_prompt"),
    (dict(num_images_per_prompt=True), ValueError, "num_images_per_prompt"),
    (dict(generator=3), TypeError, "generator"),
    (dict(generator=[torch.Generator(), 3]), TypeError, "generator"),
    (dict(latents=torch.zeros(4, 8, 8)), ValueError, "latents"),
    (dict(negative_prompt=["a", "b", "c"]), ValueError, "negative_prompt"),
    (dict(negative_prompt="a", negative_prompt_embeds=torch.zeros(1, 16, 32)), ValueError,
     "negative_prompt_embeds"),
    (dict(prompt_embeds=torch.zeros(16, 32, 2, 2)), ValueError, "prompt_embeds"),
    (dict(clip_skip=-1), ValueError, "clip_skip"),
    (dict(output_type="PIL"), ValueError, "output_type"),
    (dict(callback_on_step_end=lambda p, i, t, kw: 3), TypeError, "callback_on_step_end"),
    (dict(true_cfg_scale=2.0), ValueError, "true_cfg_scale"),
])
def test_bad_convention_arguments_name_the_argument(sd, kw, err, match):
    prompt = None if "prompt_embeds" in kw else PROMPTS
    with pytest.raises(err, match=match):
        _ours(sd, prompt, num_inference_steps=1, **kw)


def test_prompt_must_be_strings(sd):
    with pytest.raises(TypeError, match="prompt must be a string or a list of strings"):
        _ours(sd, ["a cat", 3], num_inference_steps=1)
    with pytest.raises(ValueError, match="prompt"):
        _ours(sd, None, num_inference_steps=1)


@pytest.mark.parametrize("strategy", ["syncsde", "multidiffusion", "collage"])
def test_batch_of_prompts_equals_one_call_per_prompt(sd, strategy):
    """Several windows, CFG, two prompts in one batch: sample j must be the single-prompt run
    from the same initial latents (each model input got its own sample's prompt)."""
    z = torch.randn(2, 4, 16, 32, generator=torch.Generator().manual_seed(1))
    kw = dict(height=32, width=64, window=32, stride=16, num_inference_steps=3, progress=False,
              strategy=strategy, output_type="latent", max_batch=5)
    both = P.wide_image(sd, PROMPTS, latents=z, negative_prompt=["a car", "a boat"], **kw)
    for j, (p, n) in enumerate(zip(PROMPTS, ["a car", "a boat"])):
        one = P.wide_image(sd, p, latents=z[j], negative_prompt=n, **kw)
        _close(both.latents[j], one.latents, tol=1e-5)
    assert float((both.latents[0] - both.latents[1]).abs().max()) > 1e-2


def test_sync_pipeline_from_pretrained(sd, tmp_path):
    from syncsde import SyncPipeline

    sd.save_pretrained(tmp_path / "sd")
    sync = SyncPipeline.from_pretrained(str(tmp_path / "sd"))
    assert type(sync.pipe).__name__ == "StableDiffusionPipeline" and "StableDiffusion" in repr(sync)
    out = sync(PROMPTS, task="wide", strategy="independent", height=32, width=32, window=32,
               num_inference_steps=STEPS, progress=False, output_type="latent",
               generator=torch.Generator().manual_seed(3))
    ref = _theirs(sd, PROMPTS, output_type="latent", generator=torch.Generator().manual_seed(3))
    _close(out.images, ref)


@pytest.mark.parametrize("sched", ["ddim", "euler"])
def test_given_latents_are_scaled_as_diffusers(sd, sched):
    make = {"ddim": tm.sd_scheduler,
            "euler": lambda: diffusers.EulerDiscreteScheduler(**SD_BETAS)}[sched]
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(12))
    sd.scheduler = make()
    ours = _ours(sd, PROMPTS, latents=z.clone(), output_type="latent")
    sd.scheduler = make()
    ref = _theirs(sd, PROMPTS, latents=z.clone(), output_type="latent")
    _close(ours.images, ref)
