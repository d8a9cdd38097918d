"""The `%...%` tokens of a save node's `filename_prefix`, expanded where ComfyUI expands them.

ComfyUI expands them in two places, and so do we:
- the frontend, when it turns the UI workflow into a prompt (graphToPrompt), and only for the
  `filename_prefix` of the save nodes in SAVE_NODE_TYPES: `%date:FORMAT%` (frontend_tokens) and
  `%<node>.<widget>%`, the value of another node's widget. Our copy of that step is the UI -> API
  conversion (formats.ui_to_api), so these tokens are expanded there, once per run, and an
  API-format prompt keeps them as written, as ComfyUI's server does;
- the server, when SaveImage saves (folder_paths.get_save_image_path): `%width%`, `%height%`,
  `%year%`, `%month%`, `%day%`, `%hour%`, `%minute%`, `%second%` (server_tokens), for UI and API
  workflows alike. `%batch_num%` is replaced per image by image_files.save_images.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Callable, Mapping

# The node types whose filename_prefix the frontend expands (its SaveImageExtraOutput extension).
SAVE_NODE_TYPES = frozenset({
    "SaveImage", "SaveAnimatedWEBP", "SaveWEBM", "SaveAudio", "SaveGLB", "SaveAnimatedPNG",
    "CLIPSave", "VAESave", "ModelSave", "LoraSave", "SaveLatent"})

_TOKEN = re.compile(r"%([^%]+)%")
# The frontend's date tokens, tried in this order at each position: d, dd, M, MM, h, hh (0-23),
# m, mm, s, ss, yy, yyyy ("yyy" matches and stays as it is; any other text is kept).
_DATE_PART = re.compile(r"dd?|MM?|hh?|mm?|ss?|yyy?y?")
_NOT_IN_A_NAME = re.compile(r'[/?<>\\:*|"\x00-\x1f\x7f]')  # replaced by "_" in a widget's value


def local_now() -> datetime:
    """The local time both kinds of tokens read (one place, so a test can fix it)."""
    return datetime.now()


def frontend_tokens(prefix: str, widgets_of: Callable[[str], Mapping[str, Any] | None],
                    now: datetime | None = None) -> str:
    """`prefix` with `%date:FORMAT%` and `%<node>.<widget>%` expanded as the frontend does.

    `widgets_of(name)`: the widget values, by widget name, of the node the frontend would pick
    for `name`, or None when there is none. A token split by "." into other than two parts is a
    date when its first part starts with "date:" (only that part is formatted, as in the
    frontend: `%date:yyyy.MM%` is read as a node "date:yyyy"); every token that finds nothing is
    kept as written, for the server (`%width%`) or for the file name.
    """
    now = now or local_now()

    def expand(match: re.Match) -> str:
        parts = match.group(1).split(".")
        if len(parts) != 2:
            return format_date(parts[0][len("date:"):], now) if parts[0].startswith("date:") else match.group()
        widgets = widgets_of(parts[0])
        if widgets is None or parts[1] not in widgets:
            return match.group()
        return _NOT_IN_A_NAME.sub("_", _as_js_text(widgets[parts[1]]))

    return _TOKEN.sub(expand, prefix)


def format_date(pattern: str, now: datetime) -> str:
    """The frontend's formatDate: "yyyy-MM-dd hh:mm:ss" -> "2025-03-09 14:05:07"."""
    numbers = {"d": now.day, "M": now.month, "h": now.hour, "m": now.minute, "s": now.second}

    def one(match: re.Match) -> str:
        token = match.group()
        if token == "yy":
            return str(now.year)[2:]
        if token == "yyyy":
            return str(now.year)
        return str(numbers[token[0]]).zfill(len(token)) if token[0] in numbers else token

    return _DATE_PART.sub(one, pattern)


def server_tokens(prefix: str, width: int, height: int, now: datetime | None = None) -> str:
    """`prefix` with ComfyUI's server-side tokens: the first image's size and the local time."""
    if "%" not in prefix:
        return prefix
    now = now or local_now()
    values = {"width": width, "height": height, "year": now.year, "month": f"{now.month:02}",
              "day": f"{now.day:02}", "hour": f"{now.hour:02}", "minute": f"{now.minute:02}",
              "second": f"{now.second:02}"}
    for name, value in values.items():
        prefix = prefix.replace(f"%{name}%", str(value))
    return prefix


def _as_js_text(value: Any) -> str:
    """A widget value as the frontend writes it into a name (JavaScript's `value + ''`)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))  # JavaScript has one number type: 512.0 prints as 512
    if isinstance(value, list):
        return ",".join(_as_js_text(v) for v in value)
    return str(value)
