"""``llvm-batch run --config job.toml``: every ``run`` option in a TOML file, flags override it.

Keys are the option names (``max-retries`` or ``max_retries``), plus ``input``; paths are
relative to the file. An unknown key is an error, so a typo never silently does nothing.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PATH_KEYS = ("input_path", "output", "summary_json", "api_key_file")
NOT_IN_FILE = ("config", "help")


def load_job_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager callback of ``--config``: the file's values become the command's defaults."""
    if value is None:
        return None
    try:
        with open(value, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise click.BadParameter(f"can't read {value!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{value!r} is not valid TOML: {exc}") from None
    known = {p.name for p in ctx.command.params if p.name and p.name not in NOT_IN_FILE}
    settings: dict[str, Any] = {}
    for key, setting in data.items():
        name = "input_path" if key == "input" else key.replace("-", "_")
        if name not in known:
            names = sorted("input" if k == "input_path" else k.replace("_", "-") for k in known)
            raise click.BadParameter(
                f"unknown key {key!r} in {value!r}; known keys: {', '.join(names)}"
            )
        settings[name] = setting
    base = os.path.dirname(os.path.abspath(value))
    for name in PATH_KEYS:
        path = settings.get(name)
        if isinstance(path, str) and "://" not in path and not os.path.isabs(path):
            settings[name] = os.path.join(base, path)
    ctx.default_map = {**(ctx.default_map or {}), **settings}
    return value
