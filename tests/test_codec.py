"""The hot-path JSON codec: orjson's speed, the standard library's answers in every case."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from llvm_batch import codec

SAMPLES = [
    {"outputs": "héllo ✓ 日本", "model_id": "m1", "metadata": {"tokens": 3, "p": 0.25}},
    ["a", 1, 2.5, None, True, {"nested": [1, [2, [3]]]}],
    "plain",
    0,
]


@pytest.mark.parametrize("value", SAMPLES)
def test_round_trips_agree_with_the_standard_library(value) -> None:
    assert codec.loads(codec.dumps(value)) == value
    assert json.loads(codec.dumps_text(value)) == value
    assert codec.loads(json.dumps(value)) == json.loads(json.dumps(value))


def test_output_is_compact_utf8_not_ascii_escapes() -> None:
    assert codec.dumps({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()
    assert codec.dumps_text({"a": "é"}) == '{"a":"é"}'


@pytest.mark.parametrize(
    "text",
    [
        '{"big": 123456789012345678901234567890}',  # beyond 64 bits: orjson would round it
        '{"low": -9223372036854775809, "top": 18446744073709551616}',  # just beyond, too
        '{"x": NaN, "y": Infinity}',  # not strict JSON, but Python's json reads it
    ],
)
def test_what_orjson_refuses_to_read_falls_back_to_the_standard_library(text) -> None:
    expected = json.loads(text)
    got = codec.loads(text.encode())
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert type(got[key]) is type(value)
        assert got[key] == value or (math.isnan(got[key]) and math.isnan(value))


def test_utf16_bodies_are_read_like_the_standard_library_reads_them() -> None:
    body = '{"outputs": "ok"}'.encode("utf-16")
    assert codec.loads(body) == {"outputs": "ok"}


def test_invalid_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        codec.loads(b'{"outputs": "unterminated')


def test_what_orjson_refuses_to_write_falls_back_to_the_standard_library() -> None:
    big = {"n": 2**70, 1: "int key"}
    assert json.loads(codec.dumps(big)) == {"n": 2**70, "1": "int key"}
    assert json.loads(codec.dumps_text(big)) == {"n": 2**70, "1": "int key"}


def test_a_body_that_json_cannot_hold_is_a_type_error_not_a_guess() -> None:
    with pytest.raises(TypeError):
        codec.dumps({"inputs": object()})
    with pytest.raises(TypeError):
        codec.dumps({"inputs": {1, 2}})


def test_metadata_keeps_odd_values_as_text() -> None:
    when = dt.date(2026, 12, 4)
    assert json.loads(codec.dumps_text({"when": when, "set": {3}})) == {
        "when": "2026-12-04",
        "set": "{3}",
    }
