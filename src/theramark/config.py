"""The study configuration (``study.toml``).

The file has one table per stage (``[denoise]``, ``[qc]``, ``[connectivity]``, ``[glm]``,
``[group]``, ``[psychosocial]``...). Each stage owns its defaults and reads its table with
:func:`section`, which merges the user's values over the defaults and rejects unknown keys, so a typo
in the config is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from theramark.errors import BadInputError

KNOWN_SECTIONS = (
    "study", "denoise", "qc", "rois", "connectivity", "glm", "participant",
    "scales", "features", "harmonize", "longitudinal", "inference", "group",
    "predict", "psychosocial", "report", "realtime",
)


def load_config(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Read a ``study.toml``; ``None`` gives the empty config (all defaults).

    Raises
    ------
    BadInputError
        If the file is missing, is not valid TOML, or has a table theramark does not know.
    """
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"{path}: not valid TOML ({exc})") from None
    unknown = [name for name in data if name not in KNOWN_SECTIONS]
    if unknown:
        raise BadInputError(
            f"{path}: unknown table(s) {', '.join(sorted(unknown))}; "
            f"known tables are {', '.join(KNOWN_SECTIONS)}"
        )
    for name, value in data.items():
        if not isinstance(value, dict):
            raise BadInputError(f"{path}: '{name}' must be a table ([{name}]), got {value!r}")
    data["_path"] = {"path": str(path)}
    return data


def section(
    config: Mapping[str, Any] | None, name: str, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``[name]`` table of ``config`` merged over ``defaults``.

    Nested tables are merged key by key. A key absent from ``defaults`` is an error naming the file,
    the table and the allowed keys.
    """
    merged = copy.deepcopy(dict(defaults))
    user = dict((config or {}).get(name, {}))
    source = (config or {}).get("_path", {}).get("path", "study.toml")
    unknown = [key for key in user if key not in defaults]
    if unknown:
        raise BadInputError(
            f"{source}: unknown key(s) {', '.join(sorted(unknown))} in [{name}]; "
            f"allowed keys are {', '.join(sorted(defaults))}"
        )
    for key, value in user.items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
