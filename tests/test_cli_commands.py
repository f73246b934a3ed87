"""The small subcommands: models, info, ping, chat, serve; options and help."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from batch_support import cli_command, invoke, prompts_table, write_parquet

from llvm_batch.server import reference_output


def test_models_lists_one_per_line(server) -> None:
    result = invoke("models", "--base-url", server.url)
    assert result.exit_code == 0
    assert result.output.splitlines() == ["llvm-model-1", "llvm-model-2"]


def test_base_url_from_the_environment(server) -> None:
    result = invoke("models", env={"LLVM_BASE_URL": server.url})
    assert result.exit_code == 0 and "llvm-model-2" in result.output


def test_info_prints_json_and_fails_clearly_for_unknown_models(server) -> None:
    result = invoke("info", "llvm-model-2", "--base-url", server.url)
    assert result.exit_code == 0
    assert json.loads(result.output)["model_id"] == "llvm-model-2"
    result = invoke("info", "nope", "--base-url", server.url)
    assert result.exit_code == 1
    assert "model 'nope'" in result.output and "404" in result.output


def test_ping_exit_codes(server) -> None:
    assert invoke("ping", "--base-url", server.url).exit_code == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    result = invoke("ping", "--base-url", f"http://127.0.0.1:{closed_port}")
    assert result.exit_code == 1 and "unreachable" in result.output


def test_chat_prints_the_answer(server) -> None:
    result = invoke(
        "chat", "llvm-model-1", "Hello there", "--system", "Be kind.", "--base-url", server.url
    )
    assert result.exit_code == 0
    assert result.output.strip() == reference_output(
        "llvm-model-1", "system: Be kind.\nuser: Hello there"
    )


def test_api_key_file_is_used_and_missing_file_is_exit_2(tmp_path: Path, make_server) -> None:
    server = make_server(api_key="secret-1")
    key = tmp_path / "key"
    key.write_text("secret-1\n")
    assert invoke("models", "--base-url", server.url, "--api-key-file", str(key)).exit_code == 0
    result = invoke("models", "--base-url", server.url, "--api-key-file", str(tmp_path / "none"))
    assert result.exit_code == 2 and "API key file" in result.output
    result = invoke("models", "--base-url", server.url)
    assert result.exit_code == 1 and "401" in result.output


def test_bad_option_values_exit_2_with_a_clear_message(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(2))
    result = invoke("run", str(source), "-m", "llvm-model-1", "--concurrency", "0")
    assert result.exit_code == 2 and "--concurrency" in result.output
    result = invoke("run", str(source), "-m", "llvm-model-1", "--params", "[1]")
    assert result.exit_code == 2 and "JSON object" in result.output
    result = invoke("run", str(source), "-m", "llvm-model-1", "--base-url", "ftp://x")
    assert result.exit_code == 2 and "http://" in result.output
    result = invoke("run", str(source), "--base-url", server.url, env={"LLVM_DEFAULT_MODEL": ""})
    assert result.exit_code == 2 and "no model" in result.output
    assert server.stats.requests == 0


def test_every_command_help_ends_with_an_example() -> None:
    for command in ("run", "models", "info", "ping", "chat", "serve"):
        result = invoke(command, "--help")
        assert result.exit_code == 0
        assert "Example:" in result.output, command


def test_serve_runs_the_reference_server_in_a_subprocess() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        cli_command("serve", "--port", str(port), "--models", "a,b"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/models", timeout=1) as answer:
                    assert json.load(answer) == {"models": ["a", "b"]}
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert f"http://127.0.0.1:{port}" in out
