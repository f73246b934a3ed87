"""The key never shows, in whatever form a server echoes it, and a URL's userinfo and query
are never printed: searched in stdout, stderr, the output file, the summary JSON and the
checkpoint.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote, quote_plus

import pyarrow as pa
import pytest
from aiohttp import web
from batch_support import invoke, write_parquet
from chaos_support import run_args

from llvm_batch.errors import redact

# "/", "+" and "=" make every encoding of the key differ from the key itself.
KEY = "sk-live/CANARY+7f3a=9c1e"
USER_PW = "admin:hunter2-PW"

FORMS = {
    "raw": KEY,
    "json-escaped slash": json.dumps(KEY).replace("/", "\\/")[1:-1],
    "url-encoded": quote(KEY, safe=""),
    "url-encoded lower": quote(KEY, safe="").lower(),
    "form-encoded": quote_plus(KEY),
    "base64": base64.b64encode(KEY.encode()).decode(),
    "basic auth": "Basic " + base64.b64encode(f"user:{KEY}".encode()).decode(),
    "bearer": "Bearer " + KEY,
}


def leaks(text: str) -> list[str]:
    plain = [KEY, quote(KEY, safe=""), base64.b64encode(KEY.encode()).decode().rstrip("=")]
    escaped = json.dumps(KEY).replace("/", "\\/")[1:-1]
    basic = base64.b64encode(f"user:{KEY}".encode()).decode()
    return [form for form in [*plain, escaped, basic, "hunter2", "tok-SECRET"] if form in text]


@pytest.mark.parametrize("form", sorted(FORMS))
def test_redact_hides_every_form_of_the_key(form) -> None:
    text = f'{{"error": "bad credentials {FORMS[form]} given"}}'
    assert leaks(redact(text, [KEY])) == []
    assert "bad credentials" in redact(text, [KEY])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://admin:hunter2-PW@host:8000/v1", "http://***@host:8000/v1"),
        ("https://host/x?token=tok-SECRET&a=1", "https://host/x?***"),
        ("s3://key:hunter2@bucket/in.csv", "s3://***@bucket/in.csv"),
    ],
)
def test_a_urls_userinfo_and_query_are_never_shown(url, shown) -> None:
    assert redact(f"can't reach {url} (refused)") == f"can't reach {shown} (refused)"


def echo(kind: str, status: int):
    def handler(seen, request):
        if seen.method != "POST" or seen.inputs == "fine":
            return None
        echoed = {name: value for name, value in FORMS.items()}
        body = json.dumps({"error": "denied", "echo": echoed})
        if kind == "escaped":
            body = body.replace("/", "\\/")
        if status == 200:
            body = json.dumps({"model_id": "m1", "outputs": " | ".join(FORMS.values()),
                               "metadata": {"seen": echoed}})  # fmt: skip
        return web.Response(text=body, status=status, content_type="application/json")

    return handler


@pytest.mark.parametrize(("kind", "status"), [("plain", 500), ("escaped", 400), ("plain", 200)])
def test_an_echoed_key_reaches_no_output_column_file_or_stream(
    tmp_path: Path, scripted_thread, kind, status
) -> None:
    app = scripted_thread(echo(kind, status))
    source = write_parquet(tmp_path / "in.parquet", pa.table({"prompt": ["fine", "echo"]}))
    out = tmp_path / "out.jsonl"
    summary = tmp_path / "summary.json"

    result = invoke(
        *run_args(source, out, app.url, "--max-retries", "1", "--summary-json", str(summary)),
        env={"LLVM_API_KEY": KEY},
    )

    assert result.exit_code in (0, 1), result.output
    assert app.seen[-1].headers["Authorization"] == f"Bearer {KEY}"  # it was sent
    assert leaks(result.output) == []
    assert leaks(out.read_text()) == [] and leaks(summary.read_text()) == []
    assert "***" in out.read_text()


def test_credentials_in_the_base_url_are_never_printed(tmp_path: Path, closed_url) -> None:
    source = write_parquet(tmp_path / "in.parquet", pa.table({"prompt": ["a"]}))
    out = tmp_path / "out.parquet"
    host = closed_url.split("://", 1)[1]
    for url in (f"http://{USER_PW}@{host}", f"http://{host}/?token=tok-SECRET"):
        result = invoke(*run_args(source, out, url, "--max-outage", "0", "--max-retries", "0"))
        assert result.exit_code == 3, result.output
        assert leaks(result.output) == [], result.output
        assert "***" in result.output or "could not connect" in result.output
    bad = invoke(*run_args(source, out, f"ftp://{USER_PW}@{host}"))
    assert bad.exit_code == 2 and leaks(bad.output) == [] and "ftp://***@" in bad.output
