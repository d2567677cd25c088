"""Tiled VAE and tiled img2img / upscaling (syncsde.denoisers.tiled_vae, syncsde.tasks.upscale):
tiling against an exactly local stand-in VAE and a slow blending reference, one-window parity
with a plain img2img loop written on diffusers' own DDIM scheduler, windowed inversion against
the plain inversion, exact output sizes and background preservation."""
from __future__ import annotations

import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

pytest.importorskip("diffusers")

import tiny_models as tm  # noqa: E402

from syncsde.denoisers.tiled_vae import blend_ramp, tile_starts, tiled_decode, tiled_encode  # noqa: E402
from syncsde.models import denoiser_from_pipeline  # noqa: E402
from syncsde.sampler import invert  # noqa: E402
from syncsde.tasks import wide_problem  # noqa: E402
from syncsde.tasks.upscale import (  # noqa: E402
    img2img_schedule, upscale_image, upscaled_size, window_inversion)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tm.sd_pipeline(tmp_path_factory.mktemp("up") / "sd")


class LocalVAE:
    """A stand-in whose encode / decode are exactly local (average pool / nearest upsample of
    a pointwise map), so tiling must not change anything."""

    vae_scale_factor = 4
    sample_size = 4

    def __init__(self):
        self.calls = 0

    def encode(self, x, sample=False):
        self.calls += 1
        y = F.avg_pool2d(x * 2 - 1, 4)
        return torch.cat([y, y[:, :1] ** 2], 1)

    def decode(self, z):
        self.calls += 1
        return (F.interpolate(z[:, :3], scale_factor=4, mode="nearest") / 2 + 0.5).clamp(0, 1)


def test_tiled_equals_untiled_for_a_local_vae():
    vae = LocalVAE()
    x = torch.rand(2, 3, 44, 76)                       # latent 11 x 19: tiles 4 every 3
    whole = vae.encode(x)
    tiled = tiled_encode(vae, x, tile=4, overlap=1)
    assert vae.calls > 10
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(tiled_decode(vae, whole, tile=4, overlap=2), vae.decode(whole),
                               atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="multiple of the VAE factor 4"):
        tiled_encode(vae, x[..., :43, :], tile=4, overlap=1)
    with pytest.raises(ValueError, match="overlap"):
        tiled_encode(vae, x, tile=4, overlap=4)


def test_blend_ramp_and_starts():
    assert blend_ramp(6, 2).tolist() == pytest.approx([1 / 3, 2 / 3, 1, 1, 2 / 3, 1 / 3])
    assert blend_ramp(3, 0).tolist() == [1, 1, 1]
    assert tile_starts(11, 4, 1) == [0, 3, 6, 7]
    assert tile_starts(3, 4, 1) == [0]


def test_tiled_decode_matches_slow_blend_reference(sd):
    den = denoiser_from_pipeline(sd)
    z = torch.randn(1, 4, 10, 14, generator=torch.Generator().manual_seed(0))
    out = tiled_decode(den, z, tile=6, overlap=2)
    f, T, o = 2, 6, 2
    num = np.zeros((3, 20, 28))
    den_w = np.zeros((20, 28))
    for top in (0, 4):                                 # starts every 4, last moved in
        for left in (0, 4, 8):
            img = den.decode(z[..., top:top + T, left:left + T])[0].numpy()
            for py in range(T * f):
                for px in range(T * f):
                    n = T * f
                    r = min(1, (py + 1) / (o * f + 1), (n - py) / (o * f + 1)) * \
                        min(1, (px + 1) / (o * f + 1), (n - px) / (o * f + 1))
                    num[:, top * f + py, left * f + px] += r * img[:, py, px]
                    den_w[top * f + py, left * f + px] += r
    np.testing.assert_allclose(out[0].numpy(), np.clip(num / den_w, 0, 1), atol=1e-5)
    # one tile covering everything is the plain decode / encode
    torch.testing.assert_close(tiled_decode(den, z, tile=14), den.decode(z))
    x = torch.rand(1, 3, 20, 28)
    torch.testing.assert_close(tiled_encode(den, x, tile=14), den.encode(x, sample=False))


def test_img2img_schedule_rule():
    from syncsde.sampler import SamplingSchedule

    s = SamplingSchedule.preset("sd", 10)
    assert img2img_schedule(s, 0.5).timesteps == s.timesteps[5:]
    assert img2img_schedule(s, 1.0).timesteps == s.timesteps
    assert img2img_schedule(s, 0.35).timesteps == s.timesteps[7:]   # int(3.5) = 3 steps
    # every kept step keeps its place (t -> s pairs and levels of the full schedule)
    full = s.steps()
    part = img2img_schedule(s, 0.5).steps()
    assert [(i.t, i.s, i.abar_t, i.abar_s) for i in part] == \
        [(i.t, i.s, i.abar_t, i.abar_s) for i in full[5:]]
    assert [i.index for i in part] == list(range(5))
    for bad in (0, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="strength"):
            img2img_schedule(s, bad)
    with pytest.raises(ValueError, match="leaves no step"):
        img2img_schedule(s, 0.05)
    two = SamplingSchedule(s.abar, [500, 0], s.final_abar)
    with pytest.raises(ValueError, match="only the t = 0 step"):
        img2img_schedule(two, 0.5)


def _reference_img2img(pipe, image, prompt, steps, strength, guidance, seed):
    """Plain img2img on diffusers' DDIMScheduler (add_noise + step), the UNet and the VAE."""
    from diffusers import DDIMScheduler

    sch = DDIMScheduler.from_config(pipe.scheduler.config)
    sch.set_timesteps(steps)
    k = min(int(steps * strength), steps)
    ts = sch.timesteps[steps - k:]
    with torch.no_grad():
        x0 = pipe.vae.encode(image[None] * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
        noise = torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(seed))[None]
        x = sch.add_noise(x0, noise, ts[:1])
        pos, neg = pipe.encode_prompt(prompt, "cpu", 1, True, None)
        for t in ts:
            out = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([neg, pos])).sample
            eps = out[:1] + guidance * (out[1:] - out[:1])
            x = sch.step(eps, t, x).prev_sample
    return x[0]


@pytest.mark.parametrize("strategy", ["syncsde", "multidiffusion"])
def test_one_window_scale_one_is_plain_img2img(sd, strategy):
    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    img = (img * 255).round() / 255                    # exactly representable as a PNG
    res = upscale_image(sd, img, 1, "a red car", strength=0.6, num_inference_steps=5,
                        guidance_scale=4.0, seed=3, strategy=strategy, progress=False)
    assert res.settings["num_views"] == 1 and res.settings["steps_run"] == 3
    ref = _reference_img2img(sd, img, "a red car", 5, 0.6, 4.0, 3)
    torch.testing.assert_close(res.latents, ref, atol=1e-4, rtol=0)


def test_window_inversion_with_one_window_is_plain_inversion(sd):
    den = denoiser_from_pipeline(sd)
    x0 = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(2))
    sched = img2img_schedule(den.schedule(6), 0.5)
    p = wide_problem((4, 16, 16), 16, 16, cond="a beach")
    a = window_inversion(x0, den, p.views, "a beach", sched)
    b = invert(x0[None], den, "a beach", sched, progress=False)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # over windows the canvas eps is the coverage average of the windows' eps
    q = wide_problem((4, 16, 24), 16, 8, cond="a beach")
    x1 = torch.randn(4, 16, 24, generator=torch.Generator().manual_seed(3))
    c = window_inversion(x1, den, q.views, "a beach", sched)
    assert c.shape == x1.shape and torch.isfinite(c).all() and not torch.allclose(c, x1)


@pytest.mark.parametrize("start", ["noise", "inversion"])
@pytest.mark.parametrize("strategy", ["syncsde", "multidiffusion", "synctweedies"])
def test_upscale_output_is_exactly_scale_times_input(sd, start, strategy):
    img = torch.rand(3, 13, 17, generator=torch.Generator().manual_seed(0))
    res = upscale_image(sd, img, 3, "a beach", strength=0.5, start=start, strategy=strategy,
                        num_inference_steps=2, progress=False, vae_tile=8)
    assert res.images[0].size == (51, 39)              # 3 x (17, 13); canvas padded to 52 x 40
    assert res.tensors.shape == (1, 3, 39, 51)
    assert res.settings["num_views"] > 1 and torch.isfinite(res.tensors).all()


def test_mask_keeps_the_input_outside(sd):
    img = torch.rand(3, 16, 24, generator=torch.Generator().manual_seed(4))
    m = torch.zeros(32, 48)
    m[:, 20:] = 1                                      # regenerate the right part only
    res = upscale_image(sd, img, 2, "a beach", strength=0.8, mask=m, num_inference_steps=3,
                        progress=False)
    up = res.extras["upscaled_input"]
    assert torch.equal(res.tensors[0][:, :, :20], up[:, :, :20])
    assert not torch.allclose(res.tensors[0][:, :, 24:], up[:, :, 24:], atol=1e-3)
    # latents outside the (max-pooled) mask follow the start's own path to the final level
    x0 = res.extras["x0"]
    den = denoiser_from_pipeline(sd)
    sched = img2img_schedule(den.schedule(3), 0.8)
    e0 = (res.extras["x_start"] - math.sqrt(float(sched.abar[sched.timesteps[0]])) * x0) / \
        math.sqrt(1 - float(sched.abar[sched.timesteps[0]]))
    af = sched.final_abar
    keep = math.sqrt(af) * x0 + math.sqrt(1 - af) * e0
    torch.testing.assert_close(res.latents[..., :10], keep[..., :10], atol=1e-5, rtol=0)


def test_upscale_bad_input(sd, tmp_path):
    img = torch.rand(3, 10, 10)
    with pytest.raises(ValueError, match="not a whole number"):
        upscaled_size(10, 10, 0.33)
    with pytest.raises(ValueError, match="scale"):
        upscale_image(sd, img, -1, "a", num_inference_steps=1, progress=False)
    with pytest.raises(ValueError, match="start"):
        upscale_image(sd, img, 2, "a", start="ddpm", num_inference_steps=1, progress=False)
    with pytest.raises(ValueError, match="no such file"):
        upscale_image(sd, tmp_path / "none.png", 2, "a", num_inference_steps=1, progress=False)


def test_cli_upscale_checks_before_loading(tmp_path, capsys):
    from PIL import Image

    from syncsde.cli import main

    Image.new("RGB", (10, 10)).save(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), "--scale", "0.33", "--prompt", "x",
                 "--model", str(tmp_path / "none")]) == 2
    assert "not a whole number" in capsys.readouterr().err
    assert main(["upscale", str(tmp_path / "b.png"), "--prompt", "x"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_regions_and_upscale_run_on_the_scenes_model(tmp_path):
    import json

    from PIL import Image

    from syncsde.cli import main

    (tmp_path / "l.toml").write_text('width = 64\nheight = 32\nbackground = "a day over grass"\n'
                                     '[[regions]]\nprompt = "a night over the sea"\n'
                                     'box = [32, 0, 64, 32]\n')
    assert main(["regions", str(tmp_path / "l.toml"), "--model", "scenes", "--steps", "2",
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    out = Image.open(tmp_path / "o" / "regions_l_syncsde_seed0.png")
    assert out.size == (64, 32)
    assert json.loads(out.text["syncsde"])["regions"][0]["box"] == [32, 0, 64, 32]
    Image.new("RGB", (24, 16), (40, 80, 200)).save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "in.png"), "--scale", "2", "--prompt", "a day over the sea",
                 "--model", "scenes", "--steps", "4", "--strategy", "multidiffusion",
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert Image.open(tmp_path / "o" / "upscale_in_x2_multidiffusion_seed0.png").size == (48, 32)
