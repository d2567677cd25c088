"""The composed denoising loss (syncsde/scenes/composed_loss.py) against a slow reference that
slices the windows and overlaps by hand."""
import numpy as np
import pytest
import torch

from syncsde.scenes.composed_loss import composed_denoising_loss, encode_prompts
from syncsde.scenes.generator import render, scene_rng
from syncsde.scenes.model import load_scenes_pipeline
from syncsde.scenes.vocab import parse_prompt

PROMPT = "a day over the grass with hills"


@pytest.fixture(scope="module")
def pipe():
    return load_scenes_pipeline()


@torch.no_grad()
def reference(pipe, width, window, stride, n, seed, timesteps):
    """Windows at 0, stride, ...; the overlap of consecutive windows gets -1 (a 1-D chain)."""
    emb = encode_prompts(pipe, [PROMPT])
    abar = pipe.scheduler.alphas_cumprod.float()
    lefts = list(range(0, width - window + 1, stride))
    out = {"multidiffusion": [], "regiongraph": [], "single_window": [], "best_mix": []}
    for j, t in enumerate(timesteps):
        md_l = rg_l = win_l = cr = dd = 0.0
        for i in range(n):
            img = render(parse_prompt(PROMPT).sample_spec(scene_rng(seed, i)), 32, width,
                         scene_rng(seed + 1, i)).image
            x0 = torch.from_numpy(img).permute(2, 0, 1) * 2 - 1
            g = torch.Generator().manual_seed((seed * 1_000_003 + i) * 1009 + t)
            noise = torch.randn(x0.shape, generator=g)
            xt = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * noise

            def eps(x):
                return pipe.unet(x[None], torch.tensor([t]), encoder_hidden_states=emb).sample[0]

            total = torch.zeros_like(x0)
            count = torch.zeros(width)
            wl = 0.0
            for left in lefts:
                e = eps(xt[:, :, left:left + window])
                total[:, :, left:left + window] += e
                count[left:left + window] += 1
                wl += float(((e - noise[:, :, left:left + window]) ** 2).mean())
            md = total / count
            rg = total.clone()
            for a, b in zip(lefts[:-1], lefts[1:]):
                rg[:, :, b:a + window] -= eps(xt[:, :, b:a + window])
            md_l += float(((md - noise) ** 2).mean())
            rg_l += float(((rg - noise) ** 2).mean())
            win_l += wl / len(lefts)
            cr += float(((rg - md) * (noise - md)).sum())
            dd += float(((rg - md) ** 2).sum())
        out["multidiffusion"].append(md_l / n)
        out["regiongraph"].append(rg_l / n)
        out["single_window"].append(win_l / n)
        out["best_mix"].append(cr / dd)
    return out


@pytest.mark.parametrize("width,stride", [(64, 16), (56, 8)])
def test_losses_equal_the_hand_sliced_reference(pipe, width, stride):
    ts = (100, 600)
    got = composed_denoising_loss(pipe, PROMPT, width=width, window=32, stride=stride, n=2,
                                  seed=7, timesteps=ts)
    ref = reference(pipe, width, 32, stride, 2, 7, ts)
    for k in ("multidiffusion", "regiongraph", "single_window", "best_mix"):
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, err_msg=k)
    # the two rules differ on an overlapping canvas (else the comparison would be empty)
    assert abs(got["regiongraph"][0] - got["multidiffusion"][0]) > 1e-4


def test_one_window_canvas_gives_one_loss_for_every_rule(pipe):
    got = composed_denoising_loss(pipe, PROMPT, width=32, window=32, stride=16, n=1, seed=3,
                                  timesteps=(300,))
    assert got["multidiffusion"] == pytest.approx(got["single_window"], rel=1e-6)
    assert got["regiongraph"] == pytest.approx(got["single_window"], rel=1e-6)
    assert got["window"] == 32 and got["width"] == 32
    assert got["best_mix"] == [0.0]


@pytest.mark.parametrize("kw", [{"n": 0}, {"timesteps": (5000,)}, {"timesteps": (1.5,)}])
def test_bad_settings_are_refused(pipe, kw):
    with pytest.raises(ValueError):
        composed_denoising_loss(pipe, PROMPT, **kw)


def test_cli_reports_a_missing_model_in_one_line(tmp_path, capsys):
    from syncsde.scenes.composed_loss import main

    with pytest.raises(SystemExit) as e:
        main(["--model", str(tmp_path / "none"), "--n", "1"])
    assert e.value.code == 2
    assert "model_index.json" in capsys.readouterr().err
