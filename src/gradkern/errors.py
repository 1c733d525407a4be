"""Exceptions of gradkern's own (bad input raises the built-in TypeError / ValueError)."""


class TrainingDiverged(FloatingPointError):
    """A step produced a non-finite loss or gradient norm; it was not applied."""
