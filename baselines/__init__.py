"""Baselines of the SpotTune paper, one small module each.

Add a baseline: write ``baselines/<name>.py`` with a ``decathlon.methods.Method`` subclass and list an
instance in ``METHODS`` below.
"""

METHODS: tuple = ()
