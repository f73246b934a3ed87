"""Turning input rows into requests: the prompt (column, template or chat) and per-row options.

:class:`PromptSpec` is checked against the input's schema before anything is sent; then
:meth:`PromptSpec.render` turns a record batch into one :class:`Request` (or a skip reason)
per row.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyarrow as pa

from .. import protocol
from ..errors import InputError

OPTION_NAMES = ("max_tokens", "temperature", "top_k", "top_p", "params")


class Request(NamedTuple):
    """What one row sends: a prompt, or with ``chat`` a list of messages, and its options."""

    inputs: Any
    options: dict[str, Any]
    chat: bool = False

    def shown(self) -> str:
        """The request as one line of text, as the LLVM protocol would send it."""
        text = self.inputs if isinstance(self.inputs, str) else json.dumps(self.inputs)
        if self.chat:
            text = protocol.chat_prompt(self.inputs)
        return text


def template_fields(template: str) -> list[str]:
    """The column names a ``str.format`` template refers to; a clear error if it is malformed."""
    names: list[str] = []
    try:
        for _, name, _, _ in string.Formatter().parse(template):
            if name is None:
                continue
            root = name.split(".", 1)[0].split("[", 1)[0]
            if not root or root.isdigit():
                raise InputError(
                    f"template {template!r} has a positional field {{{name}}}; "
                    "name a column instead, as in {text}"
                )
            if root not in names:
                names.append(root)
    except ValueError as exc:
        raise InputError(f"template {template!r} is malformed: {exc}") from None
    return names


@dataclass(frozen=True)
class PromptSpec:
    """Where each row's prompt and options come from."""

    prompt_column: str = "prompt"
    template: str | None = None
    chat: bool = False
    messages_column: str = "messages"
    system: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    option_columns: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = (set(self.options) | set(self.option_columns)) - set(OPTION_NAMES)
        if unknown:
            raise InputError(f"unknown inference option(s): {', '.join(sorted(unknown))}")
        if self.template is not None:
            template_fields(self.template)

    @property
    def uses_messages_column(self) -> bool:
        return self.chat and self.template is None and self.system is None

    def columns_needed(self) -> list[str]:
        """The input columns this spec reads."""
        if self.uses_messages_column:
            needed = [self.messages_column]
        elif self.template is not None:
            needed = template_fields(self.template)
        else:
            needed = [self.prompt_column]
        return needed + [c for c in self.option_columns.values() if c not in needed]

    def text_columns(self) -> tuple[str, ...]:
        """Columns to read as text from CSV (so a numeric-looking prompt stays a string)."""
        if self.uses_messages_column:
            return (self.messages_column,)
        if self.template is not None:
            return tuple(template_fields(self.template))
        return (self.prompt_column,)

    def check(self, schema: pa.Schema) -> None:
        """Raise :class:`InputError` naming any column the spec needs that the input lacks."""
        have = set(schema.names)
        missing = [c for c in self.columns_needed() if c not in have]
        if not missing:
            for name in self.text_columns():
                _check_renderable(name, schema.field(name).type)
            return
        what = "the template" if self.template is not None else "an option column"
        if self.uses_messages_column and self.messages_column in missing:
            what = "the messages column"
        elif self.template is None and self.prompt_column in missing:
            what = "the prompt column"
        raise InputError(
            f"input has no column {', '.join(repr(c) for c in missing)} (needed by {what}); "
            f"its columns are: {', '.join(schema.names)}"
        )

    def render(self, batch: pa.RecordBatch) -> list[Request | str]:
        """One Request per row, or a string saying why the row can't be sent."""
        cols = {name: batch.column(name).to_pylist() for name in self.columns_needed()}
        rows = batch.num_rows
        option_values = {opt: cols[col] for opt, col in self.option_columns.items()}
        out: list[Request | str] = []
        for i in range(rows):
            try:
                inputs = self._inputs(cols, i)
                options = dict(self.options)
                for opt, values in option_values.items():
                    if values[i] is not None:
                        options[opt] = _option_value(opt, values[i])
            except InputError as exc:
                out.append(exc.message)
                continue
            out.append(Request(inputs, options, self.chat))
        return out

    def _inputs(self, cols: dict[str, list[Any]], i: int) -> Any:
        if self.uses_messages_column:
            return _messages(cols[self.messages_column][i])
        if self.template is not None:
            values = {name: _plain(cols[name][i]) for name in template_fields(self.template)}
            nulls = [name for name, value in values.items() if value is None]
            if nulls:
                raise InputError(f"template column {nulls[0]!r} is null")
            try:
                text = self.template.format_map(values)
            except (KeyError, IndexError, AttributeError, ValueError) as exc:
                raise InputError(f"template could not be filled: {exc}") from None
        else:
            text = _prompt_value(cols[self.prompt_column][i])
        if not self.chat:
            return text
        if not isinstance(text, str):
            text = json.dumps(text, separators=(",", ":"), ensure_ascii=False)
        messages = [{"role": "user", "content": text}]
        if self.system is not None:
            messages.insert(0, {"role": "system", "content": self.system})
        return messages


def _check_renderable(name: str, kind: pa.DataType) -> None:
    """Refuse, before anything is sent, a column type with no text a person would expect."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_interval(kind) or pa.types.is_union(kind) or pa.types.is_map(kind):
        raise InputError(
            f"column {name!r} is of type {kind}, which has no plain-text form to send as a "
            "prompt; cast it to a string column first"
        )


def _plain(value: Any) -> Any:
    """A binary value as the UTF-8 text it holds (never ``b'...'``); other values as they are."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("prompt is binary data that is not UTF-8 text") from None
    return value


def _prompt_value(value: Any) -> Any:
    if value is None:
        raise InputError("prompt is null")
    value = _plain(value)
    if isinstance(value, str):
        if not value.strip():
            raise InputError("prompt is empty")
        return value
    if isinstance(value, (dict, list)):
        return value
    return str(value)


def _messages(value: Any) -> list[Mapping[str, Any]]:
    if value is None:
        raise InputError("messages are null")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise InputError("messages are not valid JSON") from None
    if not isinstance(value, list) or not value:
        raise InputError("messages must be a non-empty list of {role, content}")
    try:
        protocol.chat_prompt(value)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return value


def _option_value(name: str, value: Any) -> Any:
    if name == "params" and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise InputError(f"params column value is not JSON: {value[:80]!r}") from None
    try:
        if name in ("max_tokens", "top_k"):
            return int(value)
        if name in ("temperature", "top_p"):
            return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} column value {value!r} is not a number") from None
    return value
