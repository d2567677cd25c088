"""The procedural scene generator and its prompt vocabulary, against independent checks:
determinism, stationarity along the width (crops of wide scenes vs narrow scenes), the Poisson
law of object counts, label and per-column truth correctness, prompt parsing and tokenization."""
from __future__ import annotations

import numpy as np
import pytest

from syncsde.scenes.generator import (LABEL_NAMES, OBJECT_RATES, SceneSpec, labels_vector,
                                      random_spec, render, scene_rng)
from syncsde.scenes.vocab import (WORDS, PromptSpec, UnknownWordError, build_bpe, parse_prompt,
                                  prompt_for, random_prompt)


def test_render_is_deterministic_and_seed_dependent():
    spec = SceneSpec("sunset", "sea", 2, ("celestial", "boats", "balloons"))
    a = render(spec, 32, 64, scene_rng(3, 7))
    b = render(spec, 32, 64, scene_rng(3, 7))
    c = render(spec, 32, 64, scene_rng(3, 8))
    assert np.array_equal(a.image, b.image) and a.truth() == b.truth()
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (32, 64, 3) and a.image.dtype == np.float32
    assert a.image.min() >= 0 and a.image.max() <= 1


def _crop_stats(spec, n, W, offset, w=32, seed=0):
    """Per sample: the row-mean colours ``[n, 32, 3]`` of the window ``[offset, offset + w)`` and
    the number of tree centres inside it."""
    rows, counts = [], []
    for i in range(n):
        sc = render(spec, 32, W, scene_rng(seed, i))
        rows.append(sc.image[:, offset:offset + w].mean(1))
        counts.append(sum(1 for o in sc.objects if o.kind == "tree" and offset <= o.x < offset + w))
    return np.array(rows), np.array(counts)


def test_crops_of_wide_scenes_have_the_law_of_narrow_scenes():
    """Stationarity: a 32-column window of a 128-wide scene (at any offset) has the same row
    profile and object counts as a 32-wide scene (Monte Carlo, independent seeds; 5-sigma
    bounds from the sample variances)."""
    spec = SceneSpec("day", "grass", 2, ("celestial", "trees", "houses"))
    n = 150
    narrow_rows, narrow_counts = _crop_stats(spec, n, 32, 0, seed=1)
    for offset in (0, 48, 96):
        rows, counts = _crop_stats(spec, n, 128, offset, seed=2 + offset)
        se = np.sqrt(rows.var(0) / n + narrow_rows.var(0) / n) + 1e-3
        assert (np.abs(rows.mean(0) - narrow_rows.mean(0)) < 5 * se).all(), offset
        # tree centres per window: Poisson with mean rate * 32 / H = rate (H = 32)
        for c in (counts, narrow_counts):
            se_c = np.sqrt(OBJECT_RATES["trees"] / len(c))
            assert abs(c.mean() - OBJECT_RATES["trees"]) < 4 * se_c


def test_object_counts_follow_the_poisson_law():
    """Counts of object centres in disjoint windows: mean = variance = rate * w / H, and the
    fraction of empty windows is exp(-mean)."""
    spec = SceneSpec("night", "snow", 0, ("houses",))
    counts = []
    for i in range(40):
        sc = render(spec, 32, 640, scene_rng(5, i))
        xs = np.array([o.x for o in sc.objects if o.kind == "house"])
        counts += [int(((xs >= a) & (xs < a + 64)).sum()) for a in range(0, 640, 64)]
    counts = np.array(counts)
    lam = OBJECT_RATES["houses"] * 64 / 32
    se = np.sqrt(lam / len(counts))
    assert abs(counts.mean() - lam) < 4 * se
    assert abs(counts.var() / lam - 1) < 0.25
    assert abs((counts == 0).mean() - np.exp(-lam)) < 0.05


def test_no_objects_without_their_words_and_moon_only_at_night():
    for i in range(20):
        sc = render(SceneSpec("night", "grass", 1, ("celestial",)), 32, 96, scene_rng(9, i))
        assert {o.kind for o in sc.objects} <= {"moon"}
        sc = render(SceneSpec("day", "desert", 0, ()), 32, 96, scene_rng(9, i))
        assert sc.objects == []
        assert not any(v for k, v in sc.labels().items() if k.startswith("has_"))


def test_horizon_truth_matches_the_image():
    """Without ridges or objects, the largest jump between consecutive row means is at the
    horizon row the truth reports."""
    for i in range(20):
        sc = render(SceneSpec(["day", "sunset", "night"][i % 3], ["grass", "desert", "snow"][i % 3]),
                    32, 64, scene_rng(11, i))
        rows = sc.image.mean(1)
        jump = np.abs(np.diff(rows, axis=0)).sum(1)
        assert int(np.argmax(jump)) + 1 == int(np.ceil(sc.horizon - 0.5))


def test_ridge_truth_matches_the_image():
    """Per column, pixels well above the reported ridge top are sky (the same colour as the
    sky at that row in ridge-free columns) and pixels below it are not."""
    for i in range(10):
        sc = render(SceneSpec("day", "grass", 1), 32, 128, scene_rng(13, i))
        top = sc.ridge_tops[0]
        assert np.isnan(sc.ridge_tops[1]).all() and np.isfinite(top).all()
        img = sc.image
        checked = 0
        for r in range(int(np.floor(top.min())) - 1, int(sc.horizon) - 1):
            sky_cols = top > r + 2.5
            rid_cols = top < r - 1.5
            if sky_cols.sum() < 3 or rid_cols.sum() < 3:
                continue
            sky = np.median(img[r, sky_cols], axis=0)
            assert np.abs(img[r, sky_cols] - sky).max(1).mean() < 0.05
            assert np.abs(img[r, rid_cols] - sky).max(1).min() > 0.08
            checked += 1
        assert checked >= 1


def test_placed_objects_are_where_asked_and_labelled():
    spec = SceneSpec("day", "sea", 0, ())
    plain = render(spec, 32, 32, scene_rng(1, 0))
    sc = render(spec, 32, 32, scene_rng(1, 0), place=[("boat", 16, 26, 10), ("balloon", 8, 6, 8)])
    kinds = [o.kind for o in sc.objects]
    assert kinds.count("boat") == 1 and kinds.count("balloon") == 1
    assert sc.labels()["has_boats"] and sc.labels()["has_balloons"]
    assert not plain.labels()["has_boats"]
    diff = np.abs(sc.image - plain.image).max(-1) > 0.1
    ys, xs = np.nonzero(diff)
    # changed pixels lie in the two objects' boxes only
    in_boat = (np.abs(xs + 0.5 - 16) <= 6) & (ys + 0.5 <= 27) & (ys + 0.5 >= 26 - 11)
    in_balloon = (np.abs(xs + 0.5 - 8) <= 5) & (ys + 0.5 >= 1) & (ys + 0.5 <= 14)
    assert (in_boat | in_balloon).all() and in_boat.sum() > 5 and in_balloon.sum() > 5
    with pytest.raises(ValueError, match="kind"):
        render(spec, 32, 32, 0, place=[("cat", 1, 1, 1)])


def test_labels_vector_layout():
    sc = render(SceneSpec("sunset", "snow", 2, ("trees",)), 32, 256, scene_rng(2, 0))
    v = labels_vector(sc.labels())
    on = {LABEL_NAMES[i] for i in np.nonzero(v)[0]}
    assert {"time=sunset", "ground=snow", "ridges=2", "has_trees"} <= on
    assert len(on) == 4 + int(sc.labels()["has_celestial"])


@pytest.mark.parametrize("bad", [dict(time="dawn"), dict(ground="lava"), dict(ridges=3),
                                 dict(objects=("cats",)), dict(ground="sea", objects=("trees",)),
                                 dict(ground="grass", objects=("boats",))])
def test_spec_validation(bad):
    with pytest.raises(ValueError):
        SceneSpec(**bad)


# ---- prompts --------------------------------------------------------------------------------
def test_parse_examples():
    assert parse_prompt("a sunset over the sea with mountains") == PromptSpec("sunset", "sea", 2, ())
    assert parse_prompt("a snowy night with a moon") == PromptSpec("night", "snow", 0, ("celestial",))
    assert parse_prompt("a boat") == PromptSpec(None, "sea", 0, ("boats",))
    assert parse_prompt("Day, over the GRASS with hills and trees.") == \
        PromptSpec("day", "grass", 1, ("trees",))


def test_unknown_word_lists_the_vocabulary():
    with pytest.raises(UnknownWordError) as e:
        parse_prompt("a cat on the sea", argument="--prompt")
    msg = str(e.value)
    assert "'cat'" in msg and "--prompt" in msg
    assert all(w in msg for w in WORDS)


@pytest.mark.parametrize("prompt", ["a sun at night", "a moon by day", "trees on the sea",
                                    "a boat over the desert", "a day at night", "grass and snow"])
def test_contradictions_are_errors(prompt):
    with pytest.raises(ValueError):
        parse_prompt(prompt)


def test_random_prompts_parse_back_to_their_spec():
    rng = np.random.default_rng(0)
    for _ in range(400):
        spec = random_spec(rng)
        p = parse_prompt(random_prompt(spec, rng, drop_time=0, drop_ground=0))
        assert (p.time, p.ground, p.ridges, p.objects) == (spec.time, spec.ground, spec.ridges,
                                                            spec.objects)
        q = parse_prompt(prompt_for(spec))
        assert (q.time, q.ground, q.ridges, q.objects) == (spec.time, spec.ground, spec.ridges,
                                                            spec.objects)


def _reference_bpe(word, merges):
    """Textbook BPE: repeatedly merge the adjacent pair of lowest rank (independent of
    ``syncsde.scenes.vocab._bpe``)."""
    rank = {m: i for i, m in enumerate(merges)}
    sym = list(word[:-1]) + [word[-1] + "</w>"]
    while True:
        best = None
        for i in range(len(sym) - 1):
            r = rank.get((sym[i], sym[i + 1]))
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            return sym
        i = best[1]
        sym = sym[:i] + [sym[i] + sym[i + 1]] + sym[i + 2:]


def test_every_word_is_one_token(tmp_path):
    vocab, merges = build_bpe()
    for w in WORDS:
        assert _reference_bpe(w, merges) == [w + "</w>"], w
    pytest.importorskip("transformers")
    from syncsde.scenes.vocab import make_tokenizer

    tok = make_tokenizer(tmp_path)
    for w in WORDS:
        ids = tok(w, add_special_tokens=False).input_ids
        assert ids == [vocab[w + "</w>"]], w
    ids = tok("a sunset over the sea").input_ids
    assert ids == [vocab["<|startoftext|>"]] + [vocab[w + "</w>"] for w in
                                                 ("a", "sunset", "over", "the", "sea")] + \
        [vocab["<|endoftext|>"]]
