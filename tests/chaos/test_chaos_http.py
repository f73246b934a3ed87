"""Chaos over HTTP: error statuses, Retry-After, bad answers and redirects, each against a full
``llvm-batch run`` on loopback, judged by the output columns, the exit code and what the
server saw.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from email.utils import formatdate
from pathlib import Path

import pyarrow as pa
import pytest
from aiohttp import web
from batch_support import committed_rows, invoke, read_rows, staging_of, write_parquet
from chaos_support import MODEL, by_prompt, posts, run_args, status

from llvm_batch.protocol import get_protocol
from llvm_batch.server import reference_output

#: The runner's reliability contract holds in both wire protocols.
pytestmark = pytest.mark.usefixtures("protocol")


def prompts(*names: str) -> pa.Table:
    return pa.table({"id": list(range(len(names))), "prompt": list(names)})


def plain(n: int) -> list[str]:
    return [f"fine {i}" for i in range(n)]


def test_one_503_then_success(tmp_path: Path, scripted_thread) -> None:
    seen: Counter[str] = Counter()

    def handler(request_seen, request):
        if request_seen.method == "POST":
            seen[request_seen.inputs] += 1
            if request_seen.inputs == "flaky" and seen["flaky"] == 1:
                return status(503, "busy")
        return None

    app = scripted_thread(handler)
    source = write_parquet(tmp_path / "in.parquet", prompts(*plain(3), "flaky", *plain(3)))
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, app.url))

    assert result.exit_code == 0, result.output
    rows = by_prompt(read_rows(out))
    flaky = rows["flaky"]
    assert flaky["llvm_status"] == "ok" and flaky["llvm_error_type"] is None
    assert flaky["llvm_output"] == reference_output(MODEL, "flaky")
    assert (flaky["llvm_attempts"], flaky["llvm_http_status"]) == (2, 200)
    assert flaky["llvm_retry_wait_s"] > 0 and flaky["llvm_error"] is None
    assert {r["llvm_attempts"] for p, r in rows.items() if p != "flaky"} == {1}
    assert seen["flaky"] == 2 and len(posts(app)) == 8


@pytest.mark.parametrize(("retries", "attempts"), [(None, 4), ("1", 2)])
def test_a_row_that_always_fails(tmp_path: Path, scripted_thread, retries, attempts) -> None:
    def handler(seen, request):
        if seen.inputs == "doomed":
            return status(500, "the GPU caught fire")
        return None

    app = scripted_thread(handler)
    names = [*plain(8), "doomed", *plain(3)]
    source = write_parquet(tmp_path / "in.parquet", prompts(*names))
    out = tmp_path / "out.parquet"
    extra = ["--concurrency", "1"] + (["--max-retries", retries] if retries else [])

    result = invoke(*run_args(source, out, app.url, *extra))

    assert result.exit_code == 1, result.output  # done, error rate 1/12 above the default 0
    rows = read_rows(out)
    assert [r["prompt"] for r in rows] == names
    doomed = by_prompt(rows)["doomed"]
    assert doomed["llvm_status"] == "error" and doomed["llvm_output"] is None
    assert doomed["llvm_error_type"] == "server_error"
    assert (doomed["llvm_http_status"], doomed["llvm_attempts"]) == (500, attempts)
    assert "the GPU caught fire" in doomed["llvm_error"]
    assert f"after {attempts} attempts" in doomed["llvm_error"]
    assert [s.inputs for s in posts(app)].count("doomed") == attempts
    assert all(r["llvm_status"] == "ok" for r in rows if r["prompt"] != "doomed")
    assert "server_error 1" in result.output


def _retry_after_date(seen_at: list[float]) -> str:
    # An HTTP date has whole seconds: aim at a second boundary at least 0.3 s away.
    target = math.ceil(time.time() + 0.3)
    seen_at.append(float(target))
    return formatdate(target, usegmt=True)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_retry_after_is_honoured(tmp_path: Path, scripted_thread, form: str) -> None:
    arrivals: list[float] = []
    not_before: list[float] = []

    def handler(seen, request):
        if seen.inputs != "limited":
            return None
        arrivals.append(time.time())
        if len(arrivals) > 1:
            return None
        if form == "seconds":
            not_before.append(arrivals[0] + 0.4)
            return status(429, "slow down", **{"Retry-After": "0.4"})
        return status(429, "slow down", **{"Retry-After": _retry_after_date(not_before)})

    app = scripted_thread(handler)
    source = write_parquet(tmp_path / "in.parquet", prompts("a", "limited", "b"))
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, app.url))

    assert result.exit_code == 0, result.output
    row = by_prompt(read_rows(out))["limited"]
    assert row["llvm_status"] == "ok"
    assert (row["llvm_attempts"], row["llvm_http_status"]) == (2, 200)
    assert len(arrivals) == 2
    # The retry came no sooner than the server asked (a little slack for clock granularity).
    assert arrivals[1] >= not_before[0] - 0.05
    assert row["llvm_retry_wait_s"] >= not_before[0] - arrivals[0] - 0.05


@pytest.mark.parametrize("code", [400, 422])
def test_400_and_422_fail_the_row_once_without_retrying(
    tmp_path: Path, scripted_thread, code: int
) -> None:
    def handler(seen, request):
        if seen.inputs == "rejected":
            return status(code, f"no thanks ({code})")
        return None

    app = scripted_thread(handler)
    source = write_parquet(tmp_path / "in.parquet", prompts("a", "rejected", "b", "c"))
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, app.url, "--max-error-rate", "0.5"))

    assert result.exit_code == 0, result.output  # 1 error in 4 is within --max-error-rate 0.5
    row = by_prompt(read_rows(out))["rejected"]
    assert (row["llvm_status"], row["llvm_error_type"]) == ("error", "client_error")
    assert (row["llvm_http_status"], row["llvm_attempts"]) == (code, 1)
    assert row["llvm_retry_wait_s"] == 0 and f"no thanks ({code})" in row["llvm_error"]
    assert [s.inputs for s in posts(app)].count("rejected") == 1
    assert len(posts(app)) == 4


def _goes_wrong_after(count: int, code: int, state: dict[str, bool]):
    """Inference answers normally ``count`` times, then ``code`` while ``state['broken']``."""
    served: Counter[str] = Counter()

    def handler(seen, request):
        if seen.method != "POST":
            return None
        served["n"] += 1
        if served["n"] > count:
            state["broken"] = state.get("broken", True)
        if state.get("broken"):
            return status(code, "model gone" if code == 404 else "key revoked")
        return None

    return handler


@pytest.mark.parametrize(
    ("code", "reason", "never_in_output"),
    [(404, "disappeared", "model_not_found"), (401, "API key was refused", "auth")],
)
def test_404_or_401_mid_run_stops_incomplete_then_resumes(
    tmp_path: Path, scripted_thread, code: int, reason: str, never_in_output: str
) -> None:
    state: dict[str, bool] = {}
    app = scripted_thread(_goes_wrong_after(25, code, state))
    names = [f"row {i}" for i in range(120)]
    source = write_parquet(tmp_path / "in.parquet", prompts(*names))
    out = tmp_path / "out.parquet"
    args = run_args(source, out, app.url, "--concurrency", "2", "--chunk-size", "10")

    result = invoke(*args)

    assert result.exit_code == 3, result.output
    assert reason in result.output and "resume" in result.output
    assert not out.exists()
    staging = staging_of(out)
    committed = committed_rows(staging)
    assert 0 < committed <= 25
    refused = len(posts(app)) - 25
    assert 1 <= refused <= 4  # stopped at once, not one refusal per remaining row

    state["broken"] = False
    app.seen.clear()
    result = invoke(*args)

    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [r["prompt"] for r in rows] == names
    assert all(r["llvm_status"] == "ok" for r in rows)
    assert never_in_output not in {r["llvm_error_type"] for r in rows}
    assert len(posts(app)) == len(names) - committed  # committed rows are not sent again
    assert not staging.exists()


BROKEN_BODIES = {
    "cut JSON": b'{"outputs": "trunc',
    "HTML": b"<html><body>502 from a proxy, but with status 200</body></html>",
    "wrong shape": b'{"result": "no outputs field here"}',
    "empty": b"",
}


@pytest.mark.parametrize("kind", list(BROKEN_BODIES))
def test_a_200_with_a_broken_body_is_retried_then_invalid_response(
    tmp_path: Path, scripted_thread, kind: str
) -> None:
    seen_count: Counter[str] = Counter()

    def handler(seen, request):
        if seen.method != "POST":
            return None
        seen_count[seen.inputs] += 1
        broken = seen.inputs == "garbled" or (seen.inputs == "once" and seen_count["once"] == 1)
        if broken:
            return web.Response(
                status=200, body=BROKEN_BODIES[kind], content_type="application/json"
            )
        return None

    app = scripted_thread(handler)
    names = [*plain(6), "garbled", *plain(6), "once", *plain(2)]
    source = write_parquet(tmp_path / "in.parquet", prompts(*names))
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, app.url, "--concurrency", "1"))

    assert result.exit_code == 1, result.output
    rows = by_prompt(read_rows(out))
    garbled = rows["garbled"]
    assert (garbled["llvm_status"], garbled["llvm_error_type"]) == ("error", "invalid_response")
    assert (garbled["llvm_attempts"], garbled["llvm_http_status"]) == (4, 200)
    assert seen_count["garbled"] == 4
    once = rows["once"]
    assert (once["llvm_status"], once["llvm_attempts"]) == ("ok", 2)
    assert once["llvm_output"] == reference_output(MODEL, "once")


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_never_carries_the_api_key(
    tmp_path: Path, scripted_thread, code: int, protocol: str
) -> None:
    key = "sk-CANARY-redirect-5e1f"
    target = scripted_thread()  # another port on 127.0.0.1: a different origin

    def redirect(seen, request):
        return web.Response(status=code, headers={"Location": target.url + seen.path})

    origin = scripted_thread(redirect)
    source = write_parquet(tmp_path / "in.parquet", prompts("a", "b", "c"))
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, origin.url), env={"LLVM_API_KEY": key})

    assert origin.seen and all(
        s.headers.get("Authorization") == f"Bearer {key}" for s in origin.seen
    )
    assert target.seen, "the redirect was not followed at all"
    leaked = [s for s in target.seen if key in str(s.headers) or "Authorization" in s.headers]
    assert leaked == []
    assert key not in result.output
    if code in (307, 308):  # method and body kept: the run completes at the new origin
        assert result.exit_code == 0, result.output
        assert [r["llvm_status"] for r in read_rows(out)] == ["ok"] * 3
    else:
        # A POST resent as a body-less GET would ask another question: the run stops at the
        # first such answer (resumable, exit 3) and says where the server moved to.
        assert result.exit_code == 3, result.output
        path = get_protocol(protocol).inference(MODEL, "a", {}).path
        assert f"redirected POST {path} to {target.url}" in result.output
        assert "use the new address as the base URL" in result.output
        assert not out.exists()
        assert {s.method for s in target.seen} == {"GET"}
