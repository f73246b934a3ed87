"""The ``run`` option bundles: each a decorator that works on any command, shown in order."""

from __future__ import annotations

import json
from typing import Any

import click
from batch_support import invoke
from click.testing import CliRunner

from llvm_batch.cli.bundles import (
    checkpoint_options,
    output_options,
    prompt_options,
    retry_options,
    sampling_options,
)
from llvm_batch.cli.common import server_options
from llvm_batch.cli.run import run


def parsed(decorator: Any, *args: str) -> tuple[int, Any]:
    """Run a bare command carrying only ``decorator``'s options; its exit code and values."""

    @click.command()
    @decorator
    def probe(**values: Any) -> None:
        click.echo(json.dumps(values))

    result = CliRunner().invoke(probe, list(args))
    return result.exit_code, json.loads(result.output) if result.exit_code == 0 else result.output


def test_a_bundle_gives_any_command_its_options_with_their_defaults() -> None:
    code, values = parsed(retry_options)
    assert code == 0
    assert values == {
        "concurrency": "16",
        "max_retries": 3,
        "retry_delay": 1.0,
        "timeout": 60.0,
        "max_rps": None,
        "max_response_mb": 64.0,
        "priority": "normal",
        "max_outage": 600.0,
    }
    assert parsed(retry_options, "-c", "auto", "--max-retries", "0")[1]["concurrency"] == "auto"


def test_bundled_types_still_refuse_bad_values() -> None:
    code, output = parsed(sampling_options, "--temperature", "inf")
    assert code == 2 and "'inf' is not a finite number" in output
    code, output = parsed(sampling_options, "--params", "[1]")
    assert code == 2 and "must be a JSON object" in output
    code, output = parsed(retry_options, "-c", "0")
    assert code == 2 and "at least 1, or 'auto'" in output
    assert parsed(sampling_options, "--params", '{"seed": 1}')[1]["params"] == {"seed": 1}


def test_run_help_shows_each_bundle_in_order_and_every_option_once() -> None:
    text = invoke("run", "--help").output.split("Options:", 1)[1]
    firsts = ["--config", "--output", "--model", "--max-tokens ", "--base-url", "--local-server"]
    firsts += ["--concurrency", "--chunk-size"]
    places = [text.index(flag) for flag in firsts]
    assert places == sorted(places)
    bundles = (output_options, prompt_options, sampling_options, server_options)
    bundles += (retry_options, checkpoint_options)
    names = [name for bundle in bundles for name in parsed(bundle)[1]]
    own = {param.name for param in run.params} - {"input_path", "config", "local_server"}
    assert len(names) == len(set(names)) and set(names) == own
    assert "None" not in text  # click words an unbounded range "x<=None"
