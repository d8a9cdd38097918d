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


MAX_MESSAGE_CHARS = 2000


def one_line(message: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A message as printed by the CLIs: one line of at most about `limit` characters. Runs of
    whitespace become one space; other control characters (an ANSI escape in a workflow title)
    are shown escaped, never sent to the terminal raw; an overlong message (a value quoted from
    a hostile file) keeps its start and says how much was cut. Costs O(limit), whatever the
    message's length."""
    text = str(message)
    cut = max(len(text) - limit, 0)
    text = " ".join(text[:limit].split())
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return f"{text} ... ({cut:,} more characters)" if cut else text
