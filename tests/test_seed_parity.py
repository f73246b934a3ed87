"""The seed's shapes and the first ten minutes: what a user porting the seed's guide meets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pandas as pd
import pytest
from aiohttp import web
from batch_support import invoke, prompts_table, write_parquet

from llvm_batch import AsyncLLVMClient, InvalidResponseError, LLVMClient, LLVMError
from llvm_batch.cli import COMMANDS, main
from llvm_batch.server import reference_output

MODEL = "llvm-model-1"
KEY = "sk-live-guide-0123456789abcdef"


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter, as a user's script would run."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


# -- 1. list_models returns the server's answer -----------------------------------------------


def test_the_guides_list_models_example_runs_as_written(server) -> None:
    with LLVMClient(base_url=server.url) as client:
        models = client.list_models()
        assert models["models"] == ["llvm-model-1", "llvm-model-2"]
        assert client.model_ids() == models["models"]

    async def main_() -> tuple[dict, list[str]]:
        async with AsyncLLVMClient(server.url) as client:
            return await client.list_models(), await client.model_ids()

    answer, ids = asyncio.run(main_())
    assert answer == {"models": ["llvm-model-1", "llvm-model-2"]}
    assert ids == ["llvm-model-1", "llvm-model-2"]


def test_in_openai_mode_list_models_is_the_servers_answer_too(make_server) -> None:
    server = make_server(protocol="openai")
    with LLVMClient(base_url=server.url, protocol="openai") as client:
        answer = client.list_models()
        ids = client.model_ids()
    assert [entry["id"] for entry in answer["data"]] == ids == ["llvm-model-1", "llvm-model-2"]


# -- 2. retry_delay is seconds; milliseconds are refused -------------------------------------


@pytest.mark.parametrize("client_class", [LLVMClient, AsyncLLVMClient])
def test_a_millisecond_retry_delay_is_refused_by_the_client(client_class) -> None:
    with pytest.raises(ValueError, match=r"in seconds.*1000 looks like milliseconds.*mean 1 "):
        client_class(base_url="http://127.0.0.1:9", retry_delay=1000)


def test_a_millisecond_retry_delay_is_refused_by_the_cli_and_job_file(
    make_server, tmp_path: Path
) -> None:
    server = make_server()
    source = write_parquet(tmp_path / "in.parquet", prompts_table(2))
    out = tmp_path / "out.parquet"
    common = (str(source), "-o", str(out), "--model", MODEL, "--base-url", server.url)
    result = invoke("run", *common, "--retry-delay", "1000")
    assert result.exit_code == 2
    assert "looks like milliseconds" in result.output and "did you mean 1 " in result.output

    job = tmp_path / "job.toml"
    job.write_text("retry_delay = 2500\n")
    result = invoke("run", *common, "--config", str(job))
    assert result.exit_code == 2
    assert "did you mean 2.5 " in result.output
    assert server.stats.requests == 0 and not out.exists()


def test_a_millisecond_retry_delay_is_refused_by_the_accessor(server) -> None:
    frame = pd.DataFrame({"prompt": ["a"]})
    with pytest.raises(ValueError, match="looks like milliseconds"):
        frame.llvm.infer(MODEL, base_url=server.url, retry_delay=1000)
    assert server.stats.requests == 0


# -- 3. debug=True prints, per client, without the key ----------------------------------------


def test_debug_prints_to_stderr_in_a_plain_script_for_that_client_only(make_server) -> None:
    server = make_server(api_key=KEY)
    done = run_python(
        f"""
        import logging
        from llvm_batch import LLVMClient
        with LLVMClient(base_url={server.url!r}, api_key={KEY!r}, debug=True) as loud:
            loud.list_models()
        print("--- quiet client", flush=True)
        with LLVMClient(base_url={server.url!r}, api_key={KEY!r}) as quiet:
            quiet.list_models()
            quiet.run_inference({MODEL!r}, "hi")
        assert logging.getLogger().handlers == []
        assert logging.getLogger("llvm_batch").level == logging.NOTSET
        """
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "GET /models -> 200 in " in lines[0] and "; ok" in lines[0]
    assert KEY not in done.stderr + done.stdout


# -- 5. test_endpoint asks the server even while the breaker is open ------------------------


def test_test_endpoint_asks_the_server_while_the_breaker_is_open(scripted, fake_time) -> None:
    down = {"now": True}

    def handler(seen, request):
        return web.json_response({"error": "down"}, status=503) if down["now"] else None

    async def main_() -> tuple[bool, bool, str]:
        async with scripted(handler) as app, AsyncLLVMClient(
            app.url, max_retries=0, **fake_time.client_kwargs()
        ) as client:
            for _ in range(2000):
                if client.breaker_state == "open":
                    break
                with contextlib.suppress(LLVMError):
                    await client.run_inference("m1", "x")
            assert client.breaker_state == "open"
            while_down = await client.test_endpoint()
            down["now"] = False
            recovered = await client.test_endpoint()
            return while_down, recovered, client.breaker_state

    while_down, recovered, state = asyncio.run(main_())
    assert (while_down, recovered) == (False, True)
    assert state == "open"  # checking the endpoint neither needs nor resets the breaker


# -- 6. the sync client closes quietly ----------------------------------------------------------


def test_a_literal_port_of_the_guide_without_close_leaves_stderr_clean(server) -> None:
    done = run_python(
        f"""
        from llvm_batch import LLVMClient
        client = LLVMClient(base_url={server.url!r}, default_model={MODEL!r})
        models = client.list_models()
        print(models["models"])
        print(client.run_inference(None, "Hello")["outputs"])
        other = LLVMClient(base_url={server.url!r})
        other.test_endpoint()
        del other
        """,
        PYTHONWARNINGS="always",
        PYTHONDEVMODE="1",
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert reference_output(MODEL, "Hello") in done.stdout


# -- 7. the CLI ---------------------------------------------------------------------------------


def test_ping_says_a_refused_key_is_a_refused_key(make_server, tmp_path: Path) -> None:
    server = make_server(api_key=KEY)
    wrong = tmp_path / "key"
    wrong.write_text("sk-wrong")
    result = invoke("ping", "--base-url", server.url, "--api-key-file", str(wrong))
    assert result.exit_code == 1
    assert "refused the API key (HTTP 401)" in result.output
    assert "unreachable" not in result.output
    right = tmp_path / "right"
    right.write_text(KEY)
    result = invoke("ping", "--base-url", server.url, "--api-key-file", str(right))
    assert result.exit_code == 0 and result.output.strip().endswith(": ok")


def test_chat_and_info_take_the_model_from_the_environment(server) -> None:
    env = {"LLVM_BASE_URL": server.url, "LLVM_DEFAULT_MODEL": MODEL}
    result = invoke("chat", "What is LLVM?", env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == reference_output(MODEL, "user: What is LLVM?")
    result = invoke("info", env=env)
    assert result.exit_code == 0 and f'"model_id": "{MODEL}"' in result.output
    result = invoke("chat", "llvm-model-2", "hi", env=env)
    assert result.output.strip() == reference_output("llvm-model-2", "user: hi")


def test_chat_and_info_without_any_model_exit_2_saying_how_to_give_one(server) -> None:
    env = {"LLVM_BASE_URL": server.url, "LLVM_DEFAULT_MODEL": ""}
    for args in (("chat", "hi"), ("info",)):
        result = invoke(*args, env=env)
        assert result.exit_code == 2
        assert "LLVM_DEFAULT_MODEL" in result.output


def test_query_commands_against_a_down_server_fail_with_a_hint(closed_url) -> None:
    for args in (("models",), ("info", MODEL)):
        result = invoke(*args, "--base-url", closed_url)
        assert result.exit_code == 1
        assert "hint: is the server running at" in result.output
        assert closed_url in result.output


@pytest.mark.parametrize("args", [["--help"], ["ping", "--base-url", "URL"], ["models"]])
def test_help_ping_and_models_import_neither_pandas_nor_pyarrow(server, args) -> None:
    argv = [server.url if arg == "URL" else arg for arg in args]
    done = run_python(
        f"""
        import sys
        from llvm_batch.cli import main
        try:
            main({argv!r})
        except SystemExit:
            pass
        heavy = sorted(m for m in ("pandas", "pyarrow", "dask") if m in sys.modules)
        print("heavy:", heavy)
        """,
        LLVM_BASE_URL=server.url,
    )
    assert "heavy: []" in done.stdout, done.stdout + done.stderr


def test_help_lists_each_commands_own_short_help() -> None:
    ctx = click.Context(main)
    for name, (_, short) in COMMANDS.items():
        assert main.get_command(ctx, name).get_short_help_str(limit=1000) == short
    assert main.get_command(ctx, "nope") is None


def test_import_llvm_batch_registers_the_accessor_once_pandas_arrives() -> None:
    done = run_python(
        """
        import sys
        import llvm_batch
        assert "pandas" not in sys.modules
        import pandas as pd
        print(type(pd.DataFrame({"prompt": ["a"]}).llvm).__name__)
        print(type(pd.Series(["a"]).llvm).__name__, llvm_batch.run_batch.__name__)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["LLVMFrameAccessor", "LLVMSeriesAccessor", "run_batch"]


# -- 8. a chat message without content ----------------------------------------------------------


def test_a_message_without_content_is_refused_before_sending(server, tmp_path: Path) -> None:
    with LLVMClient(base_url=server.url) as client:
        with pytest.raises(ValueError, match=r"message 1 \('user'\) has no 'content'"):
            client.chat(MODEL, [{"role": "system", "content": "Be kind."}, {"role": "user"}])
    assert server.stats.requests == 0

    frame = pd.DataFrame(
        {"messages": [[{"role": "user", "content": "hi"}], [{"role": "user"}]]}
    )
    out = frame.llvm.chat(MODEL, messages="messages", base_url=server.url, progress=False)
    assert list(out["llvm_status"]) == ["ok", "skipped"]
    assert out["llvm_error_type"][1] == "invalid_input"
    assert "has no 'content'" in out["llvm_error"][1]
    assert server.stats.requests == 1


# -- 9. "outputs": null is a failed row, never an ok one ----------------------------------------


def test_a_null_output_fails_the_call_and_the_row(scripted, fake_time, tmp_path: Path) -> None:
    def handler(seen, request):
        if seen.method == "POST" and seen.inputs == "bad":
            return web.json_response({"model_id": "m1", "outputs": None, "metadata": {}})
        return None

    async def main_() -> None:
        async with scripted(handler) as app, AsyncLLVMClient(
            app.url, max_retries=1, **fake_time.client_kwargs()
        ) as client:
            with pytest.raises(InvalidResponseError, match=r"without an output \(null\)"):
                await client.run_inference("m1", "bad")
            assert len(app.seen) == 2  # retried like any malformed answer
            frame = pd.DataFrame({"prompt": ["good", "bad"]})
            out = await frame.llvm.ainfer("m1", client=client, progress=False)
            assert list(out["llvm_status"]) == ["ok", "error"]
            assert out["llvm_error_type"][1] == "invalid_response"
            assert pd.isna(out["llvm_output"][1])

    asyncio.run(main_())

