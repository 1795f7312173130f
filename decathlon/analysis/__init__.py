"""Analyses over a suite: Chu et al.'s fine-tuning best practices, linked to SpotTune's policies.

- :mod:`decathlon.analysis.distance`: source-target domain distances (cosine, MMD², linear and CNN domain
  classifiers) and their rank agreement;
- :mod:`decathlon.analysis.sweep`: the data-size sweep of freeze / fine-tune / re-initialise variants as
  engine jobs;
- :mod:`decathlon.analysis.recommend`: tune-minus-freeze gaps, the recommendation matrix and its figure;
- :mod:`decathlon.analysis.link`: distance against the fraction of blocks SpotTune fine-tunes;
- :mod:`decathlon.analysis.best_practices`: ``run_all.py --analysis best-practices`` (:func:`run_analysis`).

See ``docs/analysis.md``.
"""

from decathlon.analysis.best_practices import (
    ANALYSES,
    AnalysisSettings,
    check_analysis,
    describe_analysis,
    parse_analysis,
    run_analysis,
)
from decathlon.analysis.distance import (
    cnn_domain_accuracy,
    cosine_distance,
    linear_domain_accuracy,
    median_bandwidth,
    mmd2,
    rank_agreement,
)
from decathlon.analysis.recommend import decide, recommendation_matrix, tune_freeze_gaps
from decathlon.analysis.sweep import VARIANTS, plan_sweep, sweep_subset

__all__ = [
    "ANALYSES", "AnalysisSettings", "VARIANTS", "check_analysis", "cnn_domain_accuracy", "cosine_distance",
    "decide", "describe_analysis",
    "linear_domain_accuracy", "median_bandwidth", "mmd2", "parse_analysis", "plan_sweep", "rank_agreement",
    "recommendation_matrix", "run_analysis", "sweep_subset", "tune_freeze_gaps",
]
