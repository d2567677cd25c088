"""Evaluation at paper scale: TOML config -> manifest of generated images -> metric tables and
plots; resumable, sharded with accelerate (docs/evaluation.md)."""
from syncsde.eval.config import EvalConfig, EvalConfigError, load_config
from syncsde.eval.runner import run_eval

__all__ = ["EvalConfig", "EvalConfigError", "load_config", "run_eval"]
