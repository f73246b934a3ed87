"""A server that echoes the caller's credentials back in its failures: the API key (given via
LLVM_API_KEY) must reach no log line, output column, checkpoint, summary or message of a real
``llvm-batch run --debug`` subprocess.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web
from batch_support import read_rows, run_cli, staging_of, write_parquet
from chaos_support import MODEL, by_prompt, run_args

from llvm_batch import InputError
from llvm_batch.batch import run_batch
from llvm_batch.protocol import get_protocol

#: The runner's reliability contract holds in both wire protocols.
pytestmark = pytest.mark.usefixtures("protocol")

CANARY = "sk-CANARY-9d4e2b7a1c3f5e60"


def echo_credentials(seen, request):
    """Fail inference with answers that repeat the Authorization header and the bare key."""
    if seen.method != "POST" or seen.inputs.startswith("fine"):
        return None
    auth = request.headers.get("Authorization", "")
    bare = auth.removeprefix("Bearer ")
    if seen.inputs == "json echo":
        return web.json_response(
            {"error": f"bad credentials {auth}", "detail": {"you sent": auth, "key": bare}},
            status=500,
        )
    if seen.inputs == "text echo":
        return web.Response(status=502, text=f"proxy saw Authorization: {auth} (key={bare})")
    if seen.inputs == "reason echo":
        return web.Response(status=503, reason=f"Unavailable for {bare}", text="")
    if seen.inputs == "ok but broken":
        return web.Response(status=200, text=f'{{"outputs": "{auth}', content_type="text/plain")
    return web.json_response({"error": f"always failing for {auth}"}, status=500)


def everywhere(tmp_path: Path, result) -> dict[str, str]:
    """Every text a person or a log could see after the run."""
    places = {"stdout": result.stdout, "stderr": result.stderr}
    for path in tmp_path.rglob("*"):
        if not path.is_file() or path.name == "in.parquet":
            continue
        if path.suffix == ".parquet":
            places[str(path)] = repr(pq.read_table(path).to_pylist())
        else:
            places[str(path)] = path.read_text(errors="replace")
    return places


def test_echoed_key_reaches_no_log_column_file_or_summary(
    tmp_path: Path, scripted_thread, protocol: str
) -> None:
    app = scripted_thread(echo_credentials)
    names = []
    for echo in ("json echo", "text echo", "reason echo", "ok but broken"):
        names += [f"fine {len(names) + i}" for i in range(6)] + [echo]
    source = write_parquet(tmp_path / "in.parquet", pa.table({"prompt": names}))
    out = tmp_path / "out.csv"  # plain text: searched byte for byte
    args = run_args(source, out, app.url, "--debug", "--max-retries", "1", "-c", "1")

    result = run_cli(
        *args, "--summary-json", str(tmp_path / "summary.json"), env={"LLVM_API_KEY": CANARY}
    )

    assert result.returncode == 1, result.stderr
    # Not vacuous: the server got the key and echoed it, the debug log did run, the errors
    # did land in the output with their (redacted) server text.
    assert all(s.headers.get("Authorization") == f"Bearer {CANARY}" for s in app.seen)
    path = get_protocol(protocol).inference("m1", "x", {}).path
    assert f"POST {path} -> 500" in result.stderr
    rows = by_prompt(read_rows(out))
    assert "***" in rows["json echo"]["llvm_error"]
    assert "***" in rows["text echo"]["llvm_error"]
    assert rows["ok but broken"]["llvm_error_type"] == "invalid_response"
    leaks = [place for place, text in everywhere(tmp_path, result).items() if CANARY in text]
    assert leaks == []


def test_echoed_key_stays_out_of_the_stop_reason_and_checkpoint(
    tmp_path: Path, scripted_thread
) -> None:
    """Every row fails: the breaker opens, the run stops incomplete quoting the last failure."""
    app = scripted_thread(echo_credentials)
    source = write_parquet(
        tmp_path / "in.parquet", pa.table({"prompt": ["fine 0", "fine 1"] + ["x"] * 30})
    )
    out = tmp_path / "out.parquet"
    args = run_args(source, out, app.url, "--debug", "--max-outage", "0.2", "-c", "2")
    summary_path = tmp_path / "summary.json"

    result = run_cli(*args, "--summary-json", str(summary_path), env={"LLVM_API_KEY": CANARY})

    assert result.returncode == 3, result.stderr
    summary = json.loads(summary_path.read_text())
    assert "always failing for Bearer ***" in summary["stop_reason"]
    assert "always failing for Bearer ***" in result.stderr
    assert staging_of(out).exists()
    leaks = [place for place, text in everywhere(tmp_path, result).items() if CANARY in text]
    assert leaks == []


def test_echoed_key_is_in_no_exception_a_refused_run_raises(
    tmp_path: Path, scripted_thread
) -> None:
    """The key is refused at the model check: the InputError raised, its chain and its
    traceback must not carry the key the server echoed back."""

    def refuse(seen, request):
        auth = request.headers.get("Authorization", "")
        return web.json_response({"error": f"unknown key {auth}", "key": auth[7:]}, status=401)

    app = scripted_thread(refuse)
    source = write_parquet(tmp_path / "in.parquet", pa.table({"prompt": ["a", "b"]}))

    with pytest.raises(InputError) as raised:
        run_batch(source, tmp_path / "out.parquet", model=MODEL, base_url=app.url, api_key=CANARY)

    assert app.seen[0].headers["Authorization"] == f"Bearer {CANARY}"
    error = raised.value
    assert "refused the API key (HTTP 401)" in str(error)
    assert error.__cause__ is None and error.__suppress_context__
    echoed = error.__context__  # the AuthenticationError behind it, with the server's text
    assert echoed is not None and "unknown key Bearer ***" in str(echoed)
    seen_by_people = [
        str(error),
        repr(error),
        repr(echoed),
        "".join(traceback.format_exception(error)),
        "".join(traceback.format_exception(echoed)),
    ]
    assert [text for text in seen_by_people if CANARY in text] == []
