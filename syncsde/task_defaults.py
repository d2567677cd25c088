"""Each task's default strategy, chosen by the benchmarks rather than by name.

``strategy=None`` (the default of every task function) takes the entry below; any name or
strategy object overrides it, and ``authors_compat=True`` always means SyncSDE with the
authors' settings. The evidence for each choice, with the commands that measure it, is in
docs/benchmarks.md, "Task defaults". In short:

- window canvases (``wide``, ``tileable``, ``panorama360``): MultiDiffusion. On the learned
  scenes model it has the lowest crop KID and the most consistent colours of every strategy
  (SyncSDE, the region graph with and without correctors, sequential windows); on the exact
  benchmark it beats SyncSDE on every window and cylinder case. The region graph wins the exact
  benchmark but loses badly on the scenes model, whose scores on overlap-sized crops are not
  the crops' marginal scores (a model trained on one image size).
- ``mask`` and ``edit``: conditional sampling (``inpaint``) with Langevin correctors, 1.33x and
  2x SyncSDE's model inputs per step: 1.6x the oracle on coherent mask composition (SyncSDE
  3.3-3.4x) and 1.95-11x on editing (SyncSDE 8.7-170x, tuned per task 7.4-115x).
- ``ambiguous``: the product of experts (``poe``) with one Langevin move per step (2x
  SyncSDE's model inputs) of snr 0.1: the best reading accuracy on the scenes model (0.917
  against SyncSDE's 0.792; snr 0.3 / 0.5 / 1.0: 0.833 / 0.833 / 0.75) and 2.7-6.9x the oracle
  on rot90/rot180/flips/transpose/skew (SyncSDE 22-45x). Larger steps are closer on the exact
  benchmark (snr 1.0: 0.4-1.5x) but at the stability edge of two experts (snr < 2/N) and worse
  on the learned model.
- ``motion``: SyncSDE, unchanged: no learned motion model is available to check the exact
  benchmark's winner (the chain composition), which calls the model on 30-frame overlaps,
  below the 40 frames MDM is trained on.
"""
from __future__ import annotations

from typing import Any

__all__ = ["TASK_DEFAULTS", "default_strategy"]

TASK_DEFAULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "wide": ("multidiffusion", {}),
    "tileable": ("multidiffusion", {}),
    "panorama360": ("multidiffusion", {}),
    "mask": ("inpaint", {"corrector_steps": 1, "snr": 1.0}),
    "edit": ("inpaint", {"corrector_steps": 3, "snr": 1.0}),
    "ambiguous": ("poe", {"corrector_steps": 1, "snr": 0.1}),
    "motion": ("syncsde", {}),
}


def default_strategy(task: str) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` of ``task``'s default strategy (a copy: safe to change)."""
    if task not in TASK_DEFAULTS:
        raise ValueError(f"no default strategy for task {task!r}; expected one of "
                         f"{sorted(TASK_DEFAULTS)} or pass strategy=")
    name, opts = TASK_DEFAULTS[task]
    return name, dict(opts)
