"""Each task's default strategy, chosen by the benchmarks rather than by name.

``strategy=None`` (the default of every task function) takes the entry below; any name or
strategy object overrides it, and ``authors_compat=True`` always means SyncSDE with the
authors' settings. The evidence for each choice, with the commands that measure it, is in
docs/benchmarks.md, "Task defaults". In short:

- ``wide``: the region graph with its region terms from 30 % of the steps on
  (``regiongraph``, ``start=0.3``; MultiDiffusion's average on the first steps). On the
  learned scenes model it loses no coherence figure to the best peer at CFG 1, 2 and 3 and
  has the straightest horizons at all three (the full region graph over-draws suns, which are
  settled in the first steps, where its overlap terms come from a model that never saw
  overlap-sized inputs); on the exact benchmark it is 2.1-7.3x the oracle where MultiDiffusion
  is 9-26x. Cost: 1.6-2.2x MultiDiffusion's model inputs, 1.7x its wall time.
- ``tileable``, ``panorama360`` (and ``wide_image`` on a wrapped canvas): MultiDiffusion. The
  region graph refuses torus views and circular windows wider than half the canvas, and no
  scenes measurement on a wrapped canvas exists yet; on the exact cylinders MultiDiffusion
  beats SyncSDE on every case.
- ``mask`` and ``edit``: conditional sampling (``inpaint``) with Langevin correctors, 1.33x and
  2x SyncSDE's model inputs per step: 1.6x the oracle on coherent mask composition (SyncSDE
  3.3-3.4x) and 1.8-17x on editing (SyncSDE 11-149x, tuned per task 9.4-99x). The
  ``projection`` strategy given the source image is 1.75-1.85x on the edits at 4x, but on the
  scenes model it read the target attribute right in 15 of 16 edits against inpaint's 16.
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
    "wide": ("regiongraph", {"start": 0.3}),
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
