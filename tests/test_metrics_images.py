"""Image metrics against slow, obviously-correct references (NumPy / pure Python / colorsys)."""
import colorsys
import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn as nn

from syncsde.metrics import coherence
from syncsde.metrics import fid_kid as fidmod
from syncsde.metrics.clip_score import ScenesPromptEmbedder, clip_score, clip_score_x100
from syncsde.metrics.features import VGGFeatureNet, WeightsNotFoundError, load_feature_net
from syncsde.metrics.perceptual import gram, lpips, style_loss


class ToyNet:
    """Two random conv layers as a feature network (fixed seed)."""

    name = "toy"

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.c1 = nn.Conv2d(3, 5, 3, padding=1)
        self.c2 = nn.Conv2d(5, 4, 3, stride=2, padding=1)
        with torch.no_grad():
            for m in (self.c1, self.c2):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))

    @torch.no_grad()
    def feature_maps(self, x):
        a = torch.tanh(self.c1(x))
        return [a, torch.tanh(self.c2(a))]

    def features(self, x):
        return self.feature_maps(x)[-1].mean((2, 3))


# ---- FID / KID ----------------------------------------------------------------------------
def test_fid_of_gaussians_through_identity_features_is_the_closed_form():
    rng = np.random.default_rng(1)
    n = 200_000
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 0.0, -1.0])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 1.0])
    a = mu1 + rng.standard_normal((n, 3)) * np.sqrt(s1)
    b = mu2 + rng.standard_normal((n, 3)) * np.sqrt(s2)
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    got = fidmod.fid(a, b)  # identity feature map: the samples are the features
    assert abs(got - closed) < 0.02 * closed, (got, closed)


def test_fid_matches_scipy_sqrtm_formula_on_sample_moments():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((500, 4)) @ rng.standard_normal((4, 4))
    b = rng.standard_normal((300, 4)) @ rng.standard_normal((4, 4)) + 1.0
    m1, m2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    assert fidmod.fid(a, b) == pytest.approx(ref, rel=1e-8)


def _mmd2_slow(x, y):
    d = len(x[0])

    def k(u, v):
        return (sum(p * q for p, q in zip(u, v)) / d + 1.0) ** 3

    m = len(x)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return sxx + syy - 2 * sxy


def test_kid_matches_pure_python_mmd():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((12, 5)), rng.standard_normal((12, 5)) + 0.3
    mean, std = fidmod.kid(a, b, subsets=1, subset_size=12)
    assert mean == pytest.approx(_mmd2_slow(a.tolist(), b.tolist()), rel=1e-10)
    assert std == 0.0


def test_kid_is_unbiased_for_identical_laws():
    rng = np.random.default_rng(4)
    vals, biased = [], []
    for _ in range(400):
        x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 4))
        vals.append(fidmod.mmd2_unbiased(x, y))
        k = fidmod.polynomial_kernel
        biased.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    se = np.std(vals) / math.sqrt(len(vals))
    assert abs(np.mean(vals)) < 4 * se
    assert np.mean(biased) > 4 * np.std(biased) / math.sqrt(len(biased))  # the test has power


def test_fid_kid_bad_input():
    with pytest.raises(ValueError, match="feats_a"):
        fidmod.fid(np.zeros(5), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="dimensions differ"):
        fidmod.kid(np.zeros((5, 3)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        fidmod.fid(np.zeros((1, 2)), np.zeros((5, 2)))


# ---- LPIPS / style ------------------------------------------------------------------------
def _lpips_slow(a, b, net, heads=None, weight=None):
    out = []
    for n in range(a.shape[0]):
        total = 0.0
        for l, (p, q) in enumerate(zip(net.feature_maps(a[n:n + 1]), net.feature_maps(b[n:n + 1]))):
            p, q = p[0].double().numpy(), q[0].double().numpy()
            C, h, w = p.shape
            if weight is not None:
                wm = weight.double().numpy()
                H, W = wm.shape
                wl = wm.reshape(h, H // h, w, W // w).mean((1, 3))
            num = den = 0.0
            for y in range(h):
                for x in range(w):
                    pn = p[:, y, x] / (np.sqrt((p[:, y, x] ** 2).sum()) + 1e-10)
                    qn = q[:, y, x] / (np.sqrt((q[:, y, x] ** 2).sum()) + 1e-10)
                    hw = np.ones(C) if heads is None else heads[l].numpy()
                    v = (hw * (pn - qn) ** 2).sum()
                    ww = 1.0 if weight is None else wl[y, x]
                    num += ww * v
                    den += ww
            total += num / den
        out.append(total)
    return np.array(out)


def test_lpips_matches_slow_reference_with_heads_and_mask():
    net = ToyNet()
    g = torch.Generator().manual_seed(5)
    a, b = torch.rand(2, 3, 8, 12, generator=g), torch.rand(2, 3, 8, 12, generator=g)
    heads = [torch.rand(5, generator=g), torch.rand(4, generator=g)]
    mask = (torch.rand(8, 12, generator=g) > 0.4).float()
    np.testing.assert_allclose(lpips(a, b, net).numpy(), _lpips_slow(a, b, net), rtol=1e-5)
    np.testing.assert_allclose(lpips(a, b, net, heads, weight=mask).numpy(),
                               _lpips_slow(a, b, net, heads, mask), rtol=1e-5)
    assert lpips(a, a, net).abs().max() == 0


def test_style_loss_matches_numpy_gram():
    net = ToyNet()
    g = torch.Generator().manual_seed(6)
    a, b = torch.rand(1, 3, 8, 8, generator=g), torch.rand(1, 3, 8, 8, generator=g)
    ref = 0.0
    for p, q in zip(net.feature_maps(a), net.feature_maps(b)):
        P, Q = p[0].double().numpy(), q[0].double().numpy()
        C, h, w = P.shape
        gp = P.reshape(C, -1) @ P.reshape(C, -1).T / (C * h * w)
        gq = Q.reshape(C, -1) @ Q.reshape(C, -1).T / (C * h * w)
        ref += ((gp - gq) ** 2).mean()
    assert style_loss(a, b, net).item() == pytest.approx(ref, rel=1e-5)
    assert gram(torch.ones(1, 2, 2, 2))[0].tolist() == [[0.5, 0.5], [0.5, 0.5]]


# ---- coherence ----------------------------------------------------------------------------
def test_identical_crops_give_zero_intra_scores_and_unit_intersection():
    net = ToyNet()
    tile = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(7))
    img = tile.repeat(1, 1, 4)   # 4 identical crops
    assert coherence.intra_lpips([img], net) == 0.0
    s = coherence.intra_style([img], net)
    assert s == {"sum": 0.0, "mean": 0.0}
    h = coherence.hsv_coherence([img])
    assert h["intersection"] == pytest.approx(1.0, abs=1e-12)
    assert h["distance"] == 0.0


def test_intra_scores_reduce_over_pairs_as_documented():
    net = ToyNet()
    img = torch.rand(3, 8, 48, generator=torch.Generator().manual_seed(8))  # 6 crops, 15 pairs
    c = coherence.crops(img)
    pairs = list(itertools.combinations(range(6), 2))
    assert len(pairs) == 15
    st = [style_loss(c[i:i + 1], c[j:j + 1], net).item() for i, j in pairs]
    lp = [lpips(c[i:i + 1], c[j:j + 1], net).item() for i, j in pairs]
    s = coherence.intra_style([img], net)
    assert s["sum"] == pytest.approx(sum(st), rel=1e-5)
    assert s["mean"] == pytest.approx(sum(st) / 15, rel=1e-5)
    assert coherence.intra_lpips([img], net) == pytest.approx(sum(lp) / 15, rel=1e-5)


def test_rgb_to_hsv_matches_colorsys():
    x = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(9))
    x[:, 0, 0] = torch.tensor([0.2, 0.2, 0.2])   # grey: hue 0
    x[:, 0, 1] = 0.0                               # black
    hsv = coherence.rgb_to_hsv(x.double())
    for i in range(5):
        for j in range(7):
            ref = colorsys.rgb_to_hsv(*[float(v) for v in x[:, i, j]])
            np.testing.assert_allclose(hsv[:, i, j].numpy(), ref, atol=1e-9)


def test_hsv_histogram_scores_match_numpy():
    g = torch.Generator().manual_seed(10)
    a, b = torch.rand(1, 3, 6, 6, generator=g), torch.rand(1, 3, 6, 6, generator=g) ** 2
    img = torch.cat([a[0], b[0]], -1)
    ha, hb = [], []
    for t, out in ((a, ha), (b, hb)):
        for ch in range(3):
            vals = [colorsys.rgb_to_hsv(*[float(v) for v in t[0, :, i, j]])[ch]
                    for i in range(6) for j in range(6)]
            out.append(np.bincount(np.minimum((np.array(vals) * 8).astype(int), 7), minlength=8) / 36)
    inter = np.mean([np.minimum(p, q).sum() for p, q in zip(ha, hb)])
    chi = sum(((p - q) ** 2 / np.where(p + q > 0, p + q, 1)).sum() for p, q in zip(ha, hb))
    got = coherence.hsv_coherence([img], bins=8)
    assert got["intersection"] == pytest.approx(inter, rel=1e-9)
    assert got["distance"] == pytest.approx(chi, rel=1e-9)


def test_window_seams_and_seam_jump():
    assert coherence.window_seams(16, 8, 4) == [4, 8, 12]
    assert coherence.window_seams(10, 8, 4) == [2, 8]        # last window flush right: 0..8, 2..10
    x = torch.rand(2, 3, 4, 10, generator=torch.Generator().manual_seed(11))
    got = coherence.seam_jump(list(x), [2, 8])
    d = np.abs(np.diff(x.double().numpy(), axis=-1))
    jump = np.mean([d[..., c - 1] for c in (2, 8)])
    other = np.mean([d[..., c - 1] for c in range(1, 10) if c not in (2, 8)])
    assert got["jump"] == pytest.approx(jump)
    assert got["ratio"] == pytest.approx(jump / other)
    with pytest.raises(ValueError, match="seams"):
        coherence.seam_jump(list(x), [10])


# ---- CLIP-S ---------------------------------------------------------------------------------
def test_clip_score_scales():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(clip_score(a, b).numpy(), [1.0, 1 / math.sqrt(2), -1.0], rtol=1e-6)
    np.testing.assert_allclose(clip_score_x100(a, b).numpy(), [100.0, 100 / math.sqrt(2), 0.0], rtol=1e-6)
    with pytest.raises(ValueError, match="zero"):
        clip_score(torch.zeros(1, 2), torch.ones(1, 2))


def test_scenes_prompt_embedding_and_generator_agreement():
    from syncsde.scenes.evaluate import generator_images

    emb = ScenesPromptEmbedder()
    t = emb.embed_texts(["a sunset over the sea with mountains"])[0].tolist()
    assert t == [0, 1, 0, 0, 1, 0, 0, 0, 0, 1]
    t = emb.embed_texts(["a sea"])[0]
    assert t[:3].tolist() == pytest.approx([1 / 3] * 3)
    prompts = ["a sunset over the sea with mountains", "a snowy night with a moon"] * 4
    imgs = generator_images(prompts, seed=3)
    right = clip_score(emb.embed_images(imgs), emb.embed_texts(prompts)).mean()
    wrong = clip_score(emb.embed_images(imgs), emb.embed_texts(prompts[1:] + prompts[:1])).mean()
    assert right > 0.8 and right > wrong + 0.3


# ---- feature nets -------------------------------------------------------------------------
def test_missing_weights_file_is_one_clear_error(tmp_path):
    p = tmp_path / "vgg16.safetensors"
    with pytest.raises(WeightsNotFoundError, match="vgg16-397923af.pth") as e:
        load_feature_net({"net": "vgg16", "weights": str(p)})
    assert str(p) in str(e.value)
    with pytest.raises(WeightsNotFoundError, match="none given"):
        VGGFeatureNet("vgg19", None, "style")


def test_vgg_from_safetensors_with_torchvision_names(tmp_path):
    from safetensors.torch import save_file

    from syncsde.metrics.features import _vgg_layers

    body = _vgg_layers("vgg16")
    state = {f"features.{k}": v for k, v in body.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    save_file(state, str(tmp_path / "v.safetensors"))
    net = VGGFeatureNet("vgg16", tmp_path / "v.safetensors", "lpips")
    maps = net.feature_maps(torch.rand(1, 3, 32, 32))
    assert [m.shape[1] for m in maps] == [64, 128, 256, 512, 512]
    assert [m.shape[-1] for m in maps] == [32, 16, 8, 4, 2]
    st = VGGFeatureNet("vgg16", tmp_path / "v.safetensors", "style")
    assert [m.shape[1] for m in st.feature_maps(torch.rand(1, 3, 16, 16))] == [64, 64, 128, 128, 256]
    with pytest.raises(ValueError, match="does not fit vgg19"):
        VGGFeatureNet("vgg19", tmp_path / "v.safetensors")


def test_images_outside_unit_range_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lpips(torch.full((1, 3, 8, 8), 2.0), torch.zeros(1, 3, 8, 8), ToyNet())
