"""Click parameter types of the ``run`` options: finite numbers, a concurrency, a JSON object."""

from __future__ import annotations

import json
import math
from typing import Any

import click

from ..config import Limits


class Finite(click.FloatRange):
    """A float option that is a number: ``inf`` and ``nan`` are refused (exit 2)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number

    def _describe_range(self) -> str:
        # click words a range without bounds "x<=None" in --help: say nothing instead.
        if self.min is None and self.max is None:
            return ""
        return super()._describe_range()


def json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Callback of an option that takes a JSON object (``--params``); None stays None."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        raise click.BadParameter(
            f"must be a JSON object, e.g. '{{\"seed\": 1}}'; got {value!r}"
        ) from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"seed\": 1}'")
    return parsed


class ConcurrencyType(click.ParamType):  # type: ignore[type-arg]
    """A ceiling of at least 1, or ``auto``."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return Limits.parse(value).describe()
        except ValueError:
            self.fail(f"must be an integer of at least 1, or 'auto'; got {value!r}", param, ctx)
