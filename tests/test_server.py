"""The reference server: deterministic answers, auth, 404s, /_stats, and its fault knobs."""

from __future__ import annotations

import asyncio
import json
import threading

import aiohttp
import pytest

from llvm_batch import AsyncLLVMClient, AuthenticationError, ModelNotFoundError
from llvm_batch.server import THREAD_NAME, Faults, ReferenceServer, ServerThread, reference_output

MODEL = "llvm-model-1"


async def fetch(method: str, url: str, **kwargs) -> tuple[int, dict, dict]:
    """One raw HTTP exchange: (status, headers, decoded JSON body)."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, **kwargs) as response:
            return response.status, dict(response.headers), json.loads(await response.read())


def test_reference_output_echoes_and_cuts_to_max_tokens() -> None:
    assert reference_output("m", "a b c") == "m echo: a b c"
    assert reference_output("m", "a b c", max_tokens=3) == "m echo: a"
    assert reference_output("m", "a b c", max_tokens=0) == ""
    assert reference_output("m", {"k": [1, 2]}) == 'm echo: {"k":[1,2]}'


@pytest.mark.parametrize(
    ("inputs", "max_tokens"), [("Hello there world", None), ("one two three", 4), ({"x": 1}, None)]
)
def test_inference_answers_are_deterministic(server, inputs, max_tokens) -> None:
    async def main():
        async with AsyncLLVMClient(server.url) as client:
            first = await client.run_inference(MODEL, inputs, max_tokens=max_tokens)
            again = await client.run_inference(MODEL, inputs, max_tokens=max_tokens)
            return first, again

    first, again = asyncio.run(main())
    assert first == again
    assert first["model_id"] == MODEL
    assert first["outputs"] == reference_output(MODEL, inputs, max_tokens)
    assert set(first["metadata"]) == {"input_tokens", "output_tokens", "finish_reason"}


def test_models_and_model_info(make_server) -> None:
    server = make_server(models=["a", "org/b"])

    async def main():
        async with AsyncLLVMClient(server.url) as client:
            return await client.model_ids(), await client.get_model_info("org/b")

    models, info = asyncio.run(main())
    assert models == ["a", "org/b"]
    assert info["model_id"] == "org/b"
    assert info["status"] == "loaded"


def test_unknown_model_is_404_for_info_and_inference(server) -> None:
    async def main():
        async with AsyncLLVMClient(server.url) as client:
            for call in (client.get_model_info("nope"), client.run_inference("nope", "x")):
                with pytest.raises(ModelNotFoundError, match="'nope' not found"):
                    await call

    asyncio.run(main())
    assert server.stats.statuses[404] == 2
    assert server.stats.inference_requests == 0


def test_api_key_is_required_when_set(make_server) -> None:
    server = make_server(api_key="right")

    async def main():
        results = []
        for key in (None, "wrong", "right"):
            async with AsyncLLVMClient(server.url, api_key=key, max_retries=0) as client:
                try:
                    results.append(await client.model_ids())
                except AuthenticationError as error:
                    results.append(error.status)
        stats = await fetch("GET", server.url + "/_stats")  # control routes need no key
        return results, stats

    results, (status, _, stats) = asyncio.run(main())
    assert results == [401, 401, ["llvm-model-1", "llvm-model-2"]]
    assert status == 200
    assert stats["statuses"] == {"200": 1, "401": 2}


def test_stats_count_what_the_server_saw(server) -> None:
    async def main():
        async with AsyncLLVMClient(server.url) as client:
            await client.list_models()
            await client.run_inference(MODEL, "a", idempotency_key="k1")
            await client.run_inference(MODEL, "a", idempotency_key="k1")
            await client.run_inference(MODEL, "b")
        return await fetch("GET", server.url + "/_stats")

    status, _, stats = asyncio.run(main())
    assert status == 200
    assert stats == {
        "requests": 4,
        "inference_requests": 3,
        "in_flight": 0,
        "max_in_flight": 1,
        "statuses": {"200": 4},
        "faults": {},
        "distinct_keys": 2,
    }
    assert server.stats.requests == 4  # /_stats itself is not counted


def test_stats_reset_and_recorded_inputs(make_server) -> None:
    server = make_server(record_inputs=True)

    async def main():
        async with AsyncLLVMClient(server.url) as client:
            await client.run_inference(MODEL, "first")
            await client.run_inference(MODEL, {"second": 2})
        inputs = list(server.stats.inputs)
        await fetch("POST", server.url + "/_stats/reset")
        return inputs, await fetch("GET", server.url + "/_stats")

    inputs, (_, _, stats) = asyncio.run(main())
    assert inputs == ["first", {"second": 2}]
    assert (stats["requests"], stats["inference_requests"]) == (0, 0)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"not json", 400, "not JSON"),
        (b'{"prompt": "x"}', 422, "'inputs'"),
        (b'["x"]', 422, "'inputs'"),
        (b'{"inputs": "x", "max_tokens": -1}', 422, "max_tokens"),
        (b'{"inputs": "x", "max_tokens": "5"}', 422, "max_tokens"),
    ],
)
def test_malformed_inference_requests_are_rejected(server, body, status, says) -> None:
    url = f"{server.url}/models/{MODEL}/inference"
    got, _, answer = asyncio.run(fetch("POST", url, data=body))
    assert got == status
    assert says in answer["error"]


def test_rate_limit_fault_sends_retry_after(make_server) -> None:
    server = make_server(faults=Faults(rate_limit_rate=1.0, retry_after=2.5))
    url = f"{server.url}/models/{MODEL}/inference"
    status, headers, answer = asyncio.run(fetch("POST", url, json={"inputs": "x"}))
    assert status == 429
    assert headers["Retry-After"] == "2.5"
    assert server.stats.faults["rate_limit"] == 1


def test_faults_can_be_changed_live(server) -> None:
    url = f"{server.url}/models/{MODEL}/inference"

    async def main():
        before = await fetch("POST", url, json={"inputs": "x"})
        changed = await fetch("POST", server.url + "/_faults", json={"error_rate": 1.0})
        during = await fetch("POST", url, json={"inputs": "y"})
        refused = await fetch("POST", server.url + "/_faults", json={"error_rate": 2.0})
        unknown = await fetch("POST", server.url + "/_faults", json={"nonsense": 1})
        server.set_faults(error_rate=0.0)
        after = await fetch("POST", url, json={"inputs": "z"})
        return before, changed, during, refused, unknown, after

    before, changed, during, refused, unknown, after = asyncio.run(main())
    assert before[0] == 200
    assert changed[0] == 200 and changed[2]["error_rate"] == 1.0
    assert during[0] == 503
    assert refused[0] == 400 and "fault rates" in refused[2]["error"]
    assert unknown[0] == 400 and "bad faults" in unknown[2]["error"]
    assert after[0] == 200


def test_faults_depend_only_on_seed_request_and_sighting() -> None:
    faults = Faults(error_rate=0.3, rate_limit_rate=0.2, reset_rate=0.1, seed=5)
    picks = [faults.pick(f"m:{i}", seen) for i in range(200) for seen in (0, 1)]
    assert picks == [faults.pick(f"m:{i}", seen) for i in range(200) for seen in (0, 1)]
    counts = {name: picks.count(name) for name in ("error", "rate_limit", "reset", "bad_json")}
    assert 80 <= counts["error"] <= 160
    assert counts["bad_json"] == 0
    reseeded = Faults(error_rate=0.3, rate_limit_rate=0.2, reset_rate=0.1, seed=6)
    assert picks != [reseeded.pick(f"m:{i}", seen) for i in range(200) for seen in (0, 1)]


def test_fail_first_fails_each_request_that_many_times() -> None:
    faults = Faults(fail_first=2)
    assert [faults.pick("k", seen) for seen in range(4)] == ["error", "error", None, None]


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"error_rate": 1.5}, "fault rates must each be in"),
        ({"reset_rate": -0.1}, "fault rates must each be in"),
        ({"error_rate": 0.6, "bad_json_rate": 0.6}, "add up to at most 1"),
        ({"latency": -1}, "must not be negative"),
        ({"retry_after": -1}, "must not be negative"),
        ({"fail_first": -1}, "must not be negative"),
        ({"capacity": -1}, "capacity must be a whole number"),
        ({"outage_at": -1.0}, "must not be negative"),
    ],
)
def test_invalid_faults_are_rejected(kwargs, says) -> None:
    with pytest.raises(ValueError, match=says):
        Faults(**kwargs)


def test_reference_server_runs_inside_a_loop_too() -> None:
    async def main():
        async with ReferenceServer(models=["only"]) as running:
            assert running.url.startswith("http://127.0.0.1:")
            async with AsyncLLVMClient(running.url) as client:
                return await client.model_ids()

    assert asyncio.run(main()) == ["only"]


def test_server_thread_binds_loopback_and_stops_cleanly() -> None:
    with ServerThread() as running:
        assert running.url.startswith("http://127.0.0.1:")
        assert not running.url.endswith(":0")
    running.stop()  # a second stop is harmless


def test_a_server_thread_that_cannot_listen_leaves_no_thread_behind(server) -> None:
    taken = ServerThread(port=int(server.url.rsplit(":", 1)[1]))
    with pytest.raises(OSError):  # the port is the running server's
        taken.start()
    assert not taken._thread.is_alive()
    assert [t.name for t in threading.enumerate()].count(THREAD_NAME) == 1  # the fixture's


def test_capacity_answers_503_at_once_beyond_n_in_flight(make_server) -> None:
    server = make_server(faults=Faults(capacity=2, latency=0.05))

    async def main():
        url = f"{server.url}/models/{MODEL}/inference"
        return await asyncio.gather(*(fetch("POST", url, json={"inputs": "x"}) for _ in range(5)))

    answers = asyncio.run(main())
    assert sorted(status for status, _, _ in answers) == [200, 200, 503, 503, 503]
    assert server.stats.faults["capacity"] == 3
    assert all("at capacity" in body["error"] for status, _, body in answers if status == 503)


def test_an_outage_window_answers_every_inference_503_then_heals(make_server) -> None:
    server = make_server()

    async def main():
        url = f"{server.url}/models/{MODEL}/inference"
        status, _, faults = await fetch(
            "POST", f"{server.url}/_faults", json={"outage_at": 0.0, "outage_s": 0.3}
        )
        assert status == 200 and faults["outage_s"] == 0.3
        during = [await fetch("POST", url, json={"inputs": str(i)}) for i in range(3)]
        await asyncio.sleep(0.35)
        after = await fetch("POST", url, json={"inputs": "x"})
        return during, after

    during, after = asyncio.run(main())
    assert [status for status, _, _ in during] == [503, 503, 503]
    assert after[0] == 200
    assert server.stats.faults["outage"] == 3


def test_serve_takes_capacity_and_outage_options() -> None:
    from click.testing import CliRunner

    from llvm_batch.cli import main as cli

    result = CliRunner().invoke(cli, ["serve", "--capacity", "-1"])
    assert result.exit_code == 2 and "--capacity" in result.output
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert "--outage-at" in result.output and "--outage-s" in result.output


def test_the_server_module_still_exports_what_users_import() -> None:
    import llvm_batch.server as server
    import llvm_batch.server_faults as server_faults

    names = (
        "AppServer DEFAULT_MODELS FAULT_FIELDS Faults Generated ReferenceServer ServerStats "
        "ServerThread error_response reference_output serve_forever"
    ).split()
    assert [name for name in names if not hasattr(server, name)] == []
    assert server.Faults is server_faults.Faults
    assert server.FAULT_FIELDS[:3] == ("latency", "error_rate", "rate_limit_rate")
