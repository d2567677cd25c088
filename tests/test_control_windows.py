"""Control images per window: a canvas-sized control image whose crops all differ; every model
call of every strategy must feed each window's latent together with exactly its own crop."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("diffusers")

import tiny_models as tm  # noqa: E402

from syncsde.models import denoiser_from_pipeline  # noqa: E402
from syncsde.tasks.control_windows import window_control_crops, with_window_control  # noqa: E402
from syncsde.tasks.regions import regions_image  # noqa: E402
from syncsde.views import WindowViews  # noqa: E402

F = 2  # the tiny VAE's factor


@pytest.fixture(scope="module")
def cn(tmp_path_factory):
    return tm.controlnet_pipeline(tmp_path_factory.mktemp("cw") / "cn")


def _control(H, W, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).uniform(0, 1, (3, H, W)).astype(np.float32))


class RecordingControlNet(torch.nn.Module):
    """Wraps the ControlNet and keeps every (latent batch, control batch) it is called with."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.calls = []

    def forward(self, x, t, **kw):
        self.calls.append((x.detach().clone(), kw["controlnet_cond"].detach().clone()))
        return self.net(x, t, **kw)

    def __getattr__(self, k):
        try:
            return super().__getattr__(k)
        except AttributeError:
            return getattr(self.net, k)


def test_crops_match_numpy_slices_including_wrap():
    img = _control(8, 20)
    views = WindowViews((1, 4, 10), (4, 6), torch.tensor([[0, 0], [0, 4], [0, 7]]), circular=True)
    crops = window_control_crops(img, views, factor=2)
    a = img.numpy()
    for crop, left in zip(crops, (0, 8, 14)):
        cols = [(left + c) % 20 for c in range(12)]
        np.testing.assert_array_equal(crop.numpy(), a[:, :, cols])
    with pytest.raises(ValueError, match="control_image is 10x8 px; the canvas is 20x8"):
        window_control_crops(_control(8, 10), views, factor=2)
    with pytest.raises(ValueError, match="control_image must be"):
        window_control_crops(torch.zeros(2, 3, 8, 20), views, factor=2)


STRATEGIES = ["syncsde", "multidiffusion", "synctweedies", "noise_average", "independent",
              "syncdiffusion", "syncvc"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_window_sees_exactly_its_crop(cn, strategy):
    den = denoiser_from_pipeline(cn)
    rec = RecordingControlNet(den.controlnet)
    den.controlnet = rec
    try:
        H, W = 32, 80                      # pixels; latent 16 x 40, windows 16 every 8
        control = _control(H, W, seed=3)
        lay = {"width": W, "height": H, "background": "a beach",
               "regions": [{"prompt": "a red car", "box": [0, 0, 40, 32]}]}
        regions_image(den, lay, strategy=strategy, num_inference_steps=2, guidance_scale=3.0,
                      seed=7, control_image=control, progress=False)
    finally:
        den.controlnet = rec.net
    lefts_px = [0, 16, 32, 48]            # latent lefts 0, 8, 16, 24 times the factor
    assert rec.calls
    crops = [control[:, :, l:l + 32] for l in lefts_px]
    full = 0
    for x, ctrl in rec.calls:
        n = len(x)
        if n % 4 == 0 and n >= 2 * 8:      # a sampler call: all views, both CFG halves, in order
            full += 1
            for r in range(n):
                assert torch.equal(ctrl[r].float(), crops[r % 4]), (strategy, r)
        else:                              # a strategy's own call on some views (SyncDiffusion's
            for r in range(n):             # gradient, SyncVC): each row one window's own crop,
                assert any(torch.equal(ctrl[r].float(), c) for c in crops)  # both halves alike
            assert torch.equal(ctrl[:n // 2], ctrl[n // 2:])
    assert full == 2  # one per step
    # the first call's latents are the windows of the initial noise canvas, row by row: the
    # latent of window i goes with crop i (canvas strategies; syncsde starts from one canvas too)
    x0, _ = rec.calls[0]
    noise = torch.randn((4, 16, 40), generator=torch.Generator().manual_seed(7))
    if strategy != "independent":
        for r in range(len(x0)):
            lat_left = lefts_px[r % 4] // F
            torch.testing.assert_close(x0[r], noise[:, :, lat_left:lat_left + 16])


def test_with_window_control_wraps_cond_and_negative():
    from syncsde.denoisers.diffusers_models import ImagePrompt
    from syncsde.tasks import wide_problem

    p = wide_problem((4, 4, 12), 4, 4, cond="a", negative="b")
    with_window_control(p, _control(8, 24), 2, scale=0.5)
    assert all(isinstance(c, ImagePrompt) and c.prompt == "a" and c.scale == 0.5 for c in p.cond)
    assert all(isinstance(c, ImagePrompt) and c.prompt == "b" for c in p.negative)
    assert [c.image[0, 0, 0].item() for c in p.cond] == \
        [_control(8, 24)[0, 0, k].item() for k in (0, 8, 16)]


def test_upscale_feeds_each_window_its_crop_of_the_resized_control(cn):
    from syncsde.tasks.upscale import upscale_image

    den = denoiser_from_pipeline(cn)
    rec = RecordingControlNet(den.controlnet)
    den.controlnet = rec
    img = _control(16, 24, seed=1)
    ctrl = _control(32, 48, seed=2)       # already at the output size: used as is
    try:
        res = upscale_image(den, img, 2, "a beach", strength=0.5, num_inference_steps=2,
                            control_image=ctrl, strategy="multidiffusion", progress=False)
    finally:
        den.controlnet = rec.net
    assert res.images[0].size == (48, 32)
    offs = res.extras["problem"].views.offsets.tolist()  # latent (top, left): 16 x 24 canvas
    assert offs == [[0, 0], [0, 8]]
    for x, c in rec.calls:
        for r in range(len(x)):
            t, l = offs[r % 2]
            assert torch.equal(c[r].float(), ctrl[:, t * F:t * F + 32, l * F:l * F + 32])


def test_sdxl_windows_carry_their_crop_in_add_time_ids(tmp_path):
    """SDXL conditions on the crop: every window's add_time_ids row is (canvas size, its own
    pixel offset, window size), on both CFG halves, for regions and for upscaling."""
    from syncsde.tasks.upscale import upscale_image

    den = denoiser_from_pipeline(tm.sdxl_pipeline(tmp_path / "xl"))
    rows = []
    inner = den._unet

    def recording(x, t, emb, **kw):
        rows.append(kw["added_cond_kwargs"]["time_ids"].clone())
        return inner(x, t, emb, **kw)

    den._unet = recording
    lay = {"width": 80, "height": 32, "background": "a beach",
           "regions": [{"prompt": "a red car", "box": [0, 0, 40, 32]}]}
    res = regions_image(den, lay, strategy="syncsde", num_inference_steps=2, guidance_scale=3.0,
                        progress=False)
    assert res.images[0].size == (80, 32) and rows
    want = torch.tensor([[32, 80, 0, left, 32, 32] for left in (0, 16, 32, 48)], dtype=torch.float32)
    for r in rows:
        assert len(r) % 4 == 0
        torch.testing.assert_close(r.float(), want.repeat(len(r) // 4, 1))
    rows.clear()
    up = upscale_image(den, torch.rand(3, 16, 24), 2, "a beach", strength=0.5, start="inversion",
                       num_inference_steps=2, progress=False)
    assert up.images[0].size == (48, 32) and rows
    want = torch.tensor([[32, 48, 0, left, 32, 32] for left in (0, 16)], dtype=torch.float32)
    for r in rows:
        torch.testing.assert_close(r.float(), want.repeat(len(r) // 2, 1))
