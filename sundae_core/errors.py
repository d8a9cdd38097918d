"""Exceptions with messages meant for users: each names the thing that is wrong and the fix."""


class SundaeError(Exception):
    """Base of every error this project raises on purpose (CLIs print it as one line)."""


class ConfigError(SundaeError):
    """A config file or override is malformed: unknown key, wrong type, bad value."""


class CheckpointError(SundaeError):
    """A checkpoint file is missing, corrupt, of the wrong kind, or does not match the model."""


class InputError(SundaeError):
    """A tensor or value handed to a primitive is unusable (shape, range, label out of range)."""


class MissingAssetError(SundaeError):
    """Weights or data that must be installed offline are not present."""
