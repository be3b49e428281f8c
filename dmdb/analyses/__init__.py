"""Analyses of fitted datamodels, as plain functions returning polars DataFrames.

Every function takes the Database first and `fit=` (default: the latest fit). Counterfactuals use
the full train set as the baseline mask; see each module's docstring for the exact definitions,
which the SQL table macros in sql/30_analyses.sql share. `verification` checks a fit's
counterfactual predictions against models retrained without the removed examples
(`plan_counterfactuals` lists them, for your own training code to train); any fit can be checked
on runs another fit planned (`compare_verifications`: every fit on the same runs).
"""

from .brittleness import DEFAULT_THRESHOLDS, brittleness, brittleness_summary
from .counterfactual import counterfactual, counterfactual_all, removal_set
from .embeddings import embed, embedding_summary, target_embeddings, variance_shares
from .leakage import leakage, pixel_distance
from .similar import nearest_targets, top_weights
from .verification import (CounterfactualPlan, Verification, compare_verifications, counterfactual_runs,
                           full_set_margins, plan_counterfactuals, planning_fits, verification)
from .weights import FitInfo, FitWeights, clear_cache, load_weights, resolve_fit

__all__ = [
    "CounterfactualPlan",
    "DEFAULT_THRESHOLDS",
    "FitInfo",
    "FitWeights",
    "Verification",
    "brittleness",
    "brittleness_summary",
    "clear_cache",
    "compare_verifications",
    "counterfactual",
    "counterfactual_all",
    "counterfactual_runs",
    "embed",
    "embedding_summary",
    "full_set_margins",
    "leakage",
    "load_weights",
    "nearest_targets",
    "pixel_distance",
    "plan_counterfactuals",
    "planning_fits",
    "removal_set",
    "resolve_fit",
    "target_embeddings",
    "top_weights",
    "variance_shares",
    "verification",
]
