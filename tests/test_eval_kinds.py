"""syncsde eval task kinds beyond wide images: mask-based composition and ambiguous images
(config checks, references per compared prompt, scores recomputed independently from disk)."""
import json

import numpy as np
import pytest
import torch

from syncsde.eval.config import EvalConfigError, config_from_dict, load_config, mask_image
from syncsde.eval.manifest import MANIFEST
from syncsde.eval.runner import run_eval

KINDS = """
name = "kinds"
seed = 3
num_inference_steps = 2
samples_per_prompt = 2
kid_subsets = 5
threads = 1

[strategies.syncsde]
name = "syncsde"
[strategies.ind]
name = "independent"

[[tasks]]
name = "mask"
kind = "mask"
prompts = [
  {{ background = "a day over the sea", object = "a day over the sea with a boat", combined = "a day over the sea with a boat" }},
  "a night over the snow | a night over the snow with a house | a night over the snow with a house",
]
height = 32
mask = [0.5, 0.25, 1.0, 0.75]
reference = {{ source = "{ref}", per_prompt = 2 }}
fid_scope = "{scope}"

[[tasks]]
name = "anagram"
kind = "ambiguous"
prompts = [["a day over the desert", "a night over the sea"]]
height = 32
view = "rot180"
reference = {{ source = "{ref}", per_prompt = 3 }}
fid_scope = "{scope}"
"""


@pytest.fixture(scope="module")
def kinds_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval_kinds")
    cfg = tmp / "kinds.toml"
    cfg.write_text(KINDS.format(ref="generator", scope="pooled"))
    out = tmp / "out"
    res = run_eval(str(cfg), str(out), progress=False)
    entries = [json.loads(ln) for ln in (out / MANIFEST).read_text().splitlines()]
    return cfg, out, res, entries


def test_references_are_drawn_for_the_prompts_images_are_compared_with(kinds_run):
    cfg, out, res, entries = kinds_run
    refs = {(e["task"], e["prompt"]) for e in entries if e["strategy"] == "reference"}
    assert refs == {("mask", "a day over the sea with a boat"),
                    ("mask", "a night over the snow with a house"),
                    ("anagram", "a day over the desert"), ("anagram", "a night over the sea")}
    gens = [e for e in entries if e["strategy"] == "syncsde"]
    assert len(gens) == 2 * 2 + 1 * 2
    assert {e["prompt"] for e in gens if e["task"] == "anagram"} == \
        {"a day over the desert | a night over the sea"}
    for e in entries:
        from PIL import Image

        with Image.open(out / e["file"]) as im:
            assert im.size == (32, 32)
    assert set(res) == {"mask", "anagram"}
    assert (out / "results" / "anagram.md").is_file() and (out / "results" / "mask.csv").is_file()


def _load(out, e):
    from syncsde.eval.generate import load_png

    return load_png(out / e["file"])


def test_ambiguous_scores_recomputed_from_disk(kinds_run):
    """KID/FID pool the image against prompt a's references and its 180-degree rotation against
    prompt b's; CLIP-S averages the two readings (rotation done here with torch.rot90)."""
    from syncsde.metrics.clip_score import ScenesPromptEmbedder, clip_score
    from syncsde.metrics.features import ScenesFeatureNet
    from syncsde.metrics.fid_kid import fid

    cfg, out, res, entries = kinds_run
    net = ScenesFeatureNet()
    a, b = "a day over the desert", "a night over the sea"
    mine = [e for e in entries if e["task"] == "anagram"]
    gen = [_load(out, e) for e in mine if e["strategy"] == "ind"]
    both = gen + [torch.rot90(g, 2, dims=(1, 2)) for g in gen]
    refs = [_load(out, e) for e in mine if e["strategy"] == "reference" and e["prompt"] == a] + \
           [_load(out, e) for e in mine if e["strategy"] == "reference" and e["prompt"] == b]
    want = fid(net.features(torch.stack(both)).numpy(), net.features(torch.stack(refs)).numpy())
    row = next(r for r in res["anagram"] if r["strategy"] == "ind")
    assert row["FID"] == pytest.approx(want, rel=1e-6)
    emb = ScenesPromptEmbedder(net)
    cos = [(clip_score(emb.embed_images(g[None]), emb.embed_texts([a])).mean()
            + clip_score(emb.embed_images(torch.rot90(g, 2, dims=(1, 2))[None]),
                         emb.embed_texts([b])).mean()) / 2 for g in gen]
    assert row["CLIP-S (cos)"] == pytest.approx(float(torch.stack(cos).mean()), rel=1e-5)


def test_mask_scores_whole_images_against_the_combined_prompt(kinds_run):
    from syncsde.metrics.features import ScenesFeatureNet
    from syncsde.metrics.fid_kid import fid

    cfg, out, res, entries = kinds_run
    net = ScenesFeatureNet()
    mine = [e for e in entries if e["task"] == "mask"]
    gen = torch.stack([_load(out, e) for e in mine if e["strategy"] == "syncsde"])
    ref = torch.stack([_load(out, e) for e in mine if e["strategy"] == "reference"])
    row = next(r for r in res["mask"] if r["strategy"] == "syncsde")
    assert row["FID"] == pytest.approx(fid(net.features(gen).numpy(), net.features(ref).numpy()),
                                       rel=1e-6)
    assert set(row) >= {"KID x1e3", "CLIP-S (cos)", "prompt agreement"}
    assert "Intra-LPIPS" not in row


def test_mask_image_is_the_box():
    m = mask_image([0.5, 0.25, 1.0, 0.75], 8, 8)
    want = np.zeros((8, 8), np.float32)
    want[4:8, 2:6] = 1
    assert np.array_equal(m, want)


def test_mask_images_follow_the_mask_generation_call(kinds_run):
    """The stored image is the combined trajectory of mask_generation with the item's seed and
    the box mask (a second, direct call)."""
    from syncsde.models import load_pipeline
    from syncsde.pipelines import mask_generation

    cfg, out, res, entries = kinds_run
    e = next(x for x in entries if x["task"] == "mask" and x["strategy"] == "syncsde"
             and x["prompt_index"] == 1)
    m = np.zeros((32, 32), np.float32)
    m[16:32, 8:24] = 1
    torch.set_num_threads(1)
    r = mask_generation(load_pipeline("scenes"), m, "a night over the snow",
                        "a night over the snow with a house", "a night over the snow with a house",
                        height=32, width=32, strategy="syncsde", num_inference_steps=2,
                        guidance_scale=3.0, seed=e["seed"], progress=False)
    img = (r.tensors[0].clamp(0, 1) * 255).round() / 255
    assert torch.allclose(_load(out, e), img, atol=1 / 255 + 1e-6)


def test_per_prompt_scope_groups_each_entry_with_its_references(kinds_run, tmp_path):
    import shutil

    from syncsde.metrics.features import ScenesFeatureNet
    from syncsde.metrics.fid_kid import fid

    cfg, out, _, entries = kinds_run
    out2 = tmp_path / "out"
    shutil.copytree(out, out2)
    per = tmp_path / "per.toml"
    per.write_text(KINDS.format(ref="generator", scope="per_prompt"))
    made = []
    res = run_eval(str(per), str(out2), progress=False, after_item=made.append)
    assert made == []
    net = ScenesFeatureNet()
    fids = []
    for p, combined in enumerate(["a day over the sea with a boat",
                                  "a night over the snow with a house"]):
        gen = [_load(out, e) for e in entries if e["task"] == "mask" and e["strategy"] == "ind"
               and e["prompt_index"] == p]
        ref = [_load(out, e) for e in entries if e["task"] == "mask"
               and e["strategy"] == "reference" and e["prompt"] == combined]
        fids.append(fid(net.features(torch.stack(gen)).numpy(), net.features(torch.stack(ref)).numpy()))
    row = next(r for r in res["mask"] if r["strategy"] == "ind")
    assert row["FID"] == pytest.approx(np.mean(fids), rel=1e-6)


BASE = {"strategies": {"s": {"name": "syncsde"}}}


@pytest.mark.parametrize("task, key", [
    ({"kind": "mask", "prompts": ["a | b | c"]}, "tasks[0].mask"),
    ({"kind": "mask", "prompts": ["a | b"], "mask": [0, 0, 1, 1]}, "tasks[0].prompts[0]"),
    ({"kind": "mask", "prompts": [{"background": "a", "object": "b"}], "mask": [0, 0, 1, 1]},
     "tasks[0].prompts[0]"),
    ({"kind": "mask", "prompts": ["a | b | c"], "mask": [0.5, 0, 0.2, 1]}, "tasks[0].mask"),
    ({"kind": "mask", "prompts": ["a | b | c"], "mask": "nowhere.png"}, "tasks[0].mask"),
    ({"kind": "mask", "prompts": ["a | b | c"], "mask": [[0, 0, 1, 1]] * 2}, "tasks[0].mask"),
    ({"kind": "mask", "prompts": ["a | b | c"], "mask": [0, 0, 1, 1], "window": 8},
     "tasks[0].window"),
    ({"kind": "mask", "prompts": ["a | b | c"], "mask": [0, 0, 1, 1], "metrics": ["hsv"]},
     "tasks[0].metrics"),
    ({"kind": "ambiguous", "prompts": [["a", "b"]], "view": "spin"}, "tasks[0].view"),
    ({"kind": "ambiguous", "prompts": [["a", "b"]], "width": 64}, "tasks[0].width"),
    ({"kind": "ambiguous", "prompts": [["a"]]}, "tasks[0].prompts[0]"),
    ({"kind": "wide", "prompts": ["a"], "view": "rot180"}, "tasks[0].view"),
    ({"kind": "wide", "prompts": [["a", "b"]]}, "tasks[0].prompts[0]"),
    ({"kind": "warp", "prompts": ["a"]}, "tasks[0].kind"),
])
def test_config_errors_of_the_new_kinds_name_the_key(task, key):
    with pytest.raises(EvalConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(dict(BASE, tasks=[task]))


def test_mask_file_is_relative_to_the_config(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "m.png")
    (tmp_path / "c.toml").write_text(
        '[strategies.s]\nname = "syncsde"\n[[tasks]]\nkind = "mask"\nprompts = ["a | b | c"]\n'
        'mask = "m.png"\n')
    t = load_config(tmp_path / "c.toml").tasks[0]
    assert t["mask"] == [str(tmp_path / "m.png")] and t["ref_prompts"] == ["c"]


EDIT = """
seed = 5
num_inference_steps = 3
samples_per_prompt = 2
kid_subsets = 5
threads = 1

[strategies.syncsde]
name = "syncsde"

[[tasks]]
name = "edit"
kind = "edit"
prompts = [{{ source = "a day over the sea with a boat", source_word = "boat", target_word = "balloon" }}]
height = 32
sources = {sources}
"""


def test_edit_kind_scores_lpips_and_bg_lpips_against_its_sources(tmp_path):
    """Generator sources with a placed boat: the stored source is the seeded scene, its mask
    lies in the boat's bounding box, and LPIPS / BG-LPIPS / CLIP-S (target prompt) are
    recomputed here from the files on disk."""
    from syncsde.eval.config import sample_seed
    from syncsde.metrics.clip_score import ScenesPromptEmbedder, clip_score
    from syncsde.metrics.features import ScenesFeatureNet
    from syncsde.metrics.perceptual import lpips
    from syncsde.scenes.generator import render
    from syncsde.scenes.vocab import parse_prompt

    cfg = tmp_path / "edit.toml"
    cfg.write_text(EDIT.format(sources='{ source = "generator", place = ["boat", 0.5, 0.8, 0.3] }'))
    out = tmp_path / "out"
    res = run_eval(str(cfg), str(out), progress=False)
    entries = [json.loads(ln) for ln in (out / MANIFEST).read_text().splitlines()]
    assert {e["strategy"] for e in entries} == {"syncsde"}      # no reference set
    src, masks, edits = [], [], []
    prompt = "a day over the sea with a boat | boat | balloon"
    for e in entries:
        rng = np.random.default_rng(sample_seed(5, "edit", prompt, "source", e["index"]))
        spec = parse_prompt("a day over the sea with a boat").sample_spec(rng)
        scene = render(spec, 32, 32, rng, place=[("boat", 16.0, 25.6, 9.6)])
        src.append(torch.from_numpy(scene.image).permute(2, 0, 1))
        boat = [o for o in scene.objects if o.kind == "boat" and o.x == 16.0 and o.y == 25.6]
        assert len(boat) == 1
        m = torch.from_numpy(boat[0].mask.astype(np.float32))
        rows, cols = np.nonzero(m.numpy())
        assert m.sum() > 10 and cols.min() >= 16 - 4.8 - 1 and cols.max() <= 16 + 4.8
        assert rows.max() <= 25.6 and rows.min() >= 25.6 - 1.05 * 9.6 - 1
        masks.append(m)
        edits.append(_load(out, e))
    net = ScenesFeatureNet()
    S, E = torch.stack(src), torch.stack(edits)
    row = res["edit"][0]
    assert row["LPIPS to source"] == pytest.approx(float(lpips(S, E, net).mean()), rel=1e-5)
    bg = [float(lpips(S[i:i + 1], E[i:i + 1], net, weight=1 - masks[i])) for i in range(len(src))]
    assert row["BG-LPIPS"] == pytest.approx(float(np.mean(bg)), rel=1e-5)
    emb = ScenesPromptEmbedder(net)
    cos = clip_score(emb.embed_images(E), emb.embed_texts(["a day over the sea with a balloon"] * 2))
    assert row["CLIP-S (cos)"] == pytest.approx(float(cos.mean()), rel=1e-5)


def test_edit_folder_sources_are_fingerprinted(tmp_path):
    from PIL import Image

    imgs, masks = tmp_path / "imgs", tmp_path / "masks"
    imgs.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(imgs / name)
        Image.fromarray(np.full((48, 48), 255, np.uint8)).save(masks / name)
    cfg = tmp_path / "e.toml"
    cfg.write_text(EDIT.format(sources='{ folder = "imgs", masks = "masks" }')
                   .replace("samples_per_prompt = 2\n", ""))
    c1 = load_config(cfg)
    assert c1.tasks[0]["samples_per_prompt"] == 2 and c1.tasks[0]["sources"]["has_masks"]
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(imgs / "b.png")
    c2 = load_config(cfg)
    assert c1.config_hash != c2.config_hash
    assert {i.item_hash for i in c1.items()} != {i.item_hash for i in c2.items()}
    (masks / "b.png").unlink()
    with pytest.raises(EvalConfigError, match=r"tasks\[0\]\.sources\.masks"):
        load_config(cfg)


@pytest.mark.parametrize("task, key", [
    ({"kind": "edit", "prompts": ["a day with a boat | house | tree"]}, "tasks[0].prompts[0]"),
    ({"kind": "edit", "prompts": ["a day with a boat | boat | tree"], "metrics": ["bg_lpips"]},
     "tasks[0].metrics"),
    ({"kind": "edit", "prompts": ["a day with a boat | boat | tree"], "metrics": ["kid"]},
     "tasks[0].metrics"),
    ({"kind": "edit", "prompts": ["a day with a boat | boat | tree"],
      "reference": {"source": "model"}}, "tasks[0].reference"),
    ({"kind": "edit", "prompts": ["a day with a boat | boat | tree"], "tau": 1.5}, "tasks[0].tau"),
    ({"kind": "edit", "prompts": ["a day with a boat | boat | tree"],
      "sources": {"source": "generator", "place": ["tree", 0.5, 0.5, 0.2]}}, "tasks[0].sources.place"),
    ({"kind": "edit", "prompts": ["a day with a boat | boat | tree"],
      "sources": {"folder": "/nonexistent/folder"}}, "tasks[0].sources.folder"),
    ({"kind": "wide", "prompts": ["a day"], "sources": {"source": "generator"}}, "tasks[0].sources"),
    ({"kind": "wide", "prompts": ["a day"], "tau": 0.3}, "tasks[0].tau"),
])
def test_edit_config_errors_name_the_key(task, key):
    with pytest.raises(EvalConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(dict(BASE, tasks=[task]))
