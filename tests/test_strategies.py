"""Strategy details: collage geometry and accuracy, the SyncSDE pull cap, canonical init."""
from __future__ import annotations

import pytest
import torch

from syncsde import ops
from syncsde.metrics import frechet_to_law
from syncsde.priors import FieldDenoiser, GaussianPrior
from syncsde.sampler import SamplingSchedule, sample
from syncsde.strategies import SyncSDE
from syncsde.tasks import sequence_problem, wide_problem
from syncsde.views import WindowViews


def test_separators_of_a_chain_and_of_a_loop():
    v = WindowViews.grid((1, 4, 20), (4, 8), (1, 5))  # lefts 0, 5, 10, 12
    seps = {tuple(s.size): (s.offsets[:, 1].tolist(), owners) for s, owners in v.separators()}
    assert seps == {(4, 3): ([5, 10], [1, 2]), (4, 6): ([12], [3])}
    c = WindowViews.grid((1, 4, 20), (4, 8), (1, 5), circular=True)  # 0, 5, 10, 15 (wraps)
    seps = {tuple(s.size): (s.offsets[:, 1].tolist(), owners) for s, owners in c.separators()}
    assert seps == {(4, 3): ([5, 10, 15, 0], [1, 2, 3, 0])}
    with pytest.raises(ValueError, match="1-D chain"):
        WindowViews.grid((1, 8, 8), (4, 4), 4).separators()


def test_collage_matches_the_exact_canvas_score_on_a_markov_field():
    """Matern-1/2 in 1-D is Markov: the junction-tree composition of window scores samples the
    canvas law as well as the oracle, and far better than averaging."""
    sched = SamplingSchedule.preset("sd", 25)
    C, L = 1, 40
    prob = sequence_problem(C, L, window=16, overlap=8, cond="f")
    field = {"kernel": "matern", "nu": 0.5, "lengthscale": 3.0}
    den = FieldDenoiser({"f": field}, sched.abar, channels=C)
    target = GaussianPrior.field("matern", (1, L), channels=C, nu=0.5, lengthscale=3.0)

    def w2(name):
        r = sample(prob, den, name, sched, seed=0, batch=3000, progress=False, dtype=torch.float64)
        return frechet_to_law(r.canvas.reshape(3000, -1), target.mean_vector, target.covariance)

    oracle_prob = wide_problem((C, 1, L), window=(1, L), stride=1, cond="f")
    r = sample(oracle_prob, den, "independent", sched, seed=0, batch=3000, progress=False,
               dtype=torch.float64)
    w2_oracle = frechet_to_law(r.canvas.reshape(3000, -1), target.mean_vector, target.covariance)
    w2_collage, w2_md = w2("collage"), w2("multidiffusion")
    assert w2_collage < w2_oracle + 0.1 * (w2_md - w2_oracle)


def test_collage_refuses_non_window_views():
    from syncsde.tasks import ambiguous_problem
    from syncsde.priors import PriorDenoiser
    sched = SamplingSchedule.preset("sd", 3)
    p = GaussianPrior.field("se", (4, 4), lengthscale=1.0)
    with pytest.raises(ValueError, match="window views"):
        sample(ambiguous_problem((1, 4, 4), "rot180", "a", "a"), PriorDenoiser({"a": p}, sched.abar),
               "collage", sched, progress=False)


def test_pull_cap_binds_only_beyond_full_replacement():
    with pytest.raises(ValueError, match="max_pull"):
        SyncSDE(max_pull=0.0)
    s = SyncSDE(inv_lambda=5.0)
    sd = SamplingSchedule.preset("sd", 50)
    s._schedule = s.inv_lambda.bind(sd.timesteps)
    for info in sd.steps():  # SD with the authors' settings: never binds
        assert s.inv_lambda_at(info) == pytest.approx(5.0 * info.t / 981)
    deep = SamplingSchedule.preset("deepfloyd", 30)
    s._schedule = s.inv_lambda.bind(deep.timesteps)
    first = deep.steps()[0]
    c = ops.ddim_coefficients(first.abar_t, first.abar_s)
    assert c.gamma * 5.0 == pytest.approx(3.94, abs=0.01)  # the authors' IF overshoot
    assert c.gamma * s.inv_lambda_at(first) == pytest.approx(c.c_x)
    raw = SyncSDE(inv_lambda=5.0, max_pull=None)
    raw._schedule = raw.inv_lambda.bind(deep.timesteps)
    assert raw.inv_lambda_at(first) == pytest.approx(5.0)


def test_canonical_strategies_keep_views_consistent_with_eta():
    sched = SamplingSchedule.preset("sd", 6)
    prob = wide_problem((1, 4, 16), window=(4, 8), stride=(1, 4), cond="f")
    den = FieldDenoiser({"f": {"kernel": "se", "lengthscale": 2.0}}, sched.abar)
    for name in ("synctweedies", "noise_average", "collage"):
        r = sample(prob, den, name, sched, seed=1, eta=1.0, progress=False, dtype=torch.float64)
        torch.testing.assert_close(prob.views.forward(r.canvas), r.views, rtol=0, atol=1e-10)
