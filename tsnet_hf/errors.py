"""Exception types raised for bad input.

Every error a user can cause is one of these, with a message of one sentence that says what was
wrong and what to do. Catch `TSNetError` to handle them all.
"""


class TSNetError(Exception):
    """Base class of every error tsnet-hf raises on purpose."""


class InputError(TSNetError, ValueError):
    """A tensor, array or argument has the wrong shape, type, range or value."""


class ConfigError(TSNetError, ValueError):
    """A model configuration (or config.json) is invalid."""


class CheckpointError(TSNetError):
    """A checkpoint folder, file or Hub id cannot be loaded as a TS-Net."""


class VideoError(TSNetError):
    """A video or image file cannot be read or written."""


class DetectionError(TSNetError):
    """Landmark detection found nothing usable (no face, no person)."""


class Cancelled(TSNetError):
    """A run was stopped on purpose: raise it from a `progress` or `preview` callback of
    `RetargetPipeline` to stop the run; its working folder is then deleted."""
