"""Against an OpenAI-compatible server we did not write: LLMock (``llmock`` on PyPI, in the
test extra), run as a child process on loopback. Model listing and info, a template run, a
chat run, a 429 with Retry-After, ``--retry-errors``, and LLMock's own verdict on how our
client retried.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from batch_support import invoke, read_rows, write_parquet

from llvm_batch import LLVMClient
from llvm_batch.errors import ModelNotFoundError

MODEL = "gpt-4o-mini"
CHAT = "/v1/chat/completions"  # faults aimed here, not at the run's model check
STARTUP_S = 30.0


class LLMock:
    """A running ``llmock serve`` and its ``/_llmock`` control API."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.url = root + "/v1"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.root + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read()
        return json.loads(text) if text else None

    def script(self, *behaviors: dict[str, Any]) -> None:
        """Queue faults, e.g. ``{"type": "fail", "status": 429, "retry_after": 1, "times": 1}``."""
        self._call("POST", "/_llmock/scenario", {"behaviors": list(behaviors)})

    def reset(self) -> None:
        self._call("POST", "/_llmock/reset")

    def requests(self) -> list[dict[str, Any]]:
        answer = self._call("GET", "/_llmock/requests")
        return list(answer["requests"] if isinstance(answer, dict) else answer)

    def verdict(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_llmock/verdict"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def llmock() -> Iterator[LLMock]:
    command = shutil.which("llmock")
    assert command, "llmock is not installed: pip install -e '.[test]'"
    port = _free_port()
    process = subprocess.Popen(
        [command, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = LLMock(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + STARTUP_S
    try:
        while True:
            try:
                server.reset()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"llmock did not start: {process.stderr.read().decode()[-2000:]}"
                        if process.stderr
                        else "llmock did not start"
                    ) from None
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


@pytest.fixture
def mock(llmock: LLMock) -> LLMock:
    llmock.reset()
    return llmock


def _table(tmp_path: Path, rows: int) -> Path:
    table = pa.table(
        {"id": list(range(rows)), "city": [f"city {i}" for i in range(rows)]},
    )
    return write_parquet(tmp_path / "in.parquet", table)


def _run(source: Path, out: Path, mock: LLMock, *extra: str) -> Any:
    return invoke(
        "run",
        str(source),
        "-o",
        str(out),
        "--protocol",
        "openai",
        "--base-url",
        mock.url,
        "-m",
        MODEL,
        "--no-progress",
        *extra,
    )


def test_models_and_model_info_from_the_list(mock: LLMock) -> None:
    with LLVMClient(base_url=mock.url, protocol="openai", api_key="sk-test") as client:
        models = client.model_ids()
        # LLMock has no GET /models/{id}: the info comes from the list, and a model the
        # server lacks is a clear ModelNotFoundError naming what it offers.
        info = client.get_model_info(MODEL)
        with pytest.raises(ModelNotFoundError, match="does not offer model 'no-such-model'"):
            client.get_model_info("no-such-model")
    assert MODEL in models and "gpt-4o" in models
    assert info["id"] == MODEL and info["object"] == "model"
    sent = mock.requests()
    assert sent, "llmock saw none of our requests"


def test_a_template_run_fills_output_tokens_and_finish_reason(tmp_path: Path, mock: LLMock) -> None:
    source = _table(tmp_path, 12)
    out = tmp_path / "out.parquet"
    summary_path = tmp_path / "summary.json"

    result = _run(
        source,
        out,
        mock,
        "--template",
        "Name one museum in {city}.",
        "--max-tokens",
        "20",
        "--summary-json",
        str(summary_path),
    )

    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [r["id"] for r in rows] == list(range(12))
    assert {r["llvm_status"] for r in rows} == {"ok"}
    assert all(r["llvm_output"] for r in rows)
    assert all(r["llvm_input_tokens"] > 0 and r["llvm_output_tokens"] > 0 for r in rows)
    assert {r["llvm_finish_reason"] for r in rows} <= {"stop", "length"}
    summary = json.loads(summary_path.read_text())
    assert summary["input_tokens"] == sum(r["llvm_input_tokens"] for r in rows)
    assert summary["output_tokens"] == sum(r["llvm_output_tokens"] for r in rows)
    chats = [r for r in mock.requests() if r.get("path", "").endswith("/chat/completions")]
    assert len(chats) == 12


def test_a_chat_run_sends_the_messages_as_they_are(tmp_path: Path, mock: LLMock) -> None:
    messages = [
        json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}])
        for q in ("What is LLVM?", "What is an IR?", "What is SSA?")
    ]
    source = write_parquet(tmp_path / "in.parquet", pa.table({"messages": messages}))
    out = tmp_path / "out.parquet"

    result = _run(source, out, mock, "--chat")

    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [r["llvm_status"] for r in rows] == ["ok"] * 3
    assert all(r["llvm_output"] and r["llvm_model"] == MODEL for r in rows)
    bodies = [
        json.loads(r["body"]) if isinstance(r.get("body"), str) else r.get("body")
        for r in mock.requests()
    ]
    sent = [b["messages"] for b in bodies if isinstance(b, dict) and "messages" in b]
    asked = sorted(m[1]["content"] for m in sent)
    assert asked == sorted(["What is LLVM?", "What is an IR?", "What is SSA?"])
    assert all(m[0] == {"role": "system", "content": "Be brief."} for m in sent)


def test_a_429_is_retried_after_retry_after_and_llmock_finds_no_fault(
    tmp_path: Path, mock: LLMock
) -> None:
    mock.script(
        {"type": "fail", "status": 429, "retry_after": 0.3, "times": 2, "match": {"path": CHAT}}
    )
    source = _table(tmp_path, 4)
    out = tmp_path / "out.parquet"

    result = _run(source, out, mock, "--template", "Hi {city}", "-c", "1", "--retry-delay", "0.01")

    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [r["llvm_status"] for r in rows] == ["ok"] * 4
    assert sum(r["llvm_attempts"] for r in rows) == 6  # two 429s, each retried
    assert sum(r["llvm_retry_wait_s"] for r in rows) >= 0.6  # Retry-After was the floor
    # LLMock grades the client from what it saw: no retry before Retry-After elapsed, no
    # retry storm, no retried 4xx.
    verdict = mock.verdict()
    assert verdict["errors"] == 0 and verdict["faults_injected"] == 2, verdict
    assert not {f["code"] for f in verdict["findings"]} & {"retry_after_ignored", "no_backoff"}


def test_retry_errors_reruns_only_the_failed_rows(tmp_path: Path, mock: LLMock) -> None:
    source = _table(tmp_path, 6)
    out = tmp_path / "out.parquet"
    mock.script({"type": "fail", "status": 500, "times": 2, "match": {"path": CHAT}})

    first = _run(source, out, mock, "--template", "Hi {city}", "-c", "1", "--max-retries", "0")

    assert first.exit_code == 1, first.output
    before = read_rows(out)
    failed = [r["id"] for r in before if r["llvm_status"] == "error"]
    assert len(failed) == 2
    assert {r["llvm_error_type"] for r in before if r["llvm_status"] == "error"} == {"server_error"}
    mock.reset()

    again = _run(source, out, mock, "--template", "Hi {city}", "--retry-errors")

    assert again.exit_code == 0, again.output
    after = read_rows(out)
    assert [r["llvm_status"] for r in after] == ["ok"] * 6
    kept = [r for r in after if r["id"] not in failed]
    assert kept == [r for r in before if r["id"] not in failed]
    assert len([r for r in mock.requests() if r.get("method") == "POST"]) == 2
