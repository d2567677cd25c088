"""Conditional sampling (``inpaint``), sequential window sampling (``sequential``) and the
coherent mask-composition law (issue 13)."""
from __future__ import annotations

import math

import pytest
import torch

from syncsde.benchmark_families import build_cases, mode_corr, run_case
from syncsde.metrics import frechet_to_law
from syncsde.priors import (FieldDenoiser, GaussianPrior, PriorDenoiser, coherent_composition,
                            gaussian_conditional)
from syncsde.sampler import SamplingSchedule, invert, sample
from syncsde.sequential import sample_sequential
from syncsde.strategies import make_strategy
from syncsde.tasks import edit_problem, wide_problem
from syncsde.views import WindowViews
from syncsde.sampler import Problem

F64 = torch.float64


def _box(H, W, r0, r1, c0, c1):
    m = torch.zeros(H, W, dtype=F64)
    m[r0:r1, c0:c1] = 1
    return m


# ---- the coherent composition law -----------------------------------------------------------
def test_coherent_composition_is_background_outside_and_object_given_it_inside():
    """Characterised by two properties, each checked with the (separately tested) Gaussian
    conditional: its marginal outside the mask is the background's, and its law inside given
    any outside values is the object's conditional law given them."""
    bg = GaussianPrior.field("se", (5, 6), lengthscale=2.5, mean=-0.7)
    obj = GaussianPrior.field("matern", (5, 6), nu=1.5, lengthscale=1.2, mean=0.9)
    m = _box(5, 6, 1, 4, 2, 5)
    law = coherent_composition(bg, obj, m)
    out = (m.reshape(-1) == 0).nonzero().reshape(-1)
    torch.testing.assert_close(law.mean_vector[out], bg.mean_vector[out], rtol=0, atol=1e-12)
    torch.testing.assert_close(law.covariance[out][:, out], bg.covariance[out][:, out], rtol=0, atol=1e-10)
    v = torch.randn(5, 6, generator=torch.Generator().manual_seed(3), dtype=F64)
    a = gaussian_conditional(law, 1 - m, v)
    b = gaussian_conditional(obj, 1 - m, v)
    torch.testing.assert_close(a.mean_vector, b.mean_vector, rtol=0, atol=1e-7)
    torch.testing.assert_close(a.covariance, b.covariance, rtol=0, atol=1e-7)
    assert torch.linalg.eigvalsh(law.covariance).min() > -1e-9
    with pytest.raises(ValueError, match="different sizes"):
        coherent_composition(bg, GaussianPrior.field("se", (2, 2), lengthscale=1.0), m)


# ---- inpaint: known pixels ------------------------------------------------------------------
def _one_view(H, W, cond="f"):
    return Problem(WindowViews((1, H, W), (H, W), [(0, 0)]), [cond], init="independent")


def test_inpaint_keeps_known_pixels_exactly_and_without_known_pixels_is_plain_ddim():
    sched = SamplingSchedule.preset("sd", 6)
    prior = GaussianPrior.field("se", (6, 6), lengthscale=1.5)
    den = PriorDenoiser({"f": prior}, sched.abar)
    k = torch.randn(1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    m = _box(6, 6, 0, 6, 0, 3)
    out = sample(_one_view(6, 6), den, "inpaint", sched, seed=2, batch=3, dtype=F64, progress=False,
                 known=k, known_mask=m, corrector_steps=2).output
    assert torch.equal(out[:, :, :, :3], k[:, :, :3].expand(3, 1, 6, 3))
    assert (out[:, :, :, 3:] - k[:, :, 3:]).abs().min() > 0
    assert not torch.equal(out[0], out[1])  # the batch's samples differ
    free = sample(_one_view(6, 6), den, "inpaint", sched, seed=2, dtype=F64, progress=False,
                  known=k, known_mask=torch.zeros(6, 6), corrector_steps=2).output
    plain = sample(_one_view(6, 6), den, "independent", sched, seed=2, dtype=F64, progress=False).output
    torch.testing.assert_close(free, plain, rtol=0, atol=0)


def test_inpaint_correctors_approach_the_conditional_law():
    """Known-pixel replacement alone (RePaint without resampling) is far from ``p(x_U | x_K)``;
    Langevin correctors bring it within a few times the plain oracle's distance."""
    sched = SamplingSchedule.preset("sd", 20)
    prior = GaussianPrior.field("se", (6, 6), lengthscale=2.0, mean=1.0)
    den = PriorDenoiser({"f": prior}, sched.abar)
    k = torch.full((1, 6, 6), -0.5, dtype=F64)
    m = 1 - _box(6, 6, 2, 5, 1, 5)
    target = gaussian_conditional(prior, m, k)
    n = 4000

    def w2(K):
        out = sample(_one_view(6, 6), den, "inpaint", sched, seed=0, batch=n, dtype=F64,
                     progress=False, known=k, known_mask=m, corrector_steps=K, snr=1.0).output
        return frechet_to_law(out.reshape(n, -1), target.mean_vector, target.covariance)

    w0, w3 = w2(0), w2(3)
    assert w3 < 0.3 * w0, (w0, w3)


def test_inpaint_bad_options():
    for kw in ({"corrector_steps": -1}, {"corrector_steps": 1.5}, {"snr": 0.0}, {"snr": math.nan},
               {"reference_noise": "none"}, {"known": torch.zeros(1, 2, 2)}):
        with pytest.raises(ValueError):
            make_strategy("inpaint", **kw)
    sched = SamplingSchedule.preset("sd", 2)
    den = PriorDenoiser({"f": GaussianPrior.field("se", (4, 4), lengthscale=1.0)}, sched.abar)
    k = torch.zeros(1, 4, 4)
    cases = [(dict(known=k, known_mask=torch.zeros(3, 4)), "known_mask has shape"),
             (dict(known=k, known_mask=torch.full((4, 4), 0.5)), "only 0"),
             (dict(known=torch.full((1, 4, 4), math.nan), known_mask=torch.ones(4, 4)), "NaN"),
             (dict(known=torch.zeros(2, 4, 4), known_mask=torch.ones(4, 4)), "known has shape"),
             ({}, "correlation model")]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            sample(_one_view(4, 4), den, "inpaint", sched, progress=False, **kw)


# ---- inpaint: the task's correlation model (editing) ---------------------------------------
def test_inpaint_edit_keeps_the_reconstruction_outside_and_beats_syncsde():
    sched = SamplingSchedule.preset("sd", 20)
    src = GaussianPrior.field("se", (6, 6), lengthscale=2.0, mean=-0.5)
    tgt = GaussianPrior.field("se", (6, 6), lengthscale=2.0, mean=1.0)
    den = PriorDenoiser({"src": src, "tgt": tgt}, sched.abar)
    x_src = src.sample(1, generator=torch.Generator().manual_seed(5)).to(torch.float32)
    x_T = invert(x_src, den, "src", sched, progress=False)[0]
    B = _box(6, 6, 1, 5, 1, 5).float()
    prob = edit_problem(x_T, B, "src", "tgt", null="src")
    n = 3000
    res = sample(prob, den, "inpaint", sched, seed=0, batch=n, dtype=F64, progress=False,
                 corrector_steps=3, snr=1.0)
    outside = (1 - B).bool()
    # view 2 is trajectory 0 (the source's reconstruction) outside, trajectory 1 inside
    torch.testing.assert_close(res.output[..., outside], res.views[0][..., outside], rtol=0, atol=0)
    torch.testing.assert_close(res.output[..., B.bool()], res.views[1][..., B.bool()], rtol=0, atol=0)
    target = gaussian_conditional(tgt, 1 - B, x_src[0])
    w_inp = frechet_to_law(res.output.reshape(n, -1), target.mean_vector, target.covariance)
    sde = sample(prob, den, "syncsde", sched, seed=0, batch=n, dtype=F64, progress=False,
                 inv_lambda=50.0).output
    w_sde = frechet_to_law(sde.reshape(n, -1), target.mean_vector, target.covariance)
    assert w_inp < 0.5 * w_sde, (w_inp, w_sde)


def test_inpaint_resumes_from_a_checkpoint_like_an_uninterrupted_run(tmp_path):
    sched = SamplingSchedule.preset("sd", 5)
    den = PriorDenoiser({"f": GaussianPrior.field("se", (4, 4), lengthscale=1.0)}, sched.abar)
    kw = dict(known=torch.ones(1, 4, 4), known_mask=_box(4, 4, 0, 4, 0, 2), corrector_steps=1)
    full = sample(_one_view(4, 4), den, "inpaint", sched, seed=4, progress=False, **kw).output
    ck = tmp_path / "run.safetensors"

    def interrupt(i, t, y):
        if i == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample(_one_view(4, 4), den, "inpaint", sched, seed=4, progress=False, checkpoint=str(ck),
               callback=interrupt, **kw)
    resumed = sample(_one_view(4, 4), den, "inpaint", sched, seed=4, progress=False,
                     checkpoint=str(ck), **kw).output
    torch.testing.assert_close(resumed, full, rtol=0, atol=0)


# ---- sequential -----------------------------------------------------------------------------
def test_sequential_windows_agree_with_the_canvas_and_beat_lockstep_on_a_markov_chain():
    """A Matern-1/2 field is Markov: the chain rule over windows is exact, so sequential
    sampling with correctors is close to the canvas law; MultiDiffusion (averaging) is not."""
    sched = SamplingSchedule.preset("sd", 20)
    kern = {"kernel": "matern", "nu": 0.5, "lengthscale": 3.0}
    prob = wide_problem((1, 1, 32), window=(1, 8), stride=(1, 4), cond="f")
    den = FieldDenoiser({"f": kern}, sched.abar)
    target = GaussianPrior.field("matern", (1, 32), nu=0.5, lengthscale=3.0)
    n = 3000
    res = sample_sequential(prob, den, sched, corrector_steps=3, snr=1.0, seed=0, batch=n,
                            dtype=F64, progress=False)
    torch.testing.assert_close(res.views, prob.views.forward(res.canvas), rtol=0, atol=0)
    w_seq = frechet_to_law(res.output.reshape(n, -1), target.mean_vector, target.covariance)
    md = sample(prob, den, "multidiffusion", sched, seed=0, batch=n, dtype=F64, progress=False).output
    w_md = frechet_to_law(md.reshape(n, -1), target.mean_vector, target.covariance)
    assert w_seq < 0.35 * w_md, (w_seq, w_md)
    again = sample_sequential(prob, den, sched, corrector_steps=3, snr=1.0, seed=0, batch=n,
                              dtype=F64, progress=False)
    torch.testing.assert_close(again.output, res.output, rtol=0, atol=0)


def test_sequential_keeps_one_mixture_component_more_often_than_lockstep():
    sched = SamplingSchedule.preset("sd", 20)
    case = build_cases(["mixture"], sched.abar)[0]
    n = 1500
    seq = sample_sequential(case.problem, case.denoiser, sched, corrector_steps=3, snr=1.0,
                            seed=0, batch=n, dtype=F64, progress=False).output
    md = sample(case.problem, case.denoiser, "multidiffusion", sched, seed=0, batch=n, dtype=F64,
                progress=False).output
    assert mode_corr(case, seq) > mode_corr(case, md) + 0.15


def test_sequential_errors():
    sched = SamplingSchedule.preset("sd", 2)
    den = PriorDenoiser({"f": GaussianPrior.field("se", (4, 4), lengthscale=1.0)}, sched.abar)
    prob = wide_problem((1, 4, 12), window=4, stride=4, cond="f")
    with pytest.raises(ValueError, match="permutation"):
        sample_sequential(prob, den, sched, order=[0, 0, 1], progress=False)
    with pytest.raises(ValueError, match="not in lockstep"):
        sample(prob, den, "sequential", sched, progress=False)
    with pytest.raises(ValueError, match="corrector_steps"):
        make_strategy("sequential", corrector_steps=-2)
    from syncsde.tasks import ambiguous_problem

    with pytest.raises(ValueError, match="window views"):
        sample_sequential(ambiguous_problem((1, 4, 4), "rot180", "f", "f"), den, sched, progress=False)


def test_conditional_family_scores_inpaint_on_samples():
    sched = SamplingSchedule.preset("sd", 3)
    case = [c for c in build_cases(["conditional"], sched.abar) if c.name.startswith("mask")][0]
    res = run_case(case, sched, {"multidiffusion": ("multidiffusion", {}),
                                 "inpaint K1": ("inpaint", {"corrector_steps": 1})}, samples=64)
    assert "w2" in res["multidiffusion"] and "w2_sampled" in res["inpaint K1"]
    # 3 views + 1 corrector input per step, plus the initial states' 3 once
    assert res["inpaint K1"]["inputs_per_step"] == pytest.approx((3 * 4 + 3) / 3)


# ---- task defaults ----------------------------------------------------------------------------
def test_task_defaults_and_overrides():
    from syncsde.pipelines import make_task_strategy
    from syncsde.task_defaults import TASK_DEFAULTS, default_strategy

    for task, (name, opts) in TASK_DEFAULTS.items():
        s = make_task_strategy(None, 5.0, None, task=task)
        assert s.name == name
        for k, v in opts.items():
            assert getattr(s, k) == v
    edit = make_task_strategy(None, 5.0, {"corrector_steps": 7}, task="edit")
    assert edit.name == "inpaint" and edit.corrector_steps == 7 and edit.snr == 1.0
    assert make_task_strategy(None, 5.0, None, authors_compat=True, task="edit").max_pull is None
    assert make_task_strategy(None, 2.0, None).name == "syncsde"          # no task: SyncSDE
    assert make_task_strategy("syncsde", 2.0, None, task="wide").name == "syncsde"
    name, opts = default_strategy("edit")
    opts["corrector_steps"] = 99                                         # a copy
    assert TASK_DEFAULTS["edit"][1]["corrector_steps"] == 3
    with pytest.raises(ValueError, match="no default strategy"):
        default_strategy("texture")
    with pytest.raises(ValueError, match="takes no option 'max_pull'"):
        make_task_strategy(None, 5.0, {"max_pull": None}, task="mask")


def test_sequential_resumes_after_its_last_finished_window(tmp_path, monkeypatch):
    import syncsde.sampler as sampler_module
    from syncsde.checkpoint import CheckpointError

    sched = SamplingSchedule.preset("sd", 4)
    den = FieldDenoiser({"f": {"kernel": "se", "lengthscale": 2.0}}, sched.abar)
    prob = wide_problem((1, 2, 20), window=(2, 8), stride=(1, 4), cond="f")
    kw = dict(corrector_steps=1, snr=0.5, seed=3, batch=2, dtype=F64, progress=False)
    full = sample_sequential(prob, den, sched, **kw).output
    ck = str(tmp_path / "seq.safetensors")
    real = sampler_module.sample
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(sampler_module, "sample", flaky)
    with pytest.raises(KeyboardInterrupt):
        sample_sequential(prob, den, sched, checkpoint=ck, **kw)
    monkeypatch.setattr(sampler_module, "sample", real)
    resumed = sample_sequential(prob, den, sched, checkpoint=ck, **kw).output
    torch.testing.assert_close(resumed, full, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="seed"):
        sample_sequential(prob, den, sched, checkpoint=ck, **dict(kw, seed=4))
