"""Reading a YAML or JSON file of options into a dict (FitConfig, TrainConfig)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConfigError


def read_options_file(path: str | Path, what: str = "config") -> dict[str, Any]:
    """The mapping in a .json file, or in a YAML file (any other suffix); an empty file gives {}.

    Raises:
        ConfigError: unreadable file, invalid syntax, or a top level that is not a mapping.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {p}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} file {p} is not UTF-8 text (byte {exc.start}); give a YAML or JSON file") from exc
    is_json = p.suffix.lower() == ".json"
    try:
        if is_json:
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json and yaml raise several types
        raise ConfigError(f"{p}: not valid {'JSON' if is_json else 'YAML'}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of option names")
    return data
