"""Sampler checkpoints: safetensors + JSON, never a pickle; damaged files and other runs refused."""
from __future__ import annotations

import json
import os
import pickle
import random
import struct

import pytest
import torch

from syncsde.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from syncsde.priors import GaussianPrior, PriorDenoiser
from syncsde.sampler import SamplingSchedule, sample
from syncsde.tasks import wide_problem

SCHED = SamplingSchedule.preset("sd", 8)


class CountingDenoiser(PriorDenoiser):
    calls = 0

    def __call__(self, *a, **k):
        type(self).calls += 1
        return super().__call__(*a, **k)


def _den(keys=("a", "b")):
    priors = {k: GaussianPrior.field("se", (4, 8), channels=1, lengthscale=2.0 + i)
              for i, k in enumerate(keys)}
    return CountingDenoiser(priors, SCHED.abar)


def _prob(cond="a", width=16):
    return wide_problem((1, 4, width), window=(4, 8), stride=(1, 4), cond=cond)


def _interrupted(ck, stop=3, **kw):
    def stop_at(k, t, y):
        if k == stop:
            raise KeyboardInterrupt

    opts = dict(seed=4, eta=0.5, progress=False)
    opts.update(kw)
    prob = opts.pop("problem", _prob())
    with pytest.raises(KeyboardInterrupt):
        sample(prob, _den(), opts.pop("strategy", "syncsde"), SCHED, checkpoint=ck,
               callback=stop_at, **opts)


@pytest.mark.parametrize("strategy", ["syncsde", "multidiffusion", "synctweedies"])
def test_resume_is_bit_identical(tmp_path, strategy):
    full = sample(_prob(), _den(), strategy, SCHED, seed=4, eta=0.5, progress=False, batch=2)
    ck = str(tmp_path / "run.ckpt")
    _interrupted(ck, strategy=strategy, batch=2)
    resumed = sample(_prob(), _den(), strategy, SCHED, seed=4, eta=0.5, progress=False,
                     batch=2, checkpoint=ck)
    torch.testing.assert_close(resumed.canvas, full.canvas, rtol=0, atol=0)


def test_checkpoint_is_plain_safetensors(tmp_path):
    from safetensors import safe_open

    ck = str(tmp_path / "run.ckpt")
    _interrupted(ck)
    with safe_open(ck, "pt") as f:
        header = json.loads(f.metadata()["syncsde_checkpoint"])
        names = set(f.keys())
    assert names == {"y", "rng", "canvas"}  # canvas init keeps the canvas noise
    assert header["format"]["name"] == "syncsde-sampler-checkpoint" and header["step"] == 3
    assert header["run"]["eta"] == 0.5 and header["run"]["cond"] == ["a", "a", "a"]
    assert not [p for p in os.listdir(tmp_path) if p != "run.ckpt"]  # no temp file left


class _Payload:
    def __reduce__(self):
        return (open, (os.environ["SYNCSDE_TEST_MARKER"], "w"))


def test_pickle_checkpoint_is_refused_without_running_it(tmp_path, monkeypatch):
    marker = tmp_path / "executed"
    monkeypatch.setenv("SYNCSDE_TEST_MARKER", str(marker))
    ck = tmp_path / "evil.ckpt"
    ck.write_bytes(pickle.dumps({"step": 1, "y": _Payload()}))
    with pytest.raises(CheckpointError, match="evil.ckpt"):
        sample(_prob(), _den(), "syncsde", SCHED, progress=False, checkpoint=str(ck))
    assert not marker.exists()
    torch.save({"step": 1, "y": _Payload()}, ck)  # torch's zip container, same refusal
    with pytest.raises(CheckpointError, match="evil.ckpt"):
        sample(_prob(), _den(), "syncsde", SCHED, progress=False, checkpoint=str(ck))
    assert not marker.exists()


@pytest.mark.parametrize("change, field", [
    (dict(seed=5), "seed"), (dict(eta=0.25), "eta"), (dict(inv_lambda=3.0), "strategy"),
    (dict(problem=_prob(cond="b")), "cond"), (dict(problem=_prob(width=20)), "views"),
    (dict(dtype=torch.float64), "dtype"), (dict(strategy="multidiffusion"), "strategy"),
    (dict(guidance_scale=2.0), "guidance_scale")])
def test_other_run_is_refused_with_what_differs(tmp_path, change, field):
    ck = str(tmp_path / "run.ckpt")
    _interrupted(ck)
    opts = dict(seed=4, eta=0.5, progress=False)
    opts.update(change)
    prob = opts.pop("problem", _prob())
    strategy = opts.pop("strategy", "syncsde")
    with pytest.raises(CheckpointError, match=rf"another run: .*\b{field}\b"):
        sample(prob, _den(), strategy, SCHED, checkpoint=ck, **opts)


def _load(ck):
    from syncsde.sampler import _run_description  # noqa: F401 (the same path sample() takes)

    return sample(_prob(), _den(), "syncsde", SCHED, seed=4, eta=0.5, progress=False,
                  checkpoint=str(ck))


@pytest.mark.parametrize("content, message", [
    (b"", "empty"), (b"\x01\x02", "truncated"), (b"garbage" * 50, "not a safetensors"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}        ", "not a syncsde")])
def test_damaged_files_are_one_clear_error(tmp_path, content, message):
    ck = tmp_path / "bad.ckpt"
    ck.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"bad.ckpt.*{message}"):
        _load(ck)


def test_truncations_and_bit_flips_never_resume(tmp_path):
    ck = tmp_path / "run.ckpt"
    _interrupted(str(ck))
    good = ck.read_bytes()
    rng = random.Random(0)
    cuts = sorted(rng.sample(range(len(good)), 60)) + [len(good) - 1]
    flips = rng.sample(range(len(good)), 300) + list(range(0, 64))  # header start densely
    cases = [good[:c] for c in cuts]
    for pos in flips:
        b = bytearray(good)
        b[pos] ^= 1 << rng.randrange(8)
        cases.append(bytes(b))
    from safetensors import safe_open

    with safe_open(str(ck), "pt") as f:  # the run this checkpoint belongs to
        run = json.loads(f.metadata()["syncsde_checkpoint"])["run"]
    assert load_checkpoint(ck, run, len(SCHED.timesteps))[0] == 3
    for data in cases:  # the reader the sampler uses, without re-running the sampler each time
        ck.write_bytes(data)
        with pytest.raises(CheckpointError, match="run.ckpt"):
            load_checkpoint(ck, run, len(SCHED.timesteps))
    for data in cases[:5] + cases[-5:]:  # and through sample() itself
        ck.write_bytes(data)
        with pytest.raises(CheckpointError, match="run.ckpt"):
            _load(ck)
    ck.write_bytes(good)  # and the intact file still resumes
    assert _load(ck).steps == len(SCHED.timesteps)


def test_step_out_of_range_is_refused(tmp_path):
    ck = tmp_path / "run.ckpt"
    _interrupted(str(ck))
    from safetensors import safe_open

    with safe_open(str(ck), "pt") as f:
        header = json.loads(f.metadata()["syncsde_checkpoint"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for step in (len(SCHED.timesteps) + 1, -1):
        save_checkpoint(ck, step, header["num_steps"], header["run"], tensors)
        with pytest.raises(CheckpointError, match="out of range"):
            _load(ck)
    with pytest.raises(CheckpointError, match="out of range"):
        load_checkpoint(ck, header["run"], len(SCHED.timesteps) - 1)


def test_forged_tensor_offsets_are_refused(tmp_path):
    """A header whose offsets point outside the file is refused before any buffer is read."""
    meta = {"__metadata__": {"syncsde_checkpoint": "{}"},
            "y": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 4 << 40]}}
    head = json.dumps(meta).encode()
    ck = tmp_path / "forged.ckpt"
    ck.write_bytes(struct.pack("<Q", len(head)) + head + b"\0" * 16)
    with pytest.raises(CheckpointError, match="forged.ckpt"):
        load_checkpoint(ck, {}, 8)


@pytest.mark.parametrize("kw, message", [
    (dict(checkpoint_every=0), "checkpoint_every"), (dict(checkpoint_every=1.5), "checkpoint_every"),
    (dict(batch=0), "batch"), (dict(batch=True), "batch"), (dict(eta=float("nan")), "eta"),
    (dict(eta=float("inf")), "eta"), (dict(max_batch=0), "max_batch")])
def test_bad_options_fail_before_the_first_model_call(tmp_path, kw, message):
    CountingDenoiser.calls = 0
    with pytest.raises((ValueError, TypeError), match=message):
        sample(_prob(), _den(), "syncsde", SCHED, progress=False,
               checkpoint=str(tmp_path / "c.ckpt"), **kw)
    assert CountingDenoiser.calls == 0


# ---- model weights read by the package (MDM) --------------------------------------------------
def test_mdm_weights_load_without_unpickling_code(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from syncsde.denoisers.mdm import MDMDenoiser

    torch.manual_seed(0)
    ref = torch.nn.Linear(3, 2)
    build = lambda: torch.nn.Linear(3, 2)  # noqa: E731
    pt, st = tmp_path / "model.pt", tmp_path / "model.safetensors"
    torch.save({"model": ref.state_dict()}, pt)
    save_file(ref.state_dict(), str(st))
    for path in (pt, st):
        den = MDMDenoiser.from_checkpoint(build, str(path))
        torch.testing.assert_close(den.model.weight, ref.weight, rtol=0, atol=0)
    marker = tmp_path / "executed"
    monkeypatch.setenv("SYNCSDE_TEST_MARKER", str(marker))
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Payload()}, evil)
    with pytest.raises(ValueError, match="evil.pt"):
        MDMDenoiser.from_checkpoint(build, str(evil))
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pt"):
        MDMDenoiser.from_checkpoint(build, str(tmp_path / "junk.pt"))
