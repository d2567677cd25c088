r"""Exact-score priors: Gaussian fields and their mixtures (design notes, section 4).

For ``x_0 ~ N(mu, Sigma)`` and ``x_t = sqrt(a) x_0 + sqrt(1-a) eps`` (``a = abar_t``), the law of
``x_t`` is ``N(sqrt(a) mu, a Sigma + (1-a) I)`` and the exact posterior-mean noise is

    E[eps | x_t] = sqrt(1-a) (a Sigma + (1-a) I)^{-1} (x_t - sqrt(a) mu)
                 = U diag( sqrt(1-a) / (a s + 1 - a) ) U^T (x_t - sqrt(a) mu),

with ``Sigma = U diag(s) U^T`` decomposed once at construction. For a mixture
``sum_k w_k N(mu_k, Sigma_k)`` it is ``sum_k r_k(x_t) E_k[eps | x_t]`` with responsibilities
``r_k ∝ w_k N(x_t; sqrt(a) mu_k, a Sigma_k + (1-a) I)`` (computed in log space).

The exact *target* laws of the synchronization tasks are Gaussian as well
(:func:`gaussian_product`, :func:`gaussian_conditional`, :func:`masked_composition`) and come
back as :class:`GaussianLaw`, with the same exact ``eps`` so an oracle sampler can run DDIM on
the whole target.

Conventions: a field prior has event shape ``[C, *spatial]`` (spatial ``(n,)`` or ``(h, w)``);
its flattened vector is the row-major flattening of ``[C, *spatial]`` (channel-major), so its
covariance is block diagonal with C copies of the spatial covariance. All algebra is float64;
``eps`` returns the input's dtype.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "KERNELS", "field_covariance", "GaussianLaw", "GaussianPrior", "GaussianMixturePrior",
    "PriorDenoiser", "gaussian_product", "gaussian_conditional", "masked_composition",
    "coherent_composition",
]

KERNELS = ("se", "matern", "power", "exp_separable")
_LOG_2PI = math.log(2.0 * math.pi)


# ---- covariance kernels -------------------------------------------------------------------
def _spatial_shape(spatial_shape: Any) -> tuple[int, ...]:
    if isinstance(spatial_shape, (int, np.integer)):
        spatial_shape = (int(spatial_shape),)
    try:
        if isinstance(spatial_shape, (str, bytes)):
            raise TypeError
        shape = tuple(int(v) for v in spatial_shape)
    except (TypeError, ValueError) as e:
        raise ValueError(f"spatial_shape must be an int or a tuple of 1 or 2 ints, got {spatial_shape!r}") from e
    if len(shape) not in (1, 2) or any(v < 1 for v in shape):
        raise ValueError(f"spatial_shape must be (n,) or (h, w) with positive sides, got {spatial_shape!r}")
    return shape


def field_covariance(kernel: str, spatial_shape: int | Sequence[int], lengthscale: float = 4.0,
                     nu: float = 1.5, exponent: float = 2.0, variance: float = 1.0,
                     jitter: float = 1e-6, period: float | None = None) -> torch.Tensor:
    r"""Covariance ``[P, P]`` (float64) of a stationary field over the positions of a grid.

    Positions are the integer grid points of ``spatial_shape`` = ``(n,)`` or ``(h, w)``,
    flattened row-major; ``r`` is their Euclidean distance (grid units), ``l = lengthscale``,
    ``v = variance``:

    * ``"se"``: ``k(r) = v exp(-r^2 / (2 l^2))``;
    * ``"matern"`` (``nu`` in {0.5, 1.5, 2.5}), with ``q = sqrt(2 nu) r / l``:
      ``v exp(-q)``, ``v (1 + q) exp(-q)``, ``v (1 + q + q^2/3) exp(-q)``;
    * ``"power"``: the rational-quadratic-like power-law decay
      ``k(r) = v (1 + r^2 / l^2)^(-exponent/2)``, i.e. correlations fall off like
      ``r^-exponent`` at long range (not exponentially). It is a scale mixture of squared
      exponentials, hence positive definite for every ``exponent > 0`` in any dimension; for
      ``exponent < d`` its spectrum diverges like ``|k|^(exponent - d)`` at low frequency, while
      at high frequency it decays fast (the field is smooth). Being a function of ``r`` alone, the
      covariance of a window is exactly the restriction of the canvas covariance (which an FFT
      construction on a padded grid would not give).

    * ``"exp_separable"``: ``k = v exp(-sum_axis |d_axis| / l)``, the product of one
      Ornstein-Uhlenbeck (Matern-1/2) kernel per axis: its precision is the Kronecker product
      of tridiagonal matrices, so the field is Markov on the 8-neighbour grid (exactly, at every
      scale), the case where region-graph compositions are exact (docs/composition.md).

    ``period`` (cylinders, 360-degree canvases): the last axis is a circle of circumference
    ``period`` and its distance is the chord ``(p / pi) sin(pi |d| / p)`` (the Euclidean distance
    of the circle embedded in the plane), so every kernel above, positive definite in any
    dimension, stays positive definite and stationary round the loop; a window's covariance is
    the restriction of the canvas covariance.

    ``jitter`` is added to the diagonal (keeps smooth kernels numerically positive definite).
    """
    shape = _spatial_shape(spatial_shape)
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")
    lengthscale, variance, jitter = float(lengthscale), float(variance), float(jitter)
    if not (lengthscale > 0 and math.isfinite(lengthscale)):
        raise ValueError(f"lengthscale must be a finite number > 0, got {lengthscale!r}")
    if not (variance > 0 and math.isfinite(variance)):
        raise ValueError(f"variance must be a finite number > 0, got {variance!r}")
    if not (jitter >= 0 and math.isfinite(jitter)):
        raise ValueError(f"jitter must be a finite number >= 0, got {jitter!r}")
    axes = [torch.arange(n, dtype=torch.float64) for n in shape]
    pos = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))
    diff = (pos[:, None, :] - pos[None, :, :]).abs()
    if period is not None:
        period = float(period)
        if not (period > 0 and math.isfinite(period)):
            raise ValueError(f"period must be a finite number > 0, got {period!r}")
        diff[..., -1] = (period / math.pi) * torch.sin(math.pi * diff[..., -1] / period).abs()
    r2 = (diff ** 2).sum(-1)
    if kernel == "exp_separable":
        k = torch.exp(-diff.sum(-1) / lengthscale)
    elif kernel == "se":
        k = torch.exp(-0.5 * r2 / lengthscale**2)
    elif kernel == "matern":
        if float(nu) not in (0.5, 1.5, 2.5):
            raise ValueError(f"matern nu must be one of 0.5, 1.5, 2.5, got {nu!r}")
        q = math.sqrt(2.0 * float(nu)) * torch.sqrt(r2) / lengthscale
        if nu == 0.5:
            poly = torch.ones_like(q)
        elif nu == 1.5:
            poly = 1.0 + q
        else:
            poly = 1.0 + q + q * q / 3.0
        k = poly * torch.exp(-q)
    else:
        exponent = float(exponent)
        if not (exponent > 0 and math.isfinite(exponent)):
            raise ValueError(f"power exponent must be a finite number > 0, got {exponent!r}")
        k = (1.0 + r2 / lengthscale**2) ** (-0.5 * exponent)
    k = variance * k
    k.diagonal().add_(jitter)
    return k


# ---- shared machinery ----------------------------------------------------------------------
def _as_f64(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _sym_eigh(cov: torch.Tensor, name: str = "cov") -> tuple[torch.Tensor, torch.Tensor]:
    """``cov = U diag(s) U^T`` with tiny negative eigenvalues (round-off) clipped to 0."""
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {tuple(cov.shape)}")
    if not bool(torch.isfinite(cov).all()):
        raise ValueError(f"{name} has non-finite entries")
    cov = 0.5 * (cov + cov.T)
    s, U = torch.linalg.eigh(cov)
    tol = 1e-9 * max(float(s.abs().max()), 1e-300) if s.numel() else 0.0
    if s.numel() and float(s.min()) < -tol:
        raise ValueError(f"{name} is not positive semi-definite (min eigenvalue {float(s.min()):.3g})")
    return s.clamp_min(0.0), U


def _check_abar_open(abar_t: float) -> float:
    a = float(abar_t)
    if not (0.0 < a <= 1.0):
        raise ValueError(f"abar_t must be in (0, 1], got {abar_t!r}")
    return a


class _EigGaussian:
    """Gaussian over an event of shape ``event_shape``, viewed as ``C`` independent blocks of
    size ``P`` (``C * P = D``) sharing one covariance ``U diag(s) U^T`` and with per-block means
    ``mean[C, P]``. ``GaussianLaw`` is the case C = 1."""

    event_shape: tuple[int, ...]

    def _setup(self, mean: torch.Tensor, s: torch.Tensor, U: torch.Tensor,
               event_shape: tuple[int, ...]) -> None:
        self._mean = mean.contiguous()        # [C, P]
        self._s = s.contiguous()              # [P]
        self._U = U.contiguous()              # [P, P]
        self.event_shape = tuple(int(v) for v in event_shape)
        self._C, self._P = mean.shape
        self._dev_cache: dict[Any, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def dim(self) -> int:
        """Length D of the flattened event vector."""
        return self._C * self._P

    @property
    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues ``s`` of the (per-block) covariance, ascending, clipped at 0."""
        return self._s

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if device.type == "cpu":
            return self._mean, self._s, self._U
        key = str(device)
        if key not in self._dev_cache:
            self._dev_cache[key] = (self._mean.to(device), self._s.to(device), self._U.to(device))
        return self._dev_cache[key]

    def _flat(self, x: Any) -> tuple[torch.Tensor, tuple[int, ...], Any]:
        """x [..., *event_shape] -> float64 [B, C, P]; also the batch shape and a restorer."""
        is_np = isinstance(x, np.ndarray)
        xt = torch.from_numpy(x) if is_np else x
        if not isinstance(xt, torch.Tensor):
            raise TypeError(f"x_t must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
        k = len(self.event_shape)
        if tuple(xt.shape[xt.ndim - k:]) != self.event_shape or xt.ndim < k:
            raise ValueError(f"x_t must have shape [..., {', '.join(map(str, self.event_shape))}], "
                             f"got {tuple(xt.shape)}")
        batch = tuple(xt.shape[: xt.ndim - k])
        dtype = xt.dtype if xt.is_floating_point() else torch.float64

        def restore(y: torch.Tensor) -> Any:
            y = y.reshape(*batch, *self.event_shape).to(dtype)
            return y.numpy() if is_np else y

        return xt.detach().to(torch.float64).reshape(-1, self.dim), batch, restore

    def _eps_logpdf(self, x64: torch.Tensor, a: float, want_logpdf: bool
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x64 [B, D] -> exact E[eps | x_t] ([B, D], float64) and
        log N(x_t; sqrt(a) mu, a Sigma + (1-a) I) ([B])."""
        mean, s, U = self._on(x64.device)
        B = x64.shape[0]
        y = x64.reshape(B, self._C, self._P) - math.sqrt(a) * mean
        z = y @ U                                  # rows: U^T y
        d = a * s + (1.0 - a)                      # eigenvalues of a Sigma + (1-a) I
        if a >= 1.0:
            eps = torch.zeros_like(x64)
        else:
            eps = ((z * (math.sqrt(1.0 - a) / d)) @ U.T).reshape(B, self.dim)
        logp = None
        if want_logpdf:
            if bool((d <= 0).any()):
                raise ValueError("log density undefined: singular covariance at abar_t = 1")
            maha = (z * z / d).sum(dim=(-1, -2))
            logp = -0.5 * (maha + self._C * torch.log(d).sum() + self.dim * _LOG_2PI)
        return eps, logp

    def eps(self, x_t: Any, abar_t: float) -> Any:
        r"""Exact ``E[eps | x_t] = U diag(sqrt(1-a)/(a s + 1 - a)) U^T (x_t - sqrt(a) mu)``.

        ``x_t``: ``[..., *event_shape]`` (any leading batch dims), float32/float64, torch or
        numpy; returns the same kind, shape and dtype. Zero eigenvalues are fine for a < 1; at
        a = 1 the noise is independent of x_t and the answer is 0.
        """
        a = _check_abar_open(abar_t)
        x64, _, restore = self._flat(x_t)
        e, _ = self._eps_logpdf(x64, a, False)
        return restore(e)

    def x0(self, x_t: Any, abar_t: float) -> Any:
        """Exact ``E[x_0 | x_t] = (x_t - sqrt(1-a) E[eps|x_t]) / sqrt(a)`` (Tweedie)."""
        a = _check_abar_open(abar_t)
        x64, _, restore = self._flat(x_t)
        e, _ = self._eps_logpdf(x64, a, False)
        return restore((x64 - math.sqrt(1.0 - a) * e) / math.sqrt(a))

    def log_marginal(self, x_t: Any, abar_t: float) -> torch.Tensor:
        """``log N(x_t; sqrt(a) mu, a Sigma + (1-a) I)`` per batch element (float64)."""
        a = _check_abar_open(abar_t)
        x64, batch, _ = self._flat(x_t)
        _, lp = self._eps_logpdf(x64, a, True)
        return lp.reshape(batch)

    def sample(self, n: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``n`` draws ``mu + R z``, shape ``[n, *event_shape]``, with ``R = U diag(sqrt(s))
        U^T`` the symmetric square root of the covariance. ``R`` is unique (it does not depend
        on the signs, or the basis within a repeated eigenvalue, that the LAPACK in use picks for
        the eigenvectors), so a seed gives the same draws on every machine up to rounding."""
        n = int(n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        z = torch.randn(n, self._C, self._P, generator=generator, dtype=torch.float64)
        if getattr(self, "_root", None) is None:
            self._root = (self._U * self._s.sqrt().unsqueeze(-2)) @ self._U.transpose(-1, -2)
        x = self._mean + z @ self._root
        return x.reshape(n, *self.event_shape).to(dtype)

    @property
    def mean_vector(self) -> torch.Tensor:
        """Mean of the flattened event vector, ``[D]`` float64."""
        return self._mean.reshape(-1).clone()


# ---- public laws ---------------------------------------------------------------------------
class GaussianLaw(_EigGaussian):
    """Plain Gaussian ``N(mean_vector, covariance)`` on a flattened vector of length D.

    ``event_shape`` (default ``(D,)``) only sets the shape of ``sample`` and of the ``x_t`` that
    ``eps`` accepts (``[..., *event_shape]``). The covariance may be singular (zero eigenvalues,
    e.g. known entries of a conditional); ``eps`` handles it through the eigendecomposition.
    """

    def __init__(self, mean_vector: Any, covariance: Any, event_shape: Sequence[int] | None = None):
        mu = _as_f64(mean_vector).reshape(-1)
        cov = _as_f64(covariance)
        D = mu.numel()
        if tuple(cov.shape) != (D, D):
            raise ValueError(f"covariance must be [{D}, {D}] to match mean_vector, got {tuple(cov.shape)}")
        event_shape = (D,) if event_shape is None else tuple(int(v) for v in event_shape)
        if math.prod(event_shape) != D:
            raise ValueError(f"event_shape {event_shape} does not hold {D} entries")
        s, U = _sym_eigh(cov, "covariance")
        self._cov = 0.5 * (cov + cov.T)
        self._setup(mu.reshape(1, D), s, U, event_shape)

    @property
    def covariance(self) -> torch.Tensor:
        """``[D, D]`` float64."""
        return self._cov.clone()


class GaussianPrior(_EigGaussian):
    """Gaussian field with C independent channels sharing one spatial covariance.

    ``x ~`` law on ``[C, *spatial]``: channel c is ``N(mean[c], cov)`` with ``cov`` ``[P, P]``,
    ``P = prod(spatial)``. ``mean`` is ``None``/scalar (0 / constant), or a tensor
    broadcastable to ``[C, *spatial]``. The spatial shape comes from ``spatial_shape``, else
    from ``mean`` (``mean.shape[1:]`` or ``mean.shape`` when it has P entries), else ``(P,)``.
    """

    def __init__(self, mean: Any = None, cov: Any = None, channels: int = 1,
                 spatial_shape: Sequence[int] | int | None = None):
        if cov is None:
            raise ValueError("GaussianPrior needs a covariance (see field_covariance)")
        cov = _as_f64(cov)
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
            raise ValueError(f"cov must be a square [P, P] matrix, got shape {tuple(cov.shape)}")
        P = cov.shape[0]
        C = int(channels)
        if C < 1:
            raise ValueError(f"channels must be >= 1, got {channels!r}")
        m = None if mean is None else _as_f64(mean)
        if spatial_shape is not None:
            spatial = _spatial_shape(spatial_shape)
        elif m is not None and m.ndim >= 2 and math.prod(m.shape[1:]) == P:
            spatial = tuple(m.shape[1:])
        elif m is not None and m.ndim >= 1 and math.prod(m.shape) == P:
            spatial = tuple(m.shape)
        else:
            spatial = (P,)
        if math.prod(spatial) != P:
            raise ValueError(f"spatial_shape {spatial} does not match cov of size {P}")
        event = (C, *spatial)
        if m is None:
            m = torch.zeros(event, dtype=torch.float64)
        try:
            m = torch.broadcast_to(m, event).clone()
        except RuntimeError as e:
            raise ValueError(f"mean of shape {tuple(m.shape)} does not broadcast to {event}") from e
        s, U = _sym_eigh(cov, "cov")
        self._spatial_cov = 0.5 * (cov + cov.T)
        self.channels = C
        self.spatial_shape = spatial
        self._setup(m.reshape(C, P), s, U, event)

    @classmethod
    def field(cls, kernel: str, spatial_shape: int | Sequence[int], channels: int = 1,
              mean: Any = None, **kernel_kw: Any) -> "GaussianPrior":
        """Shortcut: ``GaussianPrior(mean, field_covariance(kernel, spatial_shape, **kw), channels)``."""
        spatial = _spatial_shape(spatial_shape)
        return cls(mean, field_covariance(kernel, spatial, **kernel_kw), channels, spatial)

    @property
    def spatial_covariance(self) -> torch.Tensor:
        """``[P, P]`` float64, shared by all channels."""
        return self._spatial_cov.clone()

    @property
    def covariance(self) -> torch.Tensor:
        """Covariance of the flattened ``[C*P]`` vector: block diagonal, C copies of ``[P, P]``."""
        return torch.block_diag(*([self._spatial_cov] * self._C))


class GaussianMixturePrior:
    r"""``sum_k w_k N(mu_k, Sigma_k)`` over components with one event shape.

    Exact ``E[eps | x_t] = sum_k r_k(x_t) E_k[eps | x_t]`` with
    ``log r_k = log w_k + log N(x_t; sqrt(a) mu_k, a Sigma_k + (1-a) I) - logsumexp(.)``; each log
    density uses the component's eigendecomposition (``log det = C sum log(a s + 1 - a)``,
    Mahalanobis ``sum (U^T y)^2 / (a s + 1 - a)``). Components may be :class:`GaussianPrior` or
    :class:`GaussianLaw`; weights are normalized (default equal).
    """

    def __init__(self, components: Sequence[_EigGaussian], weights: Sequence[float] | None = None):
        comps = list(components)
        if not comps:
            raise ValueError("GaussianMixturePrior needs at least one component")
        for c in comps:
            if not isinstance(c, _EigGaussian):
                raise TypeError(f"components must be GaussianPrior/GaussianLaw, got {type(c).__name__}")
        shape = comps[0].event_shape
        if any(c.event_shape != shape for c in comps):
            raise ValueError(f"all components must share one event shape, got {[c.event_shape for c in comps]}")
        w = torch.full((len(comps),), 1.0 / len(comps), dtype=torch.float64) if weights is None \
            else _as_f64(weights).reshape(-1)
        if w.numel() != len(comps):
            raise ValueError(f"{w.numel()} weights for {len(comps)} components")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError("weights must be finite, >= 0 and not all 0")
        self.components = comps
        self.weights = w / w.sum()
        self.event_shape = shape

    @property
    def dim(self) -> int:
        return self.components[0].dim

    def responsibilities(self, x_t: Any, abar_t: float) -> torch.Tensor:
        """``r_k(x_t)``, float64 ``[*batch, K]``."""
        a = _check_abar_open(abar_t)
        x64, batch, _ = self.components[0]._flat(x_t)
        _, r = self._eps_resp(x64, a)
        return r.reshape(*batch, len(self.components))

    def _eps_resp(self, x64: torch.Tensor, a: float) -> tuple[torch.Tensor, torch.Tensor]:
        eps_list, logs = [], []
        for c, w in zip(self.components, self.weights.tolist()):
            e, lp = c._eps_logpdf(x64, a, True)
            eps_list.append(e)
            logs.append(lp + (math.log(w) if w > 0 else -math.inf))
        logr = torch.stack(logs, dim=-1)
        r = torch.softmax(logr, dim=-1)          # stable: subtracts the max
        eps = sum(r[:, k, None] * e for k, e in enumerate(eps_list))
        return eps, r

    def eps(self, x_t: Any, abar_t: float) -> Any:
        """Exact ``E[eps | x_t]``; same input conventions as :meth:`GaussianPrior.eps`."""
        a = _check_abar_open(abar_t)
        x64, _, restore = self.components[0]._flat(x_t)
        if a >= 1.0:
            return restore(torch.zeros_like(x64))
        e, _ = self._eps_resp(x64, a)
        return restore(e)

    def x0(self, x_t: Any, abar_t: float) -> Any:
        """Exact ``E[x_0 | x_t]`` via Tweedie."""
        a = _check_abar_open(abar_t)
        x64, _, restore = self.components[0]._flat(x_t)
        e = self._eps_resp(x64, a)[0] if a < 1.0 else torch.zeros_like(x64)
        return restore((x64 - math.sqrt(1.0 - a) * e) / math.sqrt(a))

    def sample(self, n: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``n`` draws ``[n, *event_shape]``: a component index ~ weights, then its Gaussian."""
        n = int(n)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator) if n else \
            torch.zeros(0, dtype=torch.long)
        out = torch.empty(n, *self.event_shape, dtype=torch.float64)
        for j, c in enumerate(self.components):
            idx = (k == j).nonzero().reshape(-1)
            if idx.numel():
                out[idx] = c.sample(idx.numel(), generator)
        return out.to(dtype)

    @property
    def mean_vector(self) -> torch.Tensor:
        """Mixture mean ``sum_k w_k mu_k`` of the flattened vector."""
        return sum(w * c.mean_vector for c, w in zip(self.components, self.weights.tolist()))

    @property
    def covariance(self) -> torch.Tensor:
        """Mixture covariance ``sum_k w_k (Sigma_k + mu_k mu_k^T) - m m^T``."""
        m = self.mean_vector
        acc = sum(w * (c.covariance + torch.outer(c.mean_vector, c.mean_vector))
                  for c, w in zip(self.components, self.weights.tolist()))
        return acc - torch.outer(m, m)


def _mixture_parts(prior: Any) -> list[tuple[_EigGaussian, float]]:
    if isinstance(prior, GaussianMixturePrior):
        return list(zip(prior.components, prior.weights.tolist()))
    if isinstance(prior, _EigGaussian):
        return [(prior, 1.0)]
    raise TypeError(f"priors must be GaussianPrior, GaussianLaw or GaussianMixturePrior, got {type(prior).__name__}")


class PriorDenoiser:
    """A "denoiser" with the exact score of per-prompt priors.

    ``out = denoiser(x_t [B, *event_shape], t, cond)`` with ``cond`` a sequence of B prompt keys
    (a single key or ``None`` applies to the whole batch). A key ``None`` means unconditional:
    the equal-weight mixture of all prompts' priors (mixtures are flattened into it). With
    ``a = abar[t]`` it returns, by ``prediction_type``:

    * ``"epsilon"``: ``E[eps | x_t]``;
    * ``"sample"``: ``E[x_0 | x_t] = (x_t - sqrt(1-a) eps) / sqrt(a)``;
    * ``"v_prediction"``: ``sqrt(a) eps - sqrt(1-a) x_0``.

    The output has x_t's dtype and kind. ``denoiser.abar`` is the float64 abar table.
    """

    PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")

    def __init__(self, priors: Mapping[Any, Any], abar: Any, prediction_type: str = "epsilon"):
        if not priors:
            raise ValueError("PriorDenoiser needs at least one prior")
        if None in priors:
            raise ValueError("the key None is reserved for the unconditional mixture")
        if prediction_type not in self.PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {self.PREDICTION_TYPES}, got {prediction_type!r}")
        self.priors = dict(priors)
        shapes = {p.event_shape for p in self.priors.values()}
        if len(shapes) != 1:
            raise ValueError(f"all priors must share one event shape, got {sorted(shapes)}")
        self.event_shape = shapes.pop()
        self.abar = _as_f64(abar).reshape(-1)
        if not bool(((self.abar > 0) & (self.abar <= 1)).all()):
            raise ValueError("abar entries must lie in (0, 1]")
        self.prediction_type = prediction_type
        parts: list[tuple[_EigGaussian, float]] = []
        for p in self.priors.values():
            parts += [(c, w / len(self.priors)) for c, w in _mixture_parts(p)]
        self.unconditional = parts[0][0] if len(parts) == 1 else \
            GaussianMixturePrior([c for c, _ in parts], [w for _, w in parts])

    def law(self, key: Any) -> Any:
        """The prior used for ``key`` (``None``: the unconditional mixture)."""
        if key is None:
            return self.unconditional
        try:
            return self.priors[key]
        except (KeyError, TypeError):
            raise KeyError(f"unknown prompt key {key!r}; known: {list(self.priors)}") from None

    def __call__(self, x_t: Any, t: Any, cond: Any = None) -> Any:
        if not float(t).is_integer():
            raise ValueError(f"exact priors take integer timesteps, got t={t} (use a scheduler "
                             "with integer timesteps, e.g. timestep_spacing='leading')")
        t = int(t)
        if not 0 <= t < self.abar.numel():
            raise ValueError(f"t must be in [0, {self.abar.numel()}), got {t}")
        a = float(self.abar[t])
        is_np = isinstance(x_t, np.ndarray)
        x = torch.from_numpy(x_t) if is_np else x_t
        k = len(self.event_shape)
        if x.ndim != k + 1 or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x_t must be [B, {', '.join(map(str, self.event_shape))}], got {tuple(x.shape)}")
        B = x.shape[0]
        keys = [cond] * B if cond is None or isinstance(cond, (str, bytes)) else list(cond)
        if len(keys) != B:
            raise ValueError(f"cond has {len(keys)} keys for a batch of {B}")
        x64 = x.detach().to(torch.float64)
        eps = torch.empty_like(x64)
        groups: dict[Any, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        for key, idx in groups.items():
            law = self.law(key)
            ii = torch.tensor(idx, dtype=torch.long, device=x64.device)
            eps[ii] = law.eps(x64[ii], a)
        if self.prediction_type == "epsilon":
            out = eps
        else:
            x0 = (x64 - math.sqrt(1.0 - a) * eps) / math.sqrt(a)
            out = x0 if self.prediction_type == "sample" else math.sqrt(a) * eps - math.sqrt(1.0 - a) * x0
        out = out.to(x.dtype if x.is_floating_point() else torch.float64)
        return out.numpy() if is_np else out


# ---- exact target laws ---------------------------------------------------------------------
def _law_parts(prior: Any, name: str) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    if not (hasattr(prior, "mean_vector") and hasattr(prior, "covariance")):
        raise TypeError(f"{name} must have mean_vector and covariance (a GaussianPrior or GaussianLaw)")
    if isinstance(prior, GaussianMixturePrior):
        raise TypeError(f"{name}: a mixture is not Gaussian; pass a single Gaussian")
    mu, cov = _as_f64(prior.mean_vector).reshape(-1), _as_f64(prior.covariance)
    shape = tuple(getattr(prior, "event_shape", (mu.numel(),)))
    return mu, cov, shape


def _sym_inv(cov: torch.Tensor, name: str) -> torch.Tensor:
    s, U = _sym_eigh(cov, name)
    if float(s.min()) <= 0:
        raise ValueError(f"{name} is singular; a product needs invertible covariances")
    return (U / s) @ U.T


def _event_mask(mask: Any, shape: tuple[int, ...], name: str) -> torch.Tensor:
    m = _as_f64(mask)
    try:
        m = torch.broadcast_to(m, shape)
    except RuntimeError:
        D = math.prod(shape)
        if m.numel() == D:
            m = m.reshape(shape)
        else:
            raise ValueError(f"{name} of shape {tuple(m.shape)} does not broadcast to {shape}") from None
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError(f"{name} must be binary (0/1)")
    return m.reshape(-1)


def gaussian_product(prior_a: Any, prior_b: Any, perm: Any) -> GaussianLaw:
    r"""Law proportional to ``p_A(x) p_B(P x)``, ``(P x)[k] = x[perm[k]]`` on the flattened vector.

    Since ``P`` is a permutation (``P^T = P^{-1}``), ``p_B(P x) ∝ N(x; P^T mu_B, P^T Sigma_B P)``:

        Lambda = Sigma_A^{-1} + P^T Sigma_B^{-1} P,
        mean   = Lambda^{-1} (Sigma_A^{-1} mu_A + P^T Sigma_B^{-1} mu_B),  cov = Lambda^{-1}.

    (Ambiguous images: view 2 sees ``f_2(x) = P x``.) Both covariances must be invertible.
    """
    mu_a, cov_a, shape = _law_parts(prior_a, "prior_a")
    mu_b, cov_b, _ = _law_parts(prior_b, "prior_b")
    D = mu_a.numel()
    if mu_b.numel() != D:
        raise ValueError(f"prior_a and prior_b have different sizes ({D} vs {mu_b.numel()})")
    p = torch.as_tensor(np.asarray(perm, dtype=np.int64)).reshape(-1)
    if p.numel() != D or not torch.equal(torch.sort(p).values, torch.arange(D)):
        raise ValueError(f"perm must be a permutation of range({D})")
    inv_p = torch.empty_like(p)
    inv_p[p] = torch.arange(D)
    prec_a = _sym_inv(cov_a, "prior_a covariance")
    prec_b = _sym_inv(cov_b, "prior_b covariance")
    # (P^T M P)[i, j] = M[inv_p[i], inv_p[j]];  (P^T v)[i] = v[inv_p[i]]
    prec_b_pulled = prec_b[inv_p][:, inv_p]
    lam = prec_a + prec_b_pulled
    cov = _sym_inv(lam, "product precision")
    h = prec_a @ mu_a + (prec_b @ mu_b)[inv_p]
    return GaussianLaw(cov @ h, 0.5 * (cov + cov.T), shape)


def gaussian_conditional(prior: Any, known_mask: Any, known_values: Any) -> GaussianLaw:
    r"""Law of the unknown part given the known part, as a full-size Gaussian.

    With ``k`` the known entries (``known_mask`` = 1, broadcast to the event shape) and ``u`` the
    rest:

        mean_u = mu_u + Sigma_uk Sigma_kk^{-1} (v_k - mu_k),
        cov_uu = Sigma_uu - Sigma_uk Sigma_kk^{-1} Sigma_ku,

    and on the known entries mean = the given values, zero (co)variance. ``known_values`` has the
    event shape (or broadcasts to it / has D entries); only its known entries are read.
    """
    mu, cov, shape = _law_parts(prior, "prior")
    D = mu.numel()
    m = _event_mask(known_mask, shape, "known_mask").bool()
    v = _as_f64(known_values)
    try:
        v = torch.broadcast_to(v, shape).reshape(-1)
    except RuntimeError:
        if v.numel() != D:
            raise ValueError(f"known_values of shape {tuple(v.shape)} does not fit {shape}") from None
        v = v.reshape(-1)
    k, u = m.nonzero().reshape(-1), (~m).nonzero().reshape(-1)
    mean = mu.clone()
    out_cov = torch.zeros(D, D, dtype=torch.float64)
    mean[k] = v[k]
    if u.numel():
        if k.numel():
            S_kk = cov[k][:, k]
            S_uk = cov[u][:, k]
            try:
                L = torch.linalg.cholesky(0.5 * (S_kk + S_kk.T))
                A = torch.cholesky_solve(S_uk.T, L).T            # Sigma_uk Sigma_kk^{-1}
            except RuntimeError:
                A = S_uk @ torch.linalg.pinv(S_kk, hermitian=True)
            mean[u] = mu[u] + A @ (v[k] - mu[k])
            c_uu = cov[u][:, u] - A @ S_uk.T
        else:
            c_uu = cov[u][:, u]
        out_cov[u.unsqueeze(1), u.unsqueeze(0)] = 0.5 * (c_uu + c_uu.T)
    return GaussianLaw(mean, out_cov, shape)


def masked_composition(prior_bg: Any, prior_obj: Any, mask: Any) -> GaussianLaw:
    r"""Law of ``x = (1 - M) x_bg + M x_obj`` with independent ``x_bg``, ``x_obj``.

    ``M`` is binary over the spatial grid (shape ``spatial``, ``[1, *spatial]`` or the full event
    shape; broadcast over channels). With ``D_1 = diag(1 - m)``, ``D_2 = diag(m)``:

        mean = (1 - m) * mu_bg + m * mu_obj,   cov = D_1 Sigma_bg D_1 + D_2 Sigma_obj D_2.
    """
    mu_b, cov_b, shape = _law_parts(prior_bg, "prior_bg")
    mu_o, cov_o, shape_o = _law_parts(prior_obj, "prior_obj")
    if mu_b.numel() != mu_o.numel():
        raise ValueError(f"prior_bg and prior_obj have different sizes ({mu_b.numel()} vs {mu_o.numel()})")
    m = _event_mask(mask, shape, "mask")
    n = 1.0 - m
    mean = n * mu_b + m * mu_o
    cov = n[:, None] * cov_b * n[None, :] + m[:, None] * cov_o * m[None, :]
    return GaussianLaw(mean, cov, shape)


def coherent_composition(prior_bg: Any, prior_obj: Any, mask: Any) -> GaussianLaw:
    r"""Law of a background drawn from ``prior_bg`` outside the mask with the object region drawn
    from ``prior_obj`` *given* that background (the object made to fit its surroundings):

        x_o ~ p_bg(x_o),        x_m | x_o ~ p_obj(x_m | x_o),

    with ``o`` the pixels outside (``M = 0``) and ``m`` inside. With ``A = S^obj_mo
    (S^obj_oo)^{-1}``: mean ``(mu^bg_o, mu^obj_m + A (mu^bg_o - mu^obj_o))``, covariance
    ``[[S^bg_oo, S^bg_oo A^T], [A S^bg_oo, A S^bg_oo A^T + S^obj_mm - A S^obj_om]]``.
    Unlike :func:`masked_composition` (independent samples pasted together, which a final paste
    attains exactly), this law asks the object to continue the background across the boundary.
    """
    mu_b, cov_b, shape = _law_parts(prior_bg, "prior_bg")
    mu_o, cov_o, _ = _law_parts(prior_obj, "prior_obj")
    if mu_b.numel() != mu_o.numel():
        raise ValueError(f"prior_bg and prior_obj have different sizes ({mu_b.numel()} vs {mu_o.numel()})")
    inside = _event_mask(mask, shape, "mask").bool()
    m, o = inside.nonzero().reshape(-1), (~inside).nonzero().reshape(-1)
    A = torch.linalg.solve(cov_o[o][:, o], cov_o[o][:, m]).T            # S_mo S_oo^-1
    mean = mu_b.clone()
    mean[m] = mu_o[m] + A @ (mu_b[o] - mu_o[o])
    cov = torch.zeros_like(cov_b)
    s_oo = cov_b[o][:, o]
    cov[o[:, None], o[None, :]] = s_oo
    cross = A @ s_oo                                                    # Cov(x_m, x_o)
    cov[m[:, None], o[None, :]] = cross
    cov[o[:, None], m[None, :]] = cross.T
    cond = cov_o[m][:, m] - A @ cov_o[o][:, m]
    cov[m[:, None], m[None, :]] = A @ s_oo @ A.T + 0.5 * (cond + cond.T)
    return GaussianLaw(mean, cov, shape)


class FieldDenoiser:
    """Exact-score denoiser of a stationary field at *any* window size.

    ``prompts`` maps a prompt key to the keyword arguments of :meth:`GaussianPrior.field`
    (kernel, lengthscale, mean, ...) without the spatial shape, which comes from each input:
    a stationary field's law on any window is the kernel restricted to it, so one denoiser
    serves windows and their overlaps (needed by the ``collage`` strategy). Priors are built
    once per (prompt, shape) and cached.
    """

    def __init__(self, prompts: Mapping[Any, Mapping[str, Any]], abar: Any, channels: int = 1,
                 prediction_type: str = "epsilon"):
        if not prompts:
            raise ValueError("FieldDenoiser needs at least one prompt")
        self.prompts = {k: dict(v) for k, v in prompts.items()}
        self.channels = int(channels)
        self.abar = _as_f64(abar).reshape(-1)
        self.prediction_type = prediction_type
        self._cache: dict[tuple, PriorDenoiser] = {}

    def prior(self, key: Any, spatial_shape: Sequence[int]) -> GaussianPrior:
        kw = dict(self.prompts[key])
        kernel = kw.pop("kernel", "se")
        return GaussianPrior.field(kernel, tuple(spatial_shape), channels=self.channels, **kw)

    def __call__(self, x_t: Any, t: Any, cond: Any = None) -> Any:
        spatial = tuple(x_t.shape[2:])
        den = self._cache.get(spatial)
        if den is None:
            den = PriorDenoiser({k: self.prior(k, spatial) for k in self.prompts}, self.abar,
                                self.prediction_type)
            self._cache[spatial] = den
        return den(x_t, t, cond)


class MixtureFieldDenoiser(FieldDenoiser):
    """Exact-score denoiser of a *mixture* of stationary fields at any window size.

    ``prompts`` maps a prompt key to a list of ``(field kwargs, weight)`` components (the kwargs
    of :meth:`GaussianPrior.field` without the spatial shape). The law of a window of the
    mixture ``sum_k w_k N(mu_k, Sigma_k)`` of the canvas is the mixture of the components'
    window laws with the same weights (a marginal of a mixture is the mixture of marginals), so
    one denoiser serves windows, overlaps and the whole canvas.
    """

    def __init__(self, prompts: Mapping[Any, Sequence[tuple[Mapping[str, Any], float]]], abar: Any,
                 channels: int = 1, prediction_type: str = "epsilon"):
        if not prompts:
            raise ValueError("MixtureFieldDenoiser needs at least one prompt")
        for k, comps in prompts.items():
            if not comps:
                raise ValueError(f"prompt {k!r} has no components")
        self.components = {k: [(dict(kw), float(w)) for kw, w in v] for k, v in prompts.items()}
        super().__init__({k: v[0][0] for k, v in self.components.items()}, abar, channels,
                         prediction_type)

    def prior(self, key: Any, spatial_shape: Sequence[int]) -> GaussianMixturePrior:
        comps, weights = [], []
        for kw, w in self.components[key]:
            kw = dict(kw)
            kernel = kw.pop("kernel", "se")
            comps.append(GaussianPrior.field(kernel, tuple(spatial_shape), channels=self.channels, **kw))
            weights.append(w)
        return GaussianMixturePrior(comps, weights)
