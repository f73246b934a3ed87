"""Where each setting comes from (argument > metadata > environment > default) and validation."""

from __future__ import annotations

import asyncio
import threading

import pytest

from llvm_batch import AsyncLLVMClient, BreakerConfig, ClientConfig, LLVMClient, Priority
from llvm_batch.config import DEFAULT_BASE_URL, resolve_config

ENV = ("LLVM_API_KEY", "LLVM_BASE_URL", "LLVM_DEFAULT_MODEL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def settings(client: AsyncLLVMClient) -> tuple[str, str | None, str | None]:
    return client.config.base_url, client.get_api_key(), client.get_default_model()


def test_defaults_without_arguments_metadata_or_environment() -> None:
    client = AsyncLLVMClient()
    assert DEFAULT_BASE_URL == "http://localhost:8000"
    assert settings(client) == ("http://localhost:8000", None, None)
    assert client.config.retry.max_retries == 3
    assert client.config.limits.ceiling == 10
    assert client.config.limits.queue_size == 100
    assert client.config.retry.jitter is True
    assert client.breaker_state == "closed"


def test_environment_is_used_when_nothing_else_is_given(monkeypatch) -> None:
    monkeypatch.setenv("LLVM_API_KEY", "env-key")
    monkeypatch.setenv("LLVM_BASE_URL", "http://127.0.0.1:9001")
    monkeypatch.setenv("LLVM_DEFAULT_MODEL", "env-model")

    assert settings(AsyncLLVMClient()) == ("http://127.0.0.1:9001", "env-key", "env-model")


def test_metadata_beats_environment(monkeypatch) -> None:
    monkeypatch.setenv("LLVM_API_KEY", "env-key")
    monkeypatch.setenv("LLVM_DEFAULT_MODEL", "env-model")
    monkeypatch.setenv("LLVM_BASE_URL", "http://127.0.0.1:9001")
    metadata = {"llvm_api_key": "meta-key", "llvm_default_model": "meta-model"}

    assert settings(AsyncLLVMClient(metadata=metadata)) == (
        "http://127.0.0.1:9001",
        "meta-key",
        "meta-model",
    )


def test_arguments_beat_metadata_and_environment(monkeypatch) -> None:
    monkeypatch.setenv("LLVM_API_KEY", "env-key")
    monkeypatch.setenv("LLVM_DEFAULT_MODEL", "env-model")
    monkeypatch.setenv("LLVM_BASE_URL", "http://127.0.0.1:9001")
    metadata = {"llvm_api_key": "meta-key", "llvm_default_model": "meta-model"}

    client = AsyncLLVMClient("http://127.0.0.1:9002", "arg-key", "arg-model", metadata=metadata)
    assert settings(client) == ("http://127.0.0.1:9002", "arg-key", "arg-model")


def test_empty_values_fall_through_to_the_next_source(monkeypatch) -> None:
    monkeypatch.setenv("LLVM_API_KEY", "env-key")
    monkeypatch.setenv("LLVM_BASE_URL", "")
    metadata = {"llvm_api_key": "", "llvm_default_model": "meta-model"}

    client = AsyncLLVMClient(api_key="", default_model="", metadata=metadata)
    assert settings(client) == (DEFAULT_BASE_URL, "env-key", "meta-model")


def test_environment_key_and_model_reach_the_wire(scripted, monkeypatch) -> None:
    monkeypatch.setenv("LLVM_API_KEY", "env-key")
    monkeypatch.setenv("LLVM_DEFAULT_MODEL", "m2")

    async def main():
        async with scripted() as app:
            monkeypatch.setenv("LLVM_BASE_URL", app.url)
            async with AsyncLLVMClient() as client:
                await client.run_inference(None, "x")
            return app

    [seen] = asyncio.run(main()).seen
    assert seen.path == "/models/m2/inference"
    assert seen.headers["Authorization"] == "Bearer env-key"


def test_resolve_config_reads_the_given_environ_mapping() -> None:
    config = resolve_config(environ={"LLVM_DEFAULT_MODEL": "from-mapping"})
    assert config.default_model == "from-mapping"
    assert config.base_url == DEFAULT_BASE_URL


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"max_retries": -1}, "max_retries must be an integer of 0 or more"),
        (
            {"max_concurrent_requests": 0},
            "max_concurrent_requests must be an integer of at least 1",
        ),
        ({"base_url": "ftp://x"}, "base_url must be an http:// or https:// URL such as"),
        ({"base_url": "localhost:8000"}, "base_url must be an http:// or https:// URL"),
        ({"base_url": "http://"}, "base_url must be an http:// or https:// URL"),
        ({"queue_size": 0}, "queue_size must be an integer of at least 1"),
        ({"retry_delay": -0.5}, "retry_delay must be 0 or more seconds"),
        ({"retry_delay": 5, "max_retry_delay": 1}, "max_retry_delay must be at least retry_delay"),
        ({"timeout": 0}, "timeout must be a positive number of seconds, or None"),
        ({"max_rps": -1}, "max_rps must be a positive number"),
        ({"max_retries": 1.5}, "max_retries must be an integer"),
    ],
)
def test_invalid_settings_say_what_to_use(kwargs, says) -> None:
    with pytest.raises(ValueError, match="^" + says.replace("(", r"\(")):
        AsyncLLVMClient(**kwargs)


def test_the_bad_base_url_is_quoted_with_an_example() -> None:
    with pytest.raises(ValueError) as info:
        AsyncLLVMClient("ftp://x")
    assert "'ftp://x'" in str(info.value)
    assert "'http://localhost:8000'" in str(info.value)


def test_an_invalid_sync_client_leaves_no_loop_thread_behind() -> None:
    before = threading.active_count()
    with pytest.raises(ValueError, match="queue_size"):
        LLVMClient(queue_size=0)
    assert threading.active_count() == before


def test_timeout_none_means_no_timeout_and_unknown_options_are_type_errors() -> None:
    assert AsyncLLVMClient(timeout=None).config.timeout is None
    with pytest.raises(TypeError, match="unknown client option"):
        resolve_config(max_retrys=2)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"failure_rate": 0.0}, r"failure_rate must be in \(0, 1\]"),
        ({"failure_rate": 1.5}, r"failure_rate must be in \(0, 1\]"),
        ({"window_seconds": 0}, "window_seconds must be positive"),
        ({"min_calls": 0}, "min_calls must be an integer of at least 1"),
        ({"open_seconds": 0}, "open_seconds must be positive"),
        ({"open_seconds": 10, "max_open_seconds": 5}, "max_open_seconds must be at least"),
        ({"half_open_successes": 0}, "half_open_successes must be at least 1"),
    ],
)
def test_invalid_breaker_settings_say_what_to_use(kwargs, says) -> None:
    with pytest.raises(ValueError, match=says):
        BreakerConfig(**kwargs)


def test_breaker_accepts_a_config_a_mapping_true_or_false() -> None:
    config = BreakerConfig(min_calls=2)
    assert AsyncLLVMClient(breaker=config).config.breaker is config
    assert AsyncLLVMClient(breaker={"open_seconds": 9}).config.breaker == BreakerConfig(
        open_seconds=9
    )
    assert AsyncLLVMClient(breaker=True).config.breaker == BreakerConfig()
    off = AsyncLLVMClient(breaker=False)
    assert off.config.breaker is None
    assert off.breaker_state == "disabled"


def test_config_is_frozen() -> None:
    config = ClientConfig()
    with pytest.raises(AttributeError):
        config.timeout = 9  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.retry.max_retries = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Priority.LOW, Priority.LOW),
        ("high", Priority.HIGH),
        (" Normal ", Priority.NORMAL),
        ("LOW", Priority.LOW),
        (0, Priority.HIGH),
        (2, Priority.LOW),
    ],
)
def test_priority_parse_accepts_names_and_values(value, expected) -> None:
    assert Priority.parse(value) is expected


@pytest.mark.parametrize("value", ["urgent", 3, -1, None, 1.0])
def test_priority_parse_rejects_anything_else(value) -> None:
    with pytest.raises(ValueError, match="priority must be one of high, normal, low"):
        Priority.parse(value)


def test_priority_order_is_high_normal_low() -> None:
    assert sorted([Priority.LOW, Priority.HIGH, Priority.NORMAL]) == [
        Priority.HIGH,
        Priority.NORMAL,
        Priority.LOW,
    ]
