"""The SpotTune methods (registered through ``METHODS``)."""

METHODS: tuple = ()
