"""Settings travel as finished values: each value checks itself once, resolution happens once
at the face, and every layer below takes the value as it is."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from batch_support import prompts_table, write_parquet

from llvm_batch import (
    AsyncLLVMClient,
    BreakerConfig,
    ClientConfig,
    InputError,
    Limits,
    Priority,
    RetryPolicy,
    ServerError,
    resolve_config,
)
from llvm_batch.batch import BatchOptions
from llvm_batch.batch.plan import plan_run
from llvm_batch.batch.workers import most_workers

MODEL = "llvm-model-1"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("LLVM_API_KEY", "LLVM_BASE_URL", "LLVM_DEFAULT_MODEL", "LLVM_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)


def test_a_client_config_is_composed_of_the_values_its_keywords_name() -> None:
    config = resolve_config(
        max_retries=5,
        retry_delay=0.5,
        max_retry_delay=8.0,
        retry_jitter=False,
        max_concurrent_requests="auto",
        queue_size=7,
        max_rps=3.0,
        breaker={"min_calls": 9},
        timeout=None,
    )
    assert config.retry == RetryPolicy(max_retries=5, delay=0.5, max_delay=8.0, jitter=False)
    assert (config.limits.ceiling, config.limits.queue_size, config.limits.max_rps) == (256, 7, 3.0)
    assert config.limits.describe() == "auto"  # the queue and rate don't change what it is
    assert config.breaker == BreakerConfig(min_calls=9)
    assert config.timeout is None
    assert resolve_config().retry == RetryPolicy()  # the defaults are the values' own


@pytest.mark.parametrize(
    ("build", "says"),
    [
        (lambda: RetryPolicy(max_retries=-1), "max_retries must be an integer of 0 or more"),
        (lambda: RetryPolicy(delay=1000), "looks like milliseconds"),
        (lambda: RetryPolicy(delay=5, max_delay=1), "max_retry_delay must be at least"),
        (lambda: Limits(queue_size=0), "queue_size must be an integer of at least 1"),
        (lambda: Limits(max_rps=0), "max_rps must be a positive number"),
        (lambda: ClientConfig(timeout=-1), "timeout must be a positive number"),
    ],
)
def test_each_value_checks_itself_however_it_is_built(build, says) -> None:
    with pytest.raises(ValueError, match=says):
        build()


def test_a_client_takes_one_finished_config_or_keywords_never_both() -> None:
    config = resolve_config(base_url="http://127.0.0.1:1", max_retries=0, queue_size=3)
    client = AsyncLLVMClient(config=config)
    assert client.config is config
    assert client.stats().concurrency_ceiling == config.limits.ceiling
    with pytest.raises(TypeError, match="either config= or settings"):
        AsyncLLVMClient(config=config, max_retries=2)
    with pytest.raises(TypeError, match="either config= or settings"):
        AsyncLLVMClient("http://127.0.0.1:2", config=config)


def test_a_bad_protocol_says_where_it_came_from(monkeypatch) -> None:
    monkeypatch.setenv("LLVM_PROTOCOL", "soap")
    with pytest.raises(ValueError, match=r"got 'soap' \(from LLVM_PROTOCOL\)"):
        resolve_config()
    with pytest.raises(ValueError, match=r"got 'x' \(from metadata\)"):
        resolve_config(metadata={"llvm_protocol": "x"}, protocol=None)
    assert resolve_config(protocol="openai").protocol == "openai"  # the argument wins


def test_batch_options_hold_one_resolved_client_config(monkeypatch) -> None:
    monkeypatch.setenv("LLVM_DEFAULT_MODEL", "env-model")
    opts = BatchOptions.from_kwargs(
        {"concurrency": 4, "retry_delay": 0.5, "max_outage": 5.0, "priority": "high"}
    )
    assert opts.model == opts.client.default_model == "env-model"
    assert opts.client.limits.ceiling == 4
    assert opts.client.limits.queue_size == most_workers(4)  # no worker is ever refused
    assert opts.client.retry.max_delay == 5.0  # no single wait outlasts the outage budget
    assert opts.priority is Priority.HIGH
    monkeypatch.setenv("LLVM_DEFAULT_MODEL", "changed")
    assert opts.model == "env-model"  # resolved once, at the face
    assert BatchOptions.from_kwargs({"model": "m"}).client.limits.ceiling == 16


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"concurrency": 0}, InputError, "concurrency must be an integer of at least 1"),
        ({"max_retries": -1}, InputError, "max_retries must be an integer of 0 or more"),
        ({"timeout": float("nan")}, InputError, "timeout must be a finite number"),
        ({"priority": "urgent"}, InputError, "priority must be one of high, normal, low"),
        ({"local_server": True}, TypeError, "unknown run_batch option.*local_server"),
        ({"max_concurent": 2}, TypeError, "unknown run_batch option.*max_concurent"),
    ],
)
def test_batch_options_refuse_bad_values_by_name(kwargs, error, says) -> None:
    with pytest.raises(error, match=says):
        BatchOptions.from_kwargs(kwargs)


def test_the_plan_is_frozen_and_made_without_a_server(tmp_path: Path) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(3))
    opts = BatchOptions.from_kwargs({"model": MODEL, "base_url": "http://127.0.0.1:9"})
    plan = plan_run(str(source), None, opts)
    assert plan.model == MODEL
    assert plan.output_path == str(tmp_path / "in.llvm.parquet")
    assert plan.fingerprint["options"]["model"] == MODEL
    assert len(plan.key_prefix) == 16
    assert plan_run(str(source), None, opts).key_prefix == plan.key_prefix  # same job, same keys
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.model = "other"  # type: ignore[misc]
    again = plan_run(str(source), None, BatchOptions.from_kwargs({"model": "other"}))
    assert again.key_prefix != plan.key_prefix  # another model, another job


def test_a_plan_without_a_model_says_how_to_give_one(tmp_path: Path) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(2))
    with pytest.raises(InputError, match="no model given: pass --model or set LLVM_DEFAULT_MODEL"):
        plan_run(str(source), None, BatchOptions.from_kwargs({}))
    dry = plan_run(str(source), None, BatchOptions.from_kwargs({"dry_run": True}))
    assert dry.model == "" and dry.fingerprint == {}


def test_a_client_built_from_a_config_sends_with_its_retry_policy(scripted, reply) -> None:
    async def main() -> int:
        async with scripted(lambda seen, request: reply(503)) as app:
            config = resolve_config(
                base_url=app.url, default_model="m", max_retries=1, retry_delay=0.0, breaker=False
            )
            async with AsyncLLVMClient(config=config, sleep=_no_sleep) as client:
                with pytest.raises(ServerError):
                    await client.run_inference(None, "x")
            return len(app.seen)

    assert asyncio.run(main()) == 2  # max_retries=1: two attempts, not four


async def _no_sleep(_: float) -> None:
    return None
