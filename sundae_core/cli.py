"""What every command-line entry point shares: one-line errors instead of tracebacks."""

from __future__ import annotations

import sys
from typing import Callable

from .errors import SundaeError


def run_guarded(body: Callable[[], int | None]) -> int:
    """Run a CLI body; a SundaeError (bad input, bad file) becomes one line on stderr and exit 1."""
    try:
        return int(body() or 0)
    except SundaeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
