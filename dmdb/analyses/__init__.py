"""Analyses of fitted datamodels, as plain functions returning polars DataFrames.

Every function takes the Database first and `fit=` (default: the latest fit). Counterfactuals use
the full train set as the baseline mask; see each module's docstring for the exact definitions,
which the SQL table macros in sql/30_analyses.sql share.
"""

from .brittleness import DEFAULT_THRESHOLDS, brittleness, brittleness_summary
from .counterfactual import counterfactual, counterfactual_all, removal_set
from .embeddings import embed, embedding_summary, target_embeddings, variance_shares
from .leakage import leakage, pixel_distance
from .similar import nearest_targets, top_weights
from .weights import FitInfo, FitWeights, clear_cache, load_weights, resolve_fit

__all__ = [
    "DEFAULT_THRESHOLDS",
    "FitInfo",
    "FitWeights",
    "brittleness",
    "brittleness_summary",
    "clear_cache",
    "counterfactual",
    "counterfactual_all",
    "embed",
    "embedding_summary",
    "leakage",
    "load_weights",
    "nearest_targets",
    "pixel_distance",
    "removal_set",
    "resolve_fit",
    "target_embeddings",
    "top_weights",
    "variance_shares",
]
