"""SDXL on a tiny model built from configs: parity with StableDiffusionXLPipeline under
``independent``, per-window add_time_ids, mask generation, clear refusals, loading."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("diffusers")

import tiny_models as tm  # noqa: E402

from syncsde import pipelines as P  # noqa: E402
from syncsde.denoisers.sdxl import StableDiffusionXLDenoiser, XLCondition  # noqa: E402
from syncsde.models import denoiser_from_pipeline, infer_kind, load_pipeline  # noqa: E402

STEPS = 4
PROMPTS = ["a photo of a cat", "a dog on the grass"]


@pytest.fixture(scope="module")
def xl(tmp_path_factory):
    return tm.sdxl_pipeline(tmp_path_factory.mktemp("sdxl"))


def _close(a, b, tol=1e-4):
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    assert a.shape == b.shape, (a.shape, b.shape)
    err = float((a - b).abs().max())
    assert err <= tol * max(1.0, float(b.abs().max())), err
    return err


def _ours(pipe, prompt, **kw):
    kw.setdefault("num_inference_steps", STEPS)
    kw.setdefault("guidance_scale", 5.0)
    return P.wide_image(pipe, prompt, height=32, width=32, window=32, strategy="independent",
                        progress=False, **kw)


def _theirs(pipe, prompt, **kw):
    kw.setdefault("num_inference_steps", STEPS)
    kw.setdefault("guidance_scale", 5.0)
    return pipe(prompt, height=32, width=32, **kw).images


def test_adapter_is_sdxl(xl):
    den = denoiser_from_pipeline(xl)
    assert isinstance(den, StableDiffusionXLDenoiser)
    assert den.prompts.force_zeros


@pytest.mark.parametrize("negative", [None, "a red car"])
def test_one_window_equals_the_sdxl_pipeline(xl, negative):
    ours = _ours(xl, "a photo of a cat", negative_prompt=negative, output_type="latent",
                 generator=torch.Generator().manual_seed(3))
    ref = _theirs(xl, "a photo of a cat", negative_prompt=negative, output_type="latent",
                  generator=torch.Generator().manual_seed(3))
    assert ours.settings["scheduler"] == "EulerDiscreteScheduler"
    _close(ours.images, ref)


def test_batch_embeddings_clip_skip_and_decode(xl):
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    ours = _ours(xl, PROMPTS, num_images_per_prompt=2, output_type="pt", generator=g(),
                 negative_prompt=["a boat", "a car"])
    ref = _theirs(xl, PROMPTS, num_images_per_prompt=2, output_type="pt", generator=g(),
                  negative_prompt=["a boat", "a car"])
    assert ours.images.shape == (4, 3, 32, 32)
    _close(ours.images, ref)
    pe, ne, pp, npp = xl.encode_prompt(PROMPTS, device="cpu", num_images_per_prompt=1,
                                       do_classifier_free_guidance=True,
                                       negative_prompt=["a boat", "a car"])
    emb = dict(prompt_embeds=pe, negative_prompt_embeds=ne, pooled_prompt_embeds=pp,
               negative_pooled_prompt_embeds=npp)
    _close(_ours(xl, None, output_type="latent", generator=g(), **emb).images,
           _theirs(xl, None, output_type="latent", generator=g(), **emb))
    skip = _ours(xl, PROMPTS, clip_skip=1, output_type="latent", generator=g())
    _close(skip.images, _theirs(xl, PROMPTS, clip_skip=1, output_type="latent", generator=g()))
    plain = _theirs(xl, PROMPTS, output_type="latent", generator=g())
    assert float((skip.images - plain).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="pooled_prompt_embeds"):
        _ours(xl, None, prompt_embeds=pe, output_type="latent")


def _spy_time_ids(pipe):
    rows: list[torch.Tensor] = []
    orig = pipe.unet.forward

    def spy(*a, **k):
        rows.append(k["added_cond_kwargs"]["time_ids"].clone())
        return orig(*a, **k)

    return rows, spy, orig


def test_each_window_carries_its_own_crop(xl):
    rows, spy, orig = _spy_time_ids(xl)
    xl.unet.forward = spy
    try:
        res = P.wide_image(xl, "a photo of a cat", height=32, width=64, window=32, stride=16,
                           num_inference_steps=2, progress=False, output_type="latent",
                           strategy="syncsde")
    finally:
        del xl.unet.forward
    assert res.result.views.shape[0] == 3
    # by hand: a 64-px-wide canvas, 32-px windows every 16 px start at 0, 16, 32; each row is
    # original (the canvas, 32x64) + crop (top, left) + target (the window, 32x32)
    want = torch.tensor([[32, 64, 0, left, 32, 32] for left in (0, 16, 32)], dtype=torch.float32)
    assert len(rows) == 2  # one model call per step (both CFG halves of all windows)
    for r in rows:
        assert r.shape == (6, 6)
        torch.testing.assert_close(r[:3], want, atol=0, rtol=0)  # unconditional half
        torch.testing.assert_close(r[3:], want, atol=0, rtol=0)  # conditional half


def test_crop_reaches_the_unet(xl):
    den = denoiser_from_pipeline(xl)
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    a = den(x, 500, [XLCondition("a cat", (0, 0)), XLCondition("a cat", (0, 64))])
    b = den(x, 500, ["a cat", "a cat"])
    torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)  # (0, 0) = diffusers' default
    assert float((a[1] - b[1]).abs().max()) > 1e-4


def test_mask_generation_free_trajectory_is_the_plain_pipeline(xl):
    m = torch.zeros(16, 16)
    m[4:12, 4:12] = 1
    res = P.mask_generation(xl, m, "a photo of the beach", "a big boat", "the beach with a boat",
                            num_inference_steps=STEPS, guidance_scale=5.0, progress=False,
                            output_type="latent", generator=torch.Generator().manual_seed(7))
    ref = _theirs(xl, "a photo of the beach", output_type="latent",
                  generator=torch.Generator().manual_seed(7))
    _close(res.result.views[0], ref[0])
    assert torch.isfinite(res.latents).all() and res.latents.shape == (4, 16, 16)


def test_refusals(xl, tmp_path):
    with pytest.raises(ValueError, match="SD 1.x/2.x"):
        P.edit_image(xl, torch.rand(3, 32, 32), source_prompt="a cat", target_prompt="a dog",
                     mask=torch.ones(16, 16), num_inference_steps=2, progress=False)
    with pytest.raises(TypeError, match="IFDenoiser"):
        P.ambiguous_image(xl, "a cat", "a dog", num_inference_steps=2, progress=False)
    from diffusers import StableDiffusionXLPipeline

    refiner = StableDiffusionXLPipeline(vae=xl.vae, text_encoder=None, text_encoder_2=xl.text_encoder_2,
                                        tokenizer=None, tokenizer_2=xl.tokenizer_2, unet=xl.unet,
                                        scheduler=xl.scheduler, add_watermarker=False)
    with pytest.raises(ValueError, match="refiner"):
        denoiser_from_pipeline(refiner)


def test_load_pipeline_from_a_saved_folder(xl, tmp_path):
    xl.save_pretrained(tmp_path / "xl")
    assert infer_kind(str(tmp_path / "xl")) == "sdxl"
    assert infer_kind("stabilityai/stable-diffusion-xl-base-1.0") == "sdxl"
    pipe = load_pipeline(str(tmp_path / "xl"))
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"  # no silent DDIM swap
    assert isinstance(denoiser_from_pipeline(pipe), StableDiffusionXLDenoiser)


def test_size_conditioning_arguments(xl):
    kw = dict(original_size=(64, 48), target_size=(40, 24), crops_coords_top_left=(8, 4))
    g = lambda: torch.Generator().manual_seed(6)  # noqa: E731
    ours = _ours(xl, "a photo of a cat", output_type="latent", generator=g(), **kw)
    ref = _theirs(xl, "a photo of a cat", output_type="latent", generator=g(), **kw)
    _close(ours.images, ref)
    plain = _theirs(xl, "a photo of a cat", output_type="latent", generator=g())
    assert float((ref - plain).abs().max()) > 1e-4  # the conditioning reached the UNet
    rows, spy, orig = _spy_time_ids(xl)
    xl.unet.forward = spy
    try:
        P.wide_image(xl, "a cat", height=32, width=64, window=32, stride=16,
                     num_inference_steps=1, progress=False, output_type="latent", **kw)
    finally:
        del xl.unet.forward
    want = torch.tensor([[64, 48, 8, 4 + left, 40, 24] for left in (0, 16, 32)],
                        dtype=torch.float32)
    torch.testing.assert_close(rows[0][3:], want, atol=0, rtol=0)


def test_size_conditioning_is_sdxl_only(tmp_path):
    sd = tm.sd_pipeline(tmp_path)
    with pytest.raises(ValueError, match="original_size apply to SDXL only"):
        P.wide_image(sd, "a cat", height=32, width=32, original_size=(64, 64),
                     num_inference_steps=1, progress=False)
