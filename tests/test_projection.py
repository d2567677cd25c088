"""The ``projection`` strategy (Tweedie moment projection, docs/composition.md eq. 7).

Reference: for a Gaussian prior N(mu, S) and known pixels k = A x_0, the noised conditional
law of x_t = sqrt(a) x_0 + sigma z given k is Gaussian with mean sqrt(a) m_c and covariance
a S_c + sigma^2 I (m_c, S_c: the Gaussian conditional of x_0 given k), so its eps is
sigma (a S_c + sigma^2 I)^{-1} (x_t - sqrt(a) m_c). Computed below in numpy, independently of
the strategy (which only sees the denoiser's eps and its Jacobian)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from syncsde.exact_laws import CountingDenoiser, gaussian_w2, push_forward_law
from syncsde.metrics import frechet_to_law
from syncsde.priors import GaussianPrior, PriorDenoiser, field_covariance, gaussian_conditional
from syncsde.sampler import Problem, SamplingSchedule, invert, sample
from syncsde.strategies import make_strategy
from syncsde.tasks import edit_problem
from syncsde.views import WindowViews

from resume_check import assert_resumes_bit_identically

F64 = torch.float64


def _one_view(H, W, cond="f"):
    return Problem(WindowViews((1, H, W), (H, W), [(0, 0)]), [cond], init="independent")


def _ring(H, W):
    m = torch.ones(H, W, dtype=F64)
    m[1:H - 1, 1:W - 1] = 0
    return m   # 1 = known


def _numpy_conditional_eps(cov, mu, known, k, x_t, a):
    idx_k = np.flatnonzero(known)
    S_kk = cov[np.ix_(idx_k, idx_k)]
    gain = cov[:, idx_k] @ np.linalg.inv(S_kk)
    m_c = mu + gain @ (k[idx_k] - mu[idx_k])
    S_c = cov - gain @ cov[idx_k, :]
    sigma2 = 1.0 - a
    return math.sqrt(sigma2) * np.linalg.solve(a * S_c + sigma2 * np.eye(len(mu)),
                                               x_t - math.sqrt(a) * m_c)


@pytest.mark.parametrize("t", [900, 500, 100])
def test_projected_eps_is_the_exact_conditional_eps_of_a_gaussian_prior(t):
    H = W = 5
    cov = field_covariance("matern", (H, W), nu=1.5, lengthscale=1.5).numpy()
    mu = np.full(H * W, 0.3)
    prior = GaussianPrior.field("matern", (H, W), nu=1.5, lengthscale=1.5, mean=0.3)
    sched = SamplingSchedule.preset("sd", 4)
    den = PriorDenoiser({"f": prior}, sched.abar)
    known = _ring(H, W)
    k = torch.randn(1, H, W, generator=torch.Generator().manual_seed(1), dtype=F64)
    strategy = make_strategy("projection", cg_steps=40, known=k, known_mask=known)

    class Run:   # what the strategy reads from the sampler's run
        views, correlation, timesteps, dtype, device = _one_view(H, W).views, None, [t], F64, "cpu"
        batch_dims, denoiser, cond, negative, guidance_scale = 1, den, ["f"], None, 1.0

    strategy.prepare(Run)
    a = float(sched.abar[t])
    x = torch.randn(1, 3, 1, H, W, generator=torch.Generator().manual_seed(2), dtype=F64)

    class Info:
        index, abar_t = 0, a

    Info.t = t
    got = strategy._projected_eps(Run, x, k.expand(1, 3, 1, H, W), strategy._pull[[0]],
                                  ["f"], None, Info)
    for b in range(3):
        want = _numpy_conditional_eps(cov, mu, known.numpy().reshape(-1), k.numpy().reshape(-1),
                                      x[0, b].numpy().reshape(-1), a)
        np.testing.assert_allclose(got[0, b].numpy().reshape(-1), want, rtol=0, atol=1e-7)


def test_converged_projection_reaches_the_oracle_where_replacement_does_not():
    """Known pixels given clean (a ring round a 6x6 field): the exact output law of the
    converged projection is within 1.1x of the oracle's (DDIM on the target itself, same steps);
    replacement with three Langevin moves is several times further."""
    sched = SamplingSchedule.preset("sd", 20)
    prior = GaussianPrior.field("se", (6, 6), lengthscale=2.0, mean=1.0)
    den = PriorDenoiser({"f": prior}, sched.abar)
    known = _ring(6, 6)
    k = GaussianPrior.field("se", (6, 6), lengthscale=2.0, mean=-0.5).sample(
        1, generator=torch.Generator().manual_seed(5))[0]
    target = gaussian_conditional(prior, known, k)
    law = push_forward_law(_one_view(6, 6), den, "projection", sched, cg_steps=60, known=k,
                           known_mask=known)
    w_proj = gaussian_w2(law, target)
    oracle = push_forward_law(_one_view(6, 6, "t"), PriorDenoiser({"t": target}, sched.abar),
                              "independent", sched)
    w_oracle = gaussian_w2(oracle, target)
    n = 3000
    out = sample(_one_view(6, 6), den, "inpaint", sched, seed=0, batch=n, dtype=F64,
                 progress=False, corrector_steps=3, snr=1.0, known=k, known_mask=known).output
    w_inp = frechet_to_law(out.reshape(n, -1), target.mean_vector, target.covariance)
    assert w_proj < 1.1 * w_oracle, (w_proj, w_oracle)
    assert w_inp > 3 * w_oracle, (w_inp, w_oracle)
    # the known pixels are the given values exactly
    one = sample(_one_view(6, 6), den, "projection", sched, seed=1, batch=4, dtype=F64,
                 progress=False, cg_steps=4, known=k, known_mask=known).output
    torch.testing.assert_close(one[..., known.bool()], k.expand(4, 1, 6, 6)[..., known.bool()],
                               rtol=0, atol=0)


def _edit_case(seed=5, size=6):
    sched = SamplingSchedule.preset("sd", 20)
    src = GaussianPrior.field("se", (size, size), lengthscale=2.0, mean=-0.5)
    tgt = GaussianPrior.field("se", (size, size), lengthscale=2.0, mean=1.0)
    den = PriorDenoiser({"src": src, "tgt": tgt}, sched.abar)
    x_src = src.sample(1, generator=torch.Generator().manual_seed(seed)).to(torch.float32)
    x_T = invert(x_src, den, "src", sched, progress=False)[0]
    B = 1 - _ring(size, size)   # 1 = edit
    return sched, den, x_src[0], B, edit_problem(x_T, B, "src", "tgt", null="src"), \
        gaussian_conditional(tgt, 1 - B, x_src[0])


def test_edit_with_the_clean_source_keeps_it_outside_and_beats_replacement():
    sched, den, x_src, B, prob, target = _edit_case()
    n = 3000
    counted = CountingDenoiser(den)
    res = sample(prob, counted, "projection", sched, seed=0, batch=n, dtype=F64, progress=False,
                 cg_steps=2, clean_source=x_src)
    outside = (1 - B).bool()
    torch.testing.assert_close(res.output[..., outside],
                               x_src.to(F64).expand(n, 1, 6, 6)[..., outside], rtol=0, atol=0)
    torch.testing.assert_close(res.output[..., B.bool()], res.views[1][..., B.bool()],
                               rtol=0, atol=0)
    w_proj = frechet_to_law(res.output.reshape(n, -1), target.mean_vector, target.covariance)
    inp = sample(prob, den, "inpaint", sched, seed=0, batch=n, dtype=F64, progress=False,
                 corrector_steps=3, snr=1.0).output
    w_inp = frechet_to_law(inp.reshape(n, -1), target.mean_vector, target.covariance)
    assert w_proj < 0.25 * w_inp, (w_proj, w_inp)
    # cost: the sampler's 3 views plus one graph input, 2 + 1 backward passes, for the one
    # conditioned view (trajectory 1), per step and sample
    steps = len(sched.timesteps)
    assert counted.inputs == steps * n * 4
    assert counted.backward_inputs == steps * n * 3


def test_without_the_clean_source_the_known_values_follow_the_source_trajectory():
    """No clean source: the known values are the source's Tweedie estimates (only its final
    state is clean), and the output copies the source's reconstruction outside."""
    sched, den, x_src, B, prob, target = _edit_case()
    res = sample(prob, den, "projection", sched, seed=0, batch=8, dtype=F64, progress=False,
                 cg_steps=2)
    outside = (1 - B).bool()
    torch.testing.assert_close(res.output[..., outside], res.views[0][..., outside], rtol=0, atol=0)
    assert torch.isfinite(res.output).all()


def test_bad_options_are_refused():
    sched = SamplingSchedule.preset("sd", 2)
    den = PriorDenoiser({"f": GaussianPrior.field("se", (4, 4), lengthscale=1.0)}, sched.abar)
    k = torch.zeros(1, 4, 4)
    for bad in (0, -1, 1.5, True, "4"):
        with pytest.raises(ValueError, match="cg_steps must be"):
            make_strategy("projection", cg_steps=bad)
    with pytest.raises(ValueError, match="together"):
        make_strategy("projection", known=k)
    with pytest.raises(ValueError, match="clean_source is for"):
        make_strategy("projection", known=k, known_mask=torch.ones(4, 4), clean_source=k)
    with pytest.raises(ValueError, match="correlation model"):
        sample(_one_view(4, 4), den, "projection", sched, progress=False)
    sched6, den6, x_src, B, prob, _ = _edit_case()
    for bad, msg in ((torch.zeros(1, 5, 5), "clean_source has shape"),
                     (torch.full((1, 6, 6), math.nan), "NaN")):
        with pytest.raises(ValueError, match=msg):
            sample(prob, den6, "projection", sched6, progress=False, clean_source=bad)


def test_runs_are_reproducible_and_deterministic_in_the_seed():
    sched, den, x_src, B, prob, _ = _edit_case()
    a, b = (sample(prob, den, "projection", sched, seed=3, batch=4, dtype=F64, progress=False,
                   cg_steps=2, clean_source=x_src).output for _ in range(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_warm_start_is_checked_and_refuses_checkpoints(tmp_path):
    sched, den, x_src, B, prob, target = _edit_case()
    with pytest.raises(ValueError, match="warm_start must be"):
        make_strategy("projection", warm_start=1)
    with pytest.raises(ValueError, match="checkpoint"):
        sample(prob, den, "projection", sched, progress=False, warm_start=True,
               clean_source=x_src, checkpoint=str(tmp_path / "run.safetensors"))
    # a cold start resumes bit-identically
    assert_resumes_bit_identically(str(tmp_path / "cold.safetensors"), 5, prob, den, "projection",
                                   sched, seed=2, batch=3, dtype=F64, progress=False,
                                   clean_source=x_src)


def test_an_edit_mask_covering_everything_is_a_fresh_target_sample_not_the_source():
    """Nothing is known: the output is the target trajectory (view 1), not the clean source."""
    sched, den, x_src, B, _, _ = _edit_case()
    x_T = invert(x_src[None], den, "src", sched, progress=False)[0]
    prob = edit_problem(x_T, torch.ones(6, 6), "src", "tgt", null="src")
    res = sample(prob, den, "projection", sched, seed=0, batch=2, dtype=F64, progress=False,
                 clean_source=x_src)
    torch.testing.assert_close(res.output, res.views[1], rtol=0, atol=0)
    assert (res.output - x_src.to(F64)).abs().max() > 0.5


def test_the_benchmark_charges_each_backward_pass_as_two_model_inputs():
    from syncsde.benchmark_families import BACKWARD_COST, build_cases, run_case

    sched = SamplingSchedule.preset("sd", 4)
    case = [c for c in build_cases(["conditional"], sched.abar) if c.name.startswith("edit 8x8")][0]
    src = case.strategies["projection"][1]["clean_source"]
    res = run_case(case, sched, {"projection": ("projection", {"cg_steps": 2, "clean_source": src}),
                                 "inpaint": ("inpaint", {"corrector_steps": 0})}, samples=40)
    r = res["projection"]
    # 3 views + 1 graph input forward; cg_steps + 1 backward passes for the one conditioned view
    assert r["backward_per_step"] == 3
    assert r["inputs_per_step"] == 4 + BACKWARD_COST * 3
    assert res["inpaint"]["backward_per_step"] == 0
