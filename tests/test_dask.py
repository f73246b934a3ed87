"""``ddf.llvm`` on a real two-process LocalCluster and on Dask's threaded scheduler."""

from __future__ import annotations

import json
from collections.abc import Iterator

import dask.dataframe as dd
import distributed
import pandas as pd
import pytest

import llvm_batch.dask as llvm_dask
from llvm_batch import InputError
from llvm_batch.server import Faults, ServerThread, reference_output

MODEL = "llvm-model-1"
TOTAL_CONCURRENCY = 4
COMPARED = ["llvm_output", "llvm_status", "llvm_error_type", "llvm_http_status", "llvm_model"]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(host="127.0.0.1", faults=Faults(latency=0.005)) as running:
        yield running


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as running:
        yield running


@pytest.fixture
def dask_client(cluster: distributed.LocalCluster) -> Iterator[distributed.Client]:
    """The cluster's client, the default only for the test that asks for it."""
    with distributed.Client(cluster) as client:
        yield client


@pytest.fixture
def local_clients() -> Iterator[None]:
    """Close the clients ``ddf.llvm`` keeps in this process when the threaded scheduler ran."""
    yield
    llvm_dask.close_clients()


@pytest.fixture
def frame() -> pd.DataFrame:
    prompts = [f"question {i} about {('loops', 'SSA', 'IR')[i % 3]}" for i in range(200)]
    prompts[17] = prompts[123] = ""  # sent nowhere: skipped rows must survive too
    return pd.DataFrame({"id": range(200), "prompt": prompts, "topic": ["t"] * 200})


def _by_id(out: pd.DataFrame) -> pd.DataFrame:
    return out.set_index("id").sort_index()[COMPARED]


def test_cluster_runs_every_row_once_like_pandas_within_the_total_concurrency(
    server: ServerThread, dask_client: distributed.Client, frame: pd.DataFrame
) -> None:
    server.server.reset_stats()
    ddf = dd.from_pandas(frame, npartitions=4)

    lazy = ddf.llvm.infer(
        MODEL,
        base_url=server.url,
        max_tokens=3,
        max_concurrent_requests=TOTAL_CONCURRENCY,
        timeout=33.0,  # marks this test's clients on the workers
    )
    out = lazy.compute()

    assert server.stats.inference_requests == 198
    assert 1 <= server.stats.max_in_flight <= TOTAL_CONCURRENCY
    per_process = dask_client.run(
        lambda: [
            c.config.limits.ceiling
            for c in llvm_dask._CLIENTS.values()
            if c.config.timeout == 33.0
        ]
    )
    assert len(per_process) == 2
    assert [TOTAL_CONCURRENCY // 2] in per_process.values()  # one client per process
    assert all(limits in ([], [TOTAL_CONCURRENCY // 2]) for limits in per_process.values())
    assert sorted(out["id"]) == list(range(200))
    assert out.loc[out["id"] == 5, "llvm_output"].item() == reference_output(
        MODEL, frame.loc[5, "prompt"], 3
    )
    assert list(lazy.columns) == list(out.columns)
    assert lazy.dtypes.to_dict() == out.dtypes.to_dict()

    expected = frame.llvm.infer(MODEL, base_url=server.url, max_tokens=3, progress=False)
    pd.testing.assert_frame_equal(_by_id(out), _by_id(expected))
    assert (out["llvm_status"] == "skipped").sum() == 2


def test_cluster_chat_from_a_json_messages_column(
    server: ServerThread, dask_client: distributed.Client
) -> None:
    talks = [[{"role": "user", "content": f"hello {i}"}] for i in range(12)]
    frame = pd.DataFrame({"id": range(12), "messages": [json.dumps(t) for t in talks]})

    out = dd.from_pandas(frame, npartitions=3).llvm.chat(MODEL, base_url=server.url).compute()

    assert sorted(out["id"]) == list(range(12))
    assert out.set_index("id").loc[7, "llvm_output"] == reference_output(MODEL, "user: hello 7")


def test_threaded_scheduler_shares_one_client_with_the_whole_total(
    server: ServerThread, local_clients: None, frame: pd.DataFrame
) -> None:
    server.server.reset_stats()
    small = frame.head(40)
    lazy = dd.from_pandas(small, npartitions=4).llvm.infer(
        MODEL, base_url=server.url, max_concurrent_requests=3
    )

    out = lazy.compute(scheduler="threads")

    assert sorted(out["id"]) == list(range(40))
    assert 1 <= server.stats.max_in_flight <= 3
    assert lazy.dtypes.to_dict() == out.dtypes.to_dict()
    assert len(llvm_dask._CLIENTS) == 1
    expected = small.llvm.infer(MODEL, base_url=server.url, progress=False)
    pd.testing.assert_frame_equal(_by_id(out), _by_id(expected))


def test_mistakes_fail_when_the_graph_is_built(frame: pd.DataFrame) -> None:
    ddf = dd.from_pandas(frame, npartitions=2)
    with pytest.raises(InputError, match="no column 'text'"):
        ddf.llvm.infer(MODEL, prompt="text")
    with pytest.raises(TypeError, match="not client="):
        ddf.llvm.infer(MODEL, client=object())
    with pytest.raises(TypeError, match="max_concurent_requests"):
        ddf.llvm.infer(MODEL, max_concurent_requests=2)
    with pytest.raises(ValueError, match="protocol must be one of llvm, openai"):
        ddf.llvm.infer(MODEL, protocol="grpc")


def test_run_keywords_are_settled_when_the_graph_is_built(
    server: ServerThread, local_clients: None, frame: pd.DataFrame
) -> None:
    ddf = dd.from_pandas(frame.head(6), npartitions=2)
    with pytest.raises(TypeError, match="not progress="):
        ddf.llvm.chat(MODEL, progress=True)
    with pytest.raises(ValueError, match="priority must be one of high, normal, low"):
        ddf.llvm.infer(MODEL, priority="urgent")

    lazy = ddf.llvm.infer(MODEL, base_url=server.url, priority="low", prefix="x_", max_tokens=2)
    out = lazy.compute(scheduler="threads")

    assert list(lazy.columns) == list(out.columns) and "x_output" in out.columns
    assert list(out["x_output"]) == [reference_output(MODEL, p, 2) for p in frame["prompt"][:6]]


def test_threaded_scheduler_in_openai_mode(
    make_server, local_clients: None, frame: pd.DataFrame
) -> None:
    server = make_server(protocol="openai")
    small = frame.head(12)

    out = (
        dd.from_pandas(small, npartitions=3)
        .llvm.infer(MODEL, base_url=server.url, protocol="openai", max_tokens=3)
        .compute(scheduler="threads")
    )

    assert server.stats.inference_requests == 12
    got = out.set_index("id").sort_index()
    assert list(got["llvm_output"]) == [reference_output(MODEL, p, 3) for p in small["prompt"]]
    assert set(got["llvm_finish_reason"]) == {"length"}


def test_meta_replaces_a_clashing_result_column() -> None:
    meta = pd.DataFrame({"prompt": pd.Series(dtype="string"), "llvm_status": [], "x": []})
    out = llvm_dask.result_meta(meta)
    assert list(out.columns) == [
        "prompt",
        "x",
        *[
            f"llvm_{n}"
            for n in (
                "output",
                "status",
                "error_type",
                "error",
                "http_status",
                "attempts",
                "retry_wait_s",
                "latency_ms",
                "model",
                "input_tokens",
                "output_tokens",
                "finish_reason",
                "metadata",
            )
        ],
    ]
    assert str(out["llvm_attempts"].dtype) == "int16[pyarrow]"
