"""The maximum-entropy completion of window marginals (syncsde.window_limits): the floor of
any window-only strategy in the benchmark families."""
from __future__ import annotations

import pytest
import torch

from syncsde.exact_laws import energy_distance, gaussian_w2
from syncsde.metrics import frechet_to_law
from syncsde.priors import GaussianMixturePrior, GaussianPrior
from syncsde.tasks import wide_problem
from syncsde.window_limits import chain_completion_law, chain_order, sample_chain_completion

F64 = torch.float64


def _window_block(cov, H, W, a, w):
    idx = (torch.arange(H)[:, None] * W + torch.arange(a, a + w)[None, :]).reshape(-1)
    return cov[idx][:, idx]


def test_completion_keeps_every_window_marginal_and_is_exact_for_a_markov_field():
    views = wide_problem((1, 2, 20), window=(2, 8), stride=(1, 4), cond="f").views
    se = GaussianPrior.field("se", (2, 20), lengthscale=3.0, mean=0.4)
    law = chain_completion_law(views, se.spatial_covariance, se.mean_vector)
    for a, w in chain_order(views):
        torch.testing.assert_close(_window_block(law.covariance, 2, 20, a, w),
                                   _window_block(se.spatial_covariance, 2, 20, a, w), rtol=0, atol=1e-8)
    # maximum entropy: at least the target's (log det of the covariance)
    assert torch.logdet(law.covariance) >= torch.logdet(se.spatial_covariance) - 1e-8
    assert gaussian_w2(law, se) > 1e-4            # SE is not Markov: the completion differs
    ou = GaussianPrior.field("matern", (1, 20), nu=0.5, lengthscale=3.0)
    v1 = wide_problem((1, 1, 20), window=(1, 8), stride=(1, 4), cond="f").views
    law1 = chain_completion_law(v1, ou.spatial_covariance, ou.mean_vector)
    assert gaussian_w2(law1, ou) < 1e-9           # Matern-1/2 in 1-D is Markov: exact


def test_chain_completion_samples_follow_the_law_and_the_window_mixture():
    views = wide_problem((1, 1, 24), window=(1, 8), stride=(1, 4), cond="f").views
    comp = GaussianPrior.field("se", (1, 8), lengthscale=2.0, mean=0.3)
    x = sample_chain_completion(views, GaussianMixturePrior([comp], [1.0]), 20000,
                                torch.Generator().manual_seed(0))
    canvas = GaussianPrior.field("se", (1, 24), lengthscale=2.0, mean=0.3)
    law = chain_completion_law(views, canvas.spatial_covariance, canvas.mean_vector)
    assert frechet_to_law(x.reshape(20000, -1), law.mean_vector, law.covariance) < 0.02
    # a two-component window mixture: the last window's marginal is the window mixture
    mix = GaussianMixturePrior([GaussianPrior.field("se", (1, 8), lengthscale=2.0, mean=s)
                                for s in (1.0, -1.0)], [0.3, 0.7])
    y = sample_chain_completion(views, mix, 4000, torch.Generator().manual_seed(1))
    last = y[..., 16:24]
    ref = mix.sample(4000, generator=torch.Generator().manual_seed(2))
    wrong = GaussianMixturePrior(mix.components, [0.7, 0.3]).sample(4000, generator=torch.Generator().manual_seed(2))
    assert energy_distance(last, ref) < 0.25 * energy_distance(last, wrong)


def test_chain_order_refuses_what_is_not_a_chain():
    with pytest.raises(ValueError, match="loop"):
        chain_order(wide_problem((1, 1, 16), window=(1, 8), stride=(1, 4), cond="f", circular=True).views)
    with pytest.raises(ValueError, match="full-height"):
        chain_order(wide_problem((1, 8, 16), window=4, stride=4, cond="f").views)
