"""Each of the SyncSDE authors' choices, selected by ``authors_compat`` (or its own switch), pinned
on tiny random models against a direct re-computation of what their code does."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import tiny_models as tm  # noqa: E402

from syncsde import pipelines as P  # noqa: E402
from syncsde.checkpoint import CheckpointError  # noqa: E402
from syncsde.editing import (WordMatch, match_source_word, replace_matched_word,  # noqa: E402
                             save_inversion, load_inversion)
from syncsde.models import denoiser_from_pipeline  # noqa: E402
from syncsde.sampler import inversion_steps, invert  # noqa: E402

STEPS = 5


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tm.sd_pipeline(tmp_path_factory.mktemp("sd"), three_levels=True)


@pytest.fixture(scope="module")
def if_pipes():
    return tm.if_pipelines()


def _authors_inversion(pipe, x0, prompt, steps):
    """The authors' inverse scheduler, written out: sampling timesteps reversed, first and last
    dropped; UNet at t; x moves from abar[t-1] to abar[t + 1000/steps - 1]."""
    from diffusers import DDIMScheduler

    sch = DDIMScheduler.from_config(pipe.scheduler.config)
    sch.set_timesteps(steps)
    abar = sch.alphas_cumprod
    d = 1000 // steps
    emb, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
    x = x0.clone()
    with torch.no_grad():
        for t in list(reversed(sch.timesteps.tolist()))[1:-1]:
            eps = pipe.unet(x, t, encoder_hidden_states=emb).sample
            a_cur, a_next = abar[t - 1], abar[t + d - 1]
            x = a_next.sqrt() * (x - (1 - a_cur).sqrt() * eps) / a_cur.sqrt() + (1 - a_next).sqrt() * eps
    return x


def test_authors_inversion_index_scheme(sd):
    den = denoiser_from_pipeline(sd)
    sched = den.schedule(STEPS)
    steps = inversion_steps(sched, "authors")
    assert [s[0] for s in steps] == [201, 401, 601]  # 801..1 reversed, ends dropped
    x0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = invert(x0, den, "a photo of a cat", sched, progress=False, scheme="authors")
    ref = _authors_inversion(sd, x0, "a photo of a cat", STEPS)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-5)
    textbook = invert(x0, den, "a photo of a cat", sched, progress=False)
    assert (textbook - ref).abs().max() > 1e-2  # the two schemes really differ
    with pytest.raises(ValueError, match="inversion scheme"):
        inversion_steps(sched, "nope")


def test_edit_with_authors_compat_uses_their_inversion_and_uncapped_pull(sd, tmp_path):
    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    kw = dict(num_inference_steps=STEPS, progress=False, seed=3, mask=np.ones((16, 16)))
    res = P.edit_image(sd, img, "a photo of a cat", "cat", "dog", authors_compat=True, **kw)
    ref = _authors_inversion(sd, res.extras["x0"][None], "a photo of a cat", STEPS)
    torch.testing.assert_close(res.extras["x_T"][None], ref, atol=2e-5, rtol=1e-5)
    assert res.result is not None and res.settings["inversion"] == "authors"
    same = P.edit_image(sd, img, "a photo of a cat", "cat", "dog", inversion="authors",
                        strategy="syncsde", strategy_options={"max_pull": None}, **kw)
    torch.testing.assert_close(res.latents, same.latents, atol=0, rtol=0)
    default = P.edit_image(sd, img, "a photo of a cat", "cat", "dog", **kw)
    assert (default.extras["x_T"] - res.extras["x_T"]).abs().max() > 1e-2
    assert default.settings["strategy"] == "inpaint" and res.settings["strategy"] == "syncsde"


def test_authors_compat_selects_the_uncapped_pull():
    assert P.make_task_strategy("syncsde", 5.0, None, authors_compat=True).max_pull is None
    assert P.make_task_strategy("syncsde", 5.0, None).max_pull is not None
    assert P.make_task_strategy("syncsde", 5.0, {"max_pull": 2.0}, True).max_pull == 2.0


def test_wide_init_and_window_images(sd):
    kw = dict(height=32, width=64, num_inference_steps=3, progress=False, seed=2,
              strategy="syncsde")  # a strategy that keeps the task's init
    can = P.wide_image(sd, "a beach", **kw)
    ind = P.wide_image(sd, "a beach", init="independent", decode_windows=True, **kw)
    n = ind.result.views.shape[0]
    seen = []
    P.wide_image(sd, "a beach", init="independent", callback=lambda k, t, y: seen.append(k),
                 **kw)
    assert seen == [0, 1, 2]
    assert len(ind.extras["window_images"]) == n and ind.extras["window_images"][0].size == (32, 32)
    assert ind.extras["window_tensors"].shape == (n, 3, 32, 32)
    torch.testing.assert_close(ind.extras["window_tensors"],
                               denoiser_from_pipeline(sd).decode(ind.result.views))
    assert (can.latents - ind.latents).abs().max() > 1e-3
    with pytest.raises(ValueError, match="init"):
        P.wide_image(sd, "a beach", init="shared", **kw)


def test_wide_independent_init_draws_one_noise_per_window(sd):
    """The sampler's initial state under init='independent' is one randn per window stack."""
    from syncsde.sampler import initial_state
    from syncsde.tasks import wide_problem

    prob = wide_problem((4, 16, 32), 16, 4, cond="a")
    prob.init = "independent"
    y, canvas = initial_state(prob, None, torch.Generator().manual_seed(5))
    ref = torch.randn((prob.views.num_views, 4, 16, 16), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(y, ref, atol=0, rtol=0)
    assert canvas is None


def test_if_stage2_authors_order_and_scheduler(if_pipes):
    """authors_compat: stage II continues stage I's generator (x_T drawn before the image noise,
    diffusers' IF-II order) and uses stage I's DDIM config: equal to diffusers' own
    IFSuperResolutionPipeline called that way."""
    from diffusers import DDIMScheduler, DDPMScheduler, IFSuperResolutionPipeline

    s1, s2 = if_pipes
    # give stage II a scheduler config of its own, so reusing stage I's is visible
    s2b = IFSuperResolutionPipeline(
        tokenizer=None, text_encoder=None, unet=s2.unet,
        scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                thresholding=False, variance_type="learned_range"),
        image_noising_scheduler=s2.image_noising_scheduler, safety_checker=None,
        feature_extractor=None, watermarker=None, requires_safety_checker=False)
    s2b.set_progress_bar_config(disable=True)
    pa, pb = "an oil painting of a horse", "an oil painting of a village"
    kw = dict(num_inference_steps=3, progress=False, seed=7, strategy="independent")
    res = P.ambiguous_image(s1, pa, pb, "flip", stage2=s2b, authors_compat=True, **kw)
    stage1 = res.extras["stage1"]
    gen = torch.Generator().manual_seed(7)
    torch.randn((2, 3, 16, 16), generator=gen)  # stage I's initial noise
    x = torch.randn((2, 3, 32, 32), generator=gen)  # then x_T, then the image noise
    up = torch.nn.functional.interpolate(stage1.float(), (32, 32), mode="bilinear",
                                         align_corners=True)
    level = torch.tensor([250, 250])
    up = s2b.image_noising_scheduler.add_noise(up, torch.randn(up.shape, generator=gen), level)
    sch = DDIMScheduler.from_config(s1.scheduler.config)  # stage I's config, thresholding on
    sch.set_timesteps(3)
    pe, ne = s1.encode_prompt([pa, pb], True, device="cpu", negative_prompt=None)
    with torch.no_grad():
        for t in sch.timesteps:
            inp = torch.cat([torch.cat([x, up], 1)] * 2)
            out = s2b.unet(inp, t, encoder_hidden_states=torch.cat([ne, pe]),
                           class_labels=torch.cat([level, level])).sample
            u, c = out.chunk(2)
            e = u[:, :3] + 10.0 * (c[:, :3] - u[:, :3])
            x = sch.step(e, t, x).prev_sample
    ours = res.latents  # [2, 3, 32, 32] in [-1, 1]
    torch.testing.assert_close(ours, x.to(ours.dtype), atol=1e-4, rtol=0)
    own = P.ambiguous_image(s1, pa, pb, "flip", stage2=s2b, **kw)
    torch.testing.assert_close(own.extras["stage1"], stage1, atol=0, rtol=0)  # same stage I
    assert (own.latents - ours).abs().max() > 1e-3  # syncsde's own stage-II choices differ


# ---- the editing workflow -------------------------------------------------------------------
def test_source_word_matching_order(sd):
    m = match_source_word("A Cat sitting on a catwalk", "cat")
    assert m == WordMatch("Cat", 2, 5, "exact")
    m = match_source_word("two kittens and a catwalk", "cat")
    assert (m.word, m.how) == ("catwalk", "substring")
    assert replace_matched_word("two kittens and a catwalk", m, "cat", "dog") == \
        "two kittens and a dogwalk"
    with pytest.raises(ValueError, match="does not occur"):
        match_source_word("a photo of a horse", "zebra")
    den = denoiser_from_pipeline(sd)
    m = match_source_word("a photo of a horse", "zebra", den.prompts)
    assert m.how == "embedding"
    # the chosen word is the arg-max of the cosine of mean input token embeddings
    table = den.prompts.text_encoder.get_input_embeddings().weight

    def emb(w):
        ids = den.prompts.tokenizer(w, add_special_tokens=False).input_ids
        return table[ids].mean(0)

    cos = {w: float(torch.nn.functional.cosine_similarity(emb("zebra"), emb(w), dim=0))
           for w in ["a", "photo", "of", "horse"]}
    assert m.word == max(cos, key=cos.get) and abs(m.score - cos[m.word]) < 1e-5


def test_edit_with_a_captioner_and_an_xt_cache(sd, tmp_path):
    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(4))
    calls = []

    def captioner(image):
        calls.append(image.size)
        return "a cat on the grass"

    cache = str(tmp_path / "xt.safetensors")
    kw = dict(num_inference_steps=3, progress=False, seed=0, mask=np.ones((16, 16)),
              captioner=captioner, xt_cache=cache)
    first = P.edit_image(sd, img, None, "cat", "dog", **kw)
    assert calls == [(32, 32)] and first.settings["target_prompt"] == "a dog on the grass"
    assert os.path.exists(cache) and "x0" in first.extras
    second = P.edit_image(sd, img, None, "cat", "dog", **kw)
    assert "x0" not in second.extras  # x_T came from the cache, no encode / inversion
    torch.testing.assert_close(second.latents, first.latents, atol=0, rtol=0)
    other = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(5))
    with pytest.raises(CheckpointError, match="inversion cache.*image"):
        P.edit_image(sd, other, None, "cat", "dog", **kw)
    with pytest.raises(CheckpointError, match="inversion cache.*inversion"):
        P.edit_image(sd, img, None, "cat", "dog", inversion="authors", **kw)


def test_inversion_cache_refuses_another_caption(tmp_path):
    path = tmp_path / "c.safetensors"
    save_inversion(path, torch.ones(4, 2, 2), "a cat", {"model": "m"})
    x, cap = load_inversion(path, {"model": "m"})
    assert cap == "a cat" and x.shape == (4, 2, 2)
    with pytest.raises(CheckpointError, match="caption"):
        load_inversion(path, {"model": "m"}, caption="a dog")
    with pytest.raises(CheckpointError, match="model"):
        load_inversion(path, {"model": "other"})


def test_blip_captioner_on_a_tiny_model(tmp_path):
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration,
                              BlipImageProcessor, BlipProcessor)

    from syncsde.editing import Captioner

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "on", "grass"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizer(str(tmp_path / "vocab.txt"))
    proc = BlipProcessor(BlipImageProcessor(size={"height": 16, "width": 16}), tok)
    torch.manual_seed(0)
    cfg = BlipConfig(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=16, patch_size=8),
        text_config=dict(vocab_size=len(words), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                         bos_token_id=2, sep_token_id=3, pad_token_id=0))
    model = BlipForConditionalGeneration(cfg)
    model.save_pretrained(tmp_path / "blip")
    proc.save_pretrained(tmp_path / "blip")
    cap = Captioner.from_pretrained(str(tmp_path / "blip"), local_files_only=True, max_new_tokens=5)
    text = cap(np.zeros((16, 16, 3), dtype=np.uint8))
    assert isinstance(text, str) and set(text.split()) <= set(words[5:])
    assert cap(np.zeros((16, 16, 3), dtype=np.uint8)) == text  # greedy: deterministic


def test_cli_edits_a_folder_with_a_resumable_manifest(sd, tmp_path, monkeypatch, capsys):
    import json

    from PIL import Image

    from syncsde.cli import main

    model = tmp_path / "model"
    sd.save_pretrained(model)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.png"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / name)
    (images / "notes.txt").write_text("not an image")
    mask = tmp_path / "mask.png"
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(mask)
    out = tmp_path / "out"
    argv = ["edit", "--image", str(images), "--source-prompt", "a photo of a cat",
            "--source-word", "cat", "--target-word", "dog", "--mask", str(mask), "--steps", "2",
            "--model", str(model), "--out", str(out), "--device", "cpu", "--no-progress",
            "--local-files-only"]
    assert main(argv) == 0
    manifest = json.loads((out / "edit_manifest.json").read_text())
    assert sorted(manifest["images"]) == ["a.png", "b.png"]
    assert all(e["status"] == "done" for e in manifest["images"].values())
    for e in manifest["images"].values():
        assert all(os.path.exists(f) for f in e["files"])
    assert sorted(os.listdir(out / "xt")) == ["a.safetensors", "b.safetensors"]
    # an interrupted run: drop one entry; the rerun edits only that image
    del manifest["images"]["b.png"]
    (out / "edit_manifest.json").write_text(json.dumps(manifest))
    done = []
    import syncsde.pipelines as pipelines

    real = pipelines.edit_image

    def counting(pipe, image, *a, **k):
        done.append(os.path.basename(image) if isinstance(image, str) else image)
        return real(pipe, image, *a, **k)

    monkeypatch.setattr(pipelines, "edit_image", counting)
    assert main(argv) == 0
    assert done == ["b.png"]
    capsys.readouterr()
    # another setting into the same folder is refused, in one line
    assert main(argv[:-6] + ["--seed", "1"] + argv[-6:]) == 2
    err = capsys.readouterr().err
    assert "another run" in err and "seed" in err and "Traceback" not in err
