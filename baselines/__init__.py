"""Baselines of the SpotTune paper, one small module each.

Add a baseline: write ``baselines/<name>.py`` with a ``decathlon.methods.Method`` subclass and list an
instance in ``METHODS`` below.
"""

from baselines import (
    adapters,
    bn_adapt,
    dan,
    feature_extractor,
    finetune,
    l2sp,
    last_k,
    lwf,
    piggyback,
    progressive,
    reinit,
    stochastic,
)

METHODS: tuple = (
    *finetune.METHODS,  # finetune, scratch, finetune-resnet101
    *feature_extractor.METHODS,
    *stochastic.METHODS,  # stochastic-finetune, random-policy
    *last_k.METHODS,  # finetune-last-1/2/3
    *l2sp.METHODS,
    *progressive.METHODS,
    *bn_adapt.METHODS,
    *lwf.METHODS,
    *piggyback.METHODS,
    *dan.METHODS,
    *adapters.METHODS,  # series-adapters, parallel-adapters
    *reinit.METHODS,  # reinit-1/3-tune/freeze: Chu et al.'s FT/F(rest)R(top k), analysis only
)
