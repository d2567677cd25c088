"""Tiled / wrapped VAE decode of large canvases (:mod:`syncsde.denoisers.vae_tiling`) and the
``vae_tiling`` / ``circular`` options of ``wide_image`` and ``mask_generation``.

References: a pointwise "VAE" (no spatial context: any correct tiling reproduces the whole
decode exactly), a 3x3-convolution "VAE" (wrap padding reproduces a circular convolution
exactly), the tiny SD VAE's own whole decode (tiles agree with it to a measured tolerance) and
the whole decode of the canvas repeated periodically (the seam must look like the interior).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from syncsde.denoisers.vae_tiling import (
    check_wrap, decode_canvas, tiled_decode_wrapped, wants_tiling, wrap_pad_decode)


class PointwiseVAE:
    """A decoder with no spatial context: pixel = sigmoid(first 3 latent channels), each latent
    pixel repeated f x f."""

    vae = True

    def __init__(self, f=2, sample_size=6):
        self.vae_scale_factor, self.sample_size = f, sample_size

    def decode(self, z):
        z = z[None] if z.dim() == 3 else z
        f = self.vae_scale_factor
        return torch.sigmoid(z[:, :3].float()).repeat_interleave(f, -2).repeat_interleave(f, -1)


class ConvVAE(PointwiseVAE):
    """A 3x3 convolution (zero padding: the edges differ from the interior) then the pointwise
    decoder; the circular convolution is the ideal wrapped decode."""

    def __init__(self, **kw):
        super().__init__(**kw)
        g = torch.Generator().manual_seed(3)
        self.weight = torch.randn(4, 4, 3, 3, generator=g) / 6

    def decode(self, z, circular=False):
        z = z[None] if z.dim() == 3 else z
        z = F.pad(z, (1, 1, 1, 1), mode="circular") if circular else F.pad(z, (1, 1, 1, 1))
        return super().decode(F.conv2d(z, self.weight))


@pytest.mark.parametrize("wrap", [None, "width", "height", "both"])
@pytest.mark.parametrize("hw,tile,overlap", [((6, 29), 6, 2), ((13, 17), 5, 1), ((4, 9), 6, 3),
                                             ((11, 5), 4, 0)])
def test_pointwise_decoder_tiled_equals_whole(wrap, hw, tile, overlap):
    """Blend weights, tile starts, wrapped indices: with no spatial context every correct
    tiling (seam-crossing tiles, padded single tiles, ramps) gives the whole decode."""
    den = PointwiseVAE()
    z = torch.randn(2, 4, *hw, generator=torch.Generator().manual_seed(sum(hw)))
    whole = den.decode(z)
    got = decode_canvas(den, z, vae_tiling=True, tile=tile, overlap=overlap, wrap=wrap,
                        padding=2)
    assert got.shape == whole.shape
    torch.testing.assert_close(got, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("wrap", ["width", "height", "both"])
def test_wrap_padding_equals_circular_convolution(wrap):
    den = ConvVAE()
    z = torch.randn(1, 4, 7, 12, generator=torch.Generator().manual_seed(1))
    axes = check_wrap(wrap)
    got = wrap_pad_decode(den, z, axes, padding=1)
    # reference: the circular convolution, kept only along the wrapped axes (the other axis
    # keeps the zero padding of an ordinary decode)
    ref_circ, ref_zero = den.decode(z, circular=True), den.decode(z)
    ref = ref_zero.clone()
    f = den.vae_scale_factor
    H, W = ref.shape[-2:]
    inner_r = slice(f, H - f) if -2 not in axes else slice(None)
    inner_c = slice(f, W - f) if -1 not in axes else slice(None)
    ref[..., inner_r, inner_c] = ref_circ[..., inner_r, inner_c]
    torch.testing.assert_close(got[..., inner_r, inner_c], ref[..., inner_r, inner_c],
                               atol=1e-6, rtol=0)
    # and without wrap padding the wrapped edges are wrong (the test can fail)
    plain = den.decode(z)
    assert (plain - ref_circ).abs().max() > 1e-2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_models import sd_pipeline

    from syncsde.models import denoiser_from_pipeline

    pipe = sd_pipeline(tmp_path_factory.mktemp("tiny"))
    return pipe, denoiser_from_pipeline(pipe)


KW = dict(num_inference_steps=4, progress=False, output_type="pt", seed=1)


def test_wide_image_tiled_decode_close_to_whole(tiny):
    """``vae_tiling="auto"`` on a canvas 8x wider than the model: the same latents, decoded in
    tiles that agree with the VAE's whole decode (measured: max 0.101, mean 0.0099 on this
    random-weight VAE at the default tile 16 / overlap 4; docs/models.md)."""
    pipe, den = tiny
    whole = wide_image_run(pipe, vae_tiling=None)
    tiled = wide_image_run(pipe, vae_tiling="auto")
    torch.testing.assert_close(tiled.latents, whole.latents, atol=0, rtol=0)
    z = whole.latents[None]
    torch.testing.assert_close(whole.tensors, den.decode(z), atol=0, rtol=0)
    torch.testing.assert_close(tiled.tensors, decode_canvas(den, z, vae_tiling=True),
                               atol=0, rtol=0)
    d = (tiled.tensors - whole.tensors).abs()
    assert 1e-4 < float(d.max()) < 0.15 and float(d.mean()) < 0.015
    assert tiled.settings["vae_tiling"] == "auto"


def wide_image_run(pipe, **kw):
    from syncsde.pipelines import wide_image

    return wide_image(pipe, "a photo of a cat", height=32, width=256, **KW, **kw)


def _periodic_latent(h, w, seed=0, max_rows_freq=2):
    """A smooth latent periodic in both axes (unit standard deviation)."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.arange(h)[:, None] / h, torch.arange(w)[None, :] / w
    z = torch.zeros(1, 4, h, w)
    for c in range(4):
        for _ in range(4):
            a = int(torch.randint(0, max_rows_freq + 1, (1,), generator=g))
            b = int(torch.randint(0, 3, (1,), generator=g))
            ph = torch.rand(2, generator=g) * 2 * math.pi
            z[0, c] += torch.cos(2 * math.pi * a * y + ph[0]) * torch.cos(2 * math.pi * (b + 1) * x
                                                                       + ph[1])
    return z / z.std()


def _jumps(img, axis):
    """Mean |difference| between neighbouring columns (axis -1) or rows (-2): interior pairs,
    and the wrap pair (last, first)."""
    x = img if axis == -1 else img.transpose(-1, -2)
    inner = (x[..., 1:] - x[..., :-1]).abs().mean(dim=(0, 1, 2))
    wrap = (x[..., 0] - x[..., -1]).abs().mean()
    return float(wrap), inner


@pytest.mark.parametrize("wrap,tiling,h", [("width", False, 24), ("width", True, 24),
                                           ("both", False, 24), ("both", True, 24),
                                           ("height", True, 12)])
def test_tiny_vae_wrapped_decode_is_seamless(tiny, wrap, tiling, h):
    """The mean jump across the wrap is like the jumps between interior neighbours (measured:
    0.013-0.016 vs interior medians 0.012-0.018 across the width, 0.039-0.044 vs 0.038-0.045
    across the height); a decode without wrap jumps 1.8x-15x the median (the test can fail).
    ``h = 12`` is below the tile (16): the height wraps inside one padded tile."""
    _, den = tiny
    # 12 rows: at most one period down the height (smooth enough for a seam to show)
    z = _periodic_latent(h, 80) if h > 12 else _periodic_latent(h, 80, seed=1, max_rows_freq=1)
    got = decode_canvas(den, z, vae_tiling=tiling, wrap=wrap)
    plain = decode_canvas(den, z, vae_tiling=tiling)
    for ax in check_wrap(wrap):
        jump, inner = _jumps(got, ax)
        assert jump <= float(inner.max()) and jump <= 1.5 * float(inner.median()), (ax, jump)
        pjump, pinner = _jumps(plain, ax)
        assert pjump > 1.6 * float(pinner.median()), (ax, pjump)


@pytest.mark.parametrize("tiling", [False, True])
def test_width_wrap_edges_match_the_periodic_decode(tiny, tiling):
    """Against the whole decode of the canvas repeated 3x along the width (its middle copy is
    the decode of a true loop), the wrapped decode's edge columns are as close as its interior
    (measured mean |diff|: edges 0.009 / interior 0.006 untiled, 0.050 / 0.045 tiled), the
    plain decode's edges are not (0.078, 0.094)."""
    _, den = tiny
    h, w, f = 24, 80, den.vae_scale_factor
    z = _periodic_latent(h, w)
    ref = den.decode(torch.cat([z] * 3, -1))[..., w * f:2 * w * f]
    got = decode_canvas(den, z, vae_tiling=tiling, wrap="width")
    plain = decode_canvas(den, z, vae_tiling=tiling)
    d, dp = (got - ref).abs(), (plain - ref).abs()
    edge = float(torch.cat([d[..., :2 * f], d[..., -2 * f:]], -1).mean())
    interior = float(d[..., 8 * f:-8 * f].mean())
    plain_edge = float(torch.cat([dp[..., :2 * f], dp[..., -2 * f:]], -1).mean())
    assert edge <= 1.6 * interior + 0.005
    assert plain_edge > 1.6 * interior + 0.005 and plain_edge > 1.5 * edge


def test_untiled_width_wrap_matches_diffusers_style_padding(tiny):
    from syncsde.pipelines import decode_circular

    _, den = tiny
    z = torch.randn(1, 4, 16, 40, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(decode_canvas(den, z, vae_tiling=False, wrap="width"),
                               decode_circular(den, z), atol=0, rtol=0)


def test_auto_rule_and_pixel_space():
    den = PointwiseVAE(sample_size=8)
    assert not wants_tiling(den, (8, 8), "auto") and wants_tiling(den, (8, 9), "auto")
    assert wants_tiling(den, (4, 4), True) and not wants_tiling(den, (64, 64), None)
    assert not wants_tiling(den, (64, 64), False) and wants_tiling(den, (8, 8), "auto", tile=7)
    pix = PointwiseVAE(f=1)
    assert not wants_tiling(pix, (64, 64), True)
    z = torch.randn(1, 4, 5, 7)
    torch.testing.assert_close(tiled_decode_wrapped(pix, z, (-1,)), pix.decode(z))


def test_circular_height_windows_gather_the_torus(tiny):
    """``circular="height"`` / ``"both"``: every window is the roll-and-crop of the canvas."""
    from syncsde.pipelines.wide import _wrapped_window_problem

    C, H, W = 2, 9, 14
    canvas = torch.randn(C, H, W, generator=torch.Generator().manual_seed(2))
    for axes in ((-2,), (-2, -1)):
        problem, offsets = _wrapped_window_problem((C, H, W), (4, 6), (3, 5), axes, "p", None)
        views = problem.views.forward(canvas)
        assert views.shape[0] == len(offsets)
        tops = sorted({t for t, _ in offsets})
        assert tops == list(range(0, H, 3))  # round the height: ceil(9/3) rows of windows
        for v, (t, left) in zip(views, offsets):
            ref = torch.roll(canvas, (-t, -left), (1, 2))[:, :4, :6]
            torch.testing.assert_close(v, ref, atol=0, rtol=0)
        if axes == (-2,):
            assert max(left for _, left in offsets) == W - 6  # the width does not wrap


def test_wide_image_circular_both_runs_and_wraps(tiny):
    pipe, den = tiny
    r = wide_image_run(pipe, circular="both", vae_tiling="auto")
    assert r.tensors.shape == (1, 3, 32, 256) and r.settings["circular"] == "both"
    torch.testing.assert_close(r.tensors, decode_canvas(den, r.latents[None], vae_tiling=True,
                                                        wrap="both"), atol=0, rtol=0)


def test_mask_generation_large_canvas_tiles(tiny):
    from syncsde.pipelines import mask_generation

    pipe, den = tiny
    m = torch.zeros(32, 96)
    m[8:24, 30:60] = 1
    r = mask_generation(pipe, m, "a beach", "a dog", "a dog on the beach", height=32, width=96,
                        vae_tiling="auto", **KW)
    torch.testing.assert_close(r.tensors, decode_canvas(den, r.latents[None], vae_tiling=True),
                               atol=0, rtol=0)
    assert float((r.tensors - den.decode(r.latents[None])).abs().max()) > 1e-4


@pytest.mark.parametrize("kw,match", [
    (dict(vae_tiling="yes"), "vae_tiling must be"),
    (dict(vae_tiling=1), "vae_tiling must be"),
    (dict(vae_tiling="auto", vae_tile=0), "vae_tile must be a positive integer"),
    (dict(vae_tiling="auto", vae_tile=True), "vae_tile must be a positive integer"),
    (dict(vae_tiling="auto", vae_tile=8.5), "vae_tile must be a positive integer"),
    (dict(vae_tiling=True, vae_tile_overlap=-1), "vae_tile_overlap must be a non-negative"),
    (dict(vae_tiling=True, vae_tile=8, vae_tile_overlap=8), r"vae_tile_overlap \(8\) must be "
                                                             r"smaller than vae_tile \(8\)"),
    (dict(vae_tiling="auto", vae_tile_overlap=16), r"vae_tile_overlap \(16\) must be "
                                                    r"smaller than vae_tile \(16\)"),
    (dict(circular="diagonal"), "circular must be False, True"),
    (dict(circular=1), "circular must be False, True"),
])
def test_bad_options_name_the_argument(tiny, kw, match):
    from syncsde.pipelines import mask_generation, wide_image

    pipe, _ = tiny
    with pytest.raises(ValueError, match=match):
        wide_image(pipe, "a cat", height=32, width=64, **KW, **kw)
    if "circular" not in kw:
        with pytest.raises(ValueError, match=match):
            mask_generation(pipe, torch.ones(32, 32), "a", "b", "c", **KW, **kw)


def _scale_module():
    from benchmark_scripts import load_benchmark

    return load_benchmark("scale")


def test_scale_benchmark_growth_and_one_child():
    """benchmarks/scale.py: the growth rows by hand, and one real child run (smoke test)."""
    mod = _scale_module()
    rows = [dict(mode="tiled", width=w, peak_rss_mib=r, wall_s=t, num_views=1)
            for w, r, t in ((64, 100.0, 1.0), (128, 104.0, 1.5), (256, 112.0, 2.5))]
    g = mod.growth(rows, 32)
    assert [(x["from_width"], x["to_width"]) for x in g] == [(64, 128), (128, 256)]
    assert [x["mib_per_model_width"] for x in g] == [2.0, 2.0]  # 4 MiB / 2, 8 MiB / 4
    assert [x["s_per_model_width"] for x in g] == [0.25, 0.25]
    assert "| tiled | 64 -> 128 | 2.00 | 0.250 |" in mod.markdown(rows, g, 32)
    rec = mod.run_child(["--height", "32", "--width", "64", "--mode", "tiled", "--steps", "1",
                         "--max-batch", "8", "--threads", "1", "--prompt", "a cat"])
    assert "error" not in rec, rec.get("error")
    assert rec["image"] == [32, 64] and rec["peak_rss_mib"] > 50 and rec["wall_s"] > 0
