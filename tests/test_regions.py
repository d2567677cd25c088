"""Region prompts (syncsde.tasks.regions): layout files, the region weights and the layered SyncSDE
correlation against slow pure-Python references, and parity on tiny SD models: one window and
one region is the three-trajectory mask task, no region over windows is the wide task, one
full region under MultiDiffusion is diffusers' own pipeline."""
from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("diffusers")

import tiny_models as tm  # noqa: E402

from syncsde.models import denoiser_from_pipeline  # noqa: E402
from syncsde.sampler import sample  # noqa: E402
from syncsde.tasks import masked_problem, wide_problem  # noqa: E402
from syncsde.tasks.regions import (  # noqa: E402
    Layout, Region, RegionCorrelation, load_layout, parse_layout, region_weights, regions_image,
    regions_problem)

STEPS = 3


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tm.sd_pipeline(tmp_path_factory.mktemp("reg") / "sd")


# ---- layouts --------------------------------------------------------------------------------
GOOD = {"width": 64, "height": 32, "background": "a beach",
        "regions": [{"prompt": "a red car", "box": [0, 0, 24, 32], "weight": 2.0},
                    {"prompt": "a tree", "mask": "m.png"}],
        "feather": 1.5, "gaussian": True, "bootstrap": 0.25, "window": 32, "stride": 16}


def test_layout_json_and_toml_read_the_same(tmp_path):
    (tmp_path / "l.json").write_text(json.dumps(GOOD))
    (tmp_path / "l.toml").write_text(
        'width = 64\nheight = 32\nbackground = "a beach"\nfeather = 1.5\ngaussian = true\n'
        'bootstrap = 0.25\nwindow = 32\nstride = 16\n'
        '[[regions]]\nprompt = "a red car"\nbox = [0, 0, 24, 32]\nweight = 2.0\n'
        '[[regions]]\nprompt = "a tree"\nmask = "m.png"\n')
    a, b = load_layout(tmp_path / "l.json"), load_layout(tmp_path / "l.toml")
    assert a == b
    assert a.regions[0].box == (0, 0, 24, 32) and a.regions[0].weight == 2.0
    assert a.regions[1].mask == "m.png" and a.base_dir == str(tmp_path)


@pytest.mark.parametrize("change, field", [
    ({"width": 0}, "'width'"), ({"height": 2.5}, "'height'"), ({"background": ""}, "'background'"),
    ({"regions": {}}, "'regions'"), ({"colour": 1}, "colour"), ({"gaussian": "yes"}, "'gaussian'"),
    ({"bootstrap": 1.5}, "'bootstrap'"), ({"feather": float("nan")}, "'feather'"),
    ({"regions": [{"prompt": "a", "box": [0, 0, 65, 10]}]}, "'regions[0].box'"),
    ({"regions": [{"prompt": "a", "box": [0, 0, 10]}]}, "'regions[0].box'"),
    ({"regions": [{"prompt": "a"}]}, "'regions[0]' needs exactly one"),
    ({"regions": [{"prompt": "a", "box": [0, 0, 5, 5], "mask": "m.png"}]}, "'regions[0]' needs"),
    ({"regions": [{"prompt": "a", "box": [0, 0, 5, 5], "weight": 0}]}, "'regions[0].weight'"),
    ({"regions": [{"box": [0, 0, 5, 5]}]}, "'regions[0].prompt'"),
    ({"regions": [{"prompt": "a", "box": [0, 0, 5, 5], "size": 3}]}, "regions[0]"),
])
def test_bad_layouts_name_the_field(change, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_layout({**GOOD, **change})


def test_layout_file_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_layout(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{width: 3")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_layout(tmp_path / "bad.json")
    (tmp_path / "l.yaml").write_text("width: 3")
    with pytest.raises(ValueError, match=".json or .toml"):
        load_layout(tmp_path / "l.yaml")


# ---- weights and correlation against slow references ----------------------------------------
def test_region_weights_partition_of_unity():
    rng = np.random.default_rng(0)
    B = [rng.uniform(0, 1, (5, 6)) * (rng.uniform(size=(5, 6)) > 0.3) for _ in range(3)]
    w = [1.0, 2.5, 0.5]
    a0, shares = region_weights([torch.tensor(b, dtype=torch.float32) for b in B], w)
    for y in range(5):
        for x in range(6):
            tot = sum(b[y, x] for b in B)
            wsum = sum(wk * b[y, x] for wk, b in zip(w, B))
            assert abs(float(a0[y, x]) - max(0.0, 1 - tot)) < 1e-6
            for k in range(3):
                want = 0.0 if wsum == 0 else w[k] * B[k][y, x] / wsum * min(1.0, tot)
                assert abs(float(shares[k][y, x]) - want) < 1e-6
            assert abs(float(a0[y, x] + sum(s[y, x] for s in shares)) - 1) < 1e-5


def _slow_reference(y, offsets, size, H, W, L, nw, sources):
    """Per view and pixel: the weighted mean of the layer sources (same window) and of the
    on-top composite of the earlier windows of the layer on their overlap; mask = min(1, sum)."""
    h, w = size
    N = L * nw
    ref = y.clone()
    mask = torch.zeros(N, 1, h, w)
    for l in range(L):
        for wi in range(nw):
            i = l * nw + wi
            t0, l0 = offsets[wi]
            for py in range(h):
                for px in range(w):
                    cy, cx = t0 + py, l0 + px
                    num = torch.zeros(y.shape[1])
                    den = 0.0
                    for j, amap in sources.get(l, []):
                        a = float(amap[cy, cx])
                        num += a * y[j * nw + wi, :, py, px]
                        den += a
                    last = None  # the latest earlier window of this layer covering (cy, cx)
                    for v in range(wi):
                        tv, lv = offsets[v]
                        if tv <= cy < tv + h and lv <= cx < lv + w:
                            last = v
                    if last is not None:
                        tv, lv = offsets[last]
                        num += y[l * nw + last, :, cy - tv, cx - lv]
                        den += 1.0
                    mask[i, 0, py, px] = min(1.0, den)
                    if den > 0:
                        ref[i, :, py, px] = num / den
    return ref, mask


def test_region_correlation_matches_slow_reference():
    torch.manual_seed(0)
    C, H, W = 2, 6, 10
    B = [torch.zeros(H, W), torch.zeros(H, W)]
    B[0][:, :4] = 1
    B[1][1:5, 3:8] = 0.6
    p = regions_problem((C, H, W), [Region(B[0], "a", 1.0), Region(B[1], "b", 3.0)], "bg",
                        window=(6, 6), stride=(3, 2))
    info = p.region_info
    assert info["layers"] == 4 and info["windows"] == 3
    corr = p.correlation
    assert isinstance(corr, RegionCorrelation)
    y = torch.randn(p.views.num_views, C, 6, 6)
    offs = p.views.offsets[:info["windows"]].tolist()
    ref, mask = _slow_reference(y, offs, (6, 6), H, W, 4, 3, corr.sources)
    torch.testing.assert_close(corr.references(y, p.views), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(corr.masks(p.views, y), mask, atol=1e-6, rtol=0)
    # the canonical weights: MultiDiffusion's region rule, cropped per window
    a_bg = (1 - B[0] - B[1]).clamp(0, 1)
    for wi, (t0, l0) in enumerate(offs):
        for l, a in enumerate([a_bg, 1.0 * B[0], 3.0 * B[1], torch.zeros(H, W)]):
            torch.testing.assert_close(p.weights[l * 3 + wi, 0], a[t0:t0 + 6, l0:l0 + 6])


def test_regions_problem_bad_input():
    m = torch.ones(4, 4)
    with pytest.raises(ValueError, match=r"regions\[0\].mask has shape"):
        regions_problem((1, 4, 5), [Region(m, "a")], "bg")
    with pytest.raises(ValueError, match=r"regions\[0\].weight"):
        regions_problem((1, 4, 4), [Region(m, "a", -1.0)], "bg")
    with pytest.raises(ValueError, match=r"regions\[0\].mask selects no pixel"):
        regions_problem((1, 4, 4), [Region(m * 0, "a")], "bg")
    with pytest.raises(ValueError, match="feather"):
        regions_problem((1, 4, 4), [Region(m, "a")], "bg", feather=-1)


# ---- parity on tiny SD ----------------------------------------------------------------------
def test_one_window_one_region_is_the_mask_task(sd):
    den = denoiser_from_pipeline(sd)
    m = torch.zeros(16, 16)
    m[4:12, 2:10] = 1
    p = regions_problem((4, 16, 16), [Region(m, "a red car")], "a beach", combined="a red car on a beach",
                        init="independent")
    q = masked_problem((4, 16, 16), m, "a beach", "a red car", "a red car on a beach")
    kw = dict(schedule=den.schedule(STEPS), guidance_scale=7.5, seed=5, progress=False)
    for strat in ("syncsde", "multidiffusion"):
        a = sample(p, den, strat, **kw)
        b = sample(q, den, strat, **kw)
        torch.testing.assert_close(a.canvas if strat == "syncsde" else a.output,
                                   b.output if strat == "syncsde" else b.canvas, atol=1e-5, rtol=0)


def test_no_region_over_windows_is_the_wide_task(sd):
    den = denoiser_from_pipeline(sd)
    p = regions_problem((4, 16, 40), [], "a beach", window=16, stride=8)
    q = wide_problem((4, 16, 40), 16, 8, cond="a beach")
    kw = dict(schedule=den.schedule(STEPS), guidance_scale=7.5, seed=2, progress=False)
    for strat in ("syncsde", "multidiffusion"):
        torch.testing.assert_close(sample(p, den, strat, **kw).output,
                                   sample(q, den, strat, **kw).output, atol=1e-5, rtol=0)


def test_one_full_region_multidiffusion_is_the_plain_pipeline(sd):
    lay = Layout(32, 32, "a beach", regions=[parse_layout(
        {"width": 32, "height": 32, "background": "x",
         "regions": [{"prompt": "a red car", "box": [0, 0, 32, 32]}]}).regions[0]])
    res = regions_image(sd, lay, strategy="multidiffusion", num_inference_steps=STEPS,
                        guidance_scale=7.5, seed=4, progress=False)
    noise = torch.randn((4, 16, 16), generator=torch.Generator().manual_seed(4))
    ref = sd("a red car", height=32, width=32, num_inference_steps=STEPS, guidance_scale=7.5,
             latents=noise.clone()[None], output_type="latent").images[0]
    torch.testing.assert_close(res.latents, ref, atol=1e-4, rtol=0)
    assert res.images[0].size == (32, 32)


@pytest.mark.parametrize("strategy, extra", [
    ("syncsde", {}), ("multidiffusion", {"gaussian": True, "feather": 1.0}),
    ("multidiffusion", {"bootstrap": 0.5}), ("synctweedies", {}), ("independent", {})])
def test_regions_image_runs_on_a_wide_canvas(sd, tmp_path, strategy, extra):
    from PIL import Image

    mask = np.zeros((32, 80), np.uint8)
    mask[8:24, 40:72] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    (tmp_path / "l.json").write_text(json.dumps({
        "width": 80, "height": 32, "background": "a beach", "prompt": "a car and a tree on a beach",
        "regions": [{"prompt": "a red car", "box": [0, 4, 30, 30], "weight": 2.0},
                    {"prompt": "a tree", "mask": "m.png"}], **extra}))
    res = regions_image(sd, tmp_path / "l.json", strategy=strategy, num_inference_steps=2,
                        seed=1, progress=False)
    assert res.images[0].size == (80, 32) and torch.isfinite(res.latents).all()
    s = res.settings
    assert s["windows"] == 4 and s["layers"] == (4 if strategy == "syncsde" else 3)
    assert float(res.extras["masks"][1].sum()) == 8 * 16  # nearest-resized mask file


def test_bootstrap_replaces_region_views_outside_their_region_only(sd):
    """The model inputs of region views equal the background views' inside the region (one
    canvas) and differ outside it while bootstrapping, then agree everywhere."""
    den = denoiser_from_pipeline(sd)
    seen = []
    inner = den.__call__

    class Recorder:
        def __getattr__(self, k):
            return getattr(den, k)

        def __call__(self, x, t, cond):
            seen.append(x.clone())
            return inner(x, t, cond)

    lay = {"width": 32, "height": 32, "background": "a beach", "bootstrap": 0.5,
           "regions": [{"prompt": "a red car", "box": [0, 0, 16, 32]}]}
    regions_image(Recorder(), lay, strategy="multidiffusion", num_inference_steps=4,
                  guidance_scale=1.0, progress=False)
    assert len(seen) == 4
    for k, x in enumerate(seen):  # views: [background, region]; region = left half (8 latents)
        inside = torch.equal(x[0][..., :8], x[1][..., :8])
        outside = torch.equal(x[0][..., 8:], x[1][..., 8:])
        assert inside
        assert outside == (k == 0 or k >= 2), k  # bootstrapped inputs at calls 1 .. steps-1


def test_regions_refuses_collage_and_control_without_controlnet(sd):
    lay = {"width": 32, "height": 32, "background": "a beach"}
    with pytest.raises(ValueError, match="collage"):
        regions_image(sd, lay, strategy="collage", num_inference_steps=1, progress=False)
    with pytest.raises(ValueError, match="ControlNet"):
        regions_image(sd, lay, control_image=torch.zeros(3, 32, 32), num_inference_steps=1,
                      progress=False)
    with pytest.raises(ValueError, match="multiples of 2"):
        regions_image(sd, {**lay, "width": 33}, num_inference_steps=1, progress=False)


def test_cli_regions_bad_layout_fails_before_loading(tmp_path, capsys):
    from syncsde.cli import main

    (tmp_path / "l.json").write_text(json.dumps({**GOOD, "regions": [{"prompt": "a", "box": [0, 0, 99, 5]}]}))
    assert main(["regions", str(tmp_path / "l.json"), "--model", str(tmp_path / "no-model")]) == 2
    assert "'regions[0].box'" in capsys.readouterr().err


def test_gaussian_window_weights_and_feathering_match_numpy():
    import math

    C, H, W = 1, 8, 20
    m = torch.zeros(H, W)
    m[2:6, 3:11] = 1
    p = regions_problem((C, H, W), [Region(m, "a", 2.0)], "bg", window=8, stride=6, gaussian=True)
    offs = p.views.offsets[:p.region_info["windows"]].tolist()

    def axis(n):
        return np.array([math.exp(-((x - (n - 1) / 2) / n) ** 2 / 0.02) / math.sqrt(2 * math.pi * 0.01)
                         for x in range(n)])
    g = np.outer(axis(8), axis(8))
    for wi, (t0, l0) in enumerate(offs):
        bg = np.clip(1 - m.numpy(), 0, 1)[t0:t0 + 8, l0:l0 + 8]
        np.testing.assert_allclose(p.weights[wi, 0].numpy(), bg * g, rtol=1e-5)
        np.testing.assert_allclose(p.weights[len(offs) + wi, 0].numpy(),
                                   2.0 * m.numpy()[t0:t0 + 8, l0:l0 + 8] * g, rtol=1e-5)
    # feathering: the mask blurred by a normalised Gaussian (radius ceil(3 sigma), edges replicated)
    sigma = 1.3
    q = regions_problem((C, H, W), [Region(m, "a")], "bg", feather=sigma)
    r = math.ceil(3 * sigma)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    a = m.numpy().astype(np.float64)
    want = np.zeros_like(a)
    for y in range(H):
        for x in range(W):
            want[y, x] = sum(k[i] * k[j] * a[min(max(y + i - r, 0), H - 1), min(max(x + j - r, 0), W - 1)]
                             for i in range(2 * r + 1) for j in range(2 * r + 1))
    np.testing.assert_allclose(q.region_info["masks"][0].numpy(), want, atol=1e-5)


def test_benchmark_script_smoke(tmp_path):
    """benchmarks/regions.py end to end on the scenes model (1 layout, 1 seed, 1 image, 4 steps, the first two rows)."""
    from benchmark_scripts import load_benchmark

    mod = load_benchmark("regions")
    assert mod.main(["all", "--quick", "--layouts", "1", "--images", "1", "--steps", "4",
                     "--rows", "2", "--out", str(tmp_path)]) == 0
    reg = json.loads((tmp_path / "regions_benchmark.json").read_text())
    assert [r["label"] for r in reg["rows"]] == [r[0] for r in mod.REGION_STRATEGIES[:2]]
    assert all(0 <= r["acc_mean"] <= 1 and r["region_seam_ratio"] > 0 for r in reg["rows"])
    up = json.loads((tmp_path / "upscale_benchmark.json").read_text())
    assert [r["label"] for r in up["rows"][1:]] == [r[0] for r in mod.UPSCALE_METHODS[:2]]
    assert (tmp_path / "regions_layout0.png").is_file() and (tmp_path / "upscale_example0.png").is_file()
