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
