"""The frame faces' keywords: one typed definition, one splitter, one resolution."""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pytest

import llvm_batch
import llvm_batch.dask as llvm_dask
from llvm_batch import LLVMClient, Priority
from llvm_batch.accessor import LLVMFrameAccessor, LLVMSeriesAccessor
from llvm_batch.batch.cache import ResultCache
from llvm_batch.batch.prompts import OPTION_NAMES
from llvm_batch.config import CONNECTION_NAMES, DEFAULT_MAX_OUTAGE, SETTING_NAMES, ClientSettings
from llvm_batch.frame_options import (
    MODEL_HINT,
    RUN_DEFAULTS,
    ClientOptions,
    FrameCall,
    FrameOptions,
    RunOptions,
    SamplingOptions,
    infer_spec,
    result_cache,
    split_keywords,
)

PACKAGE = Path(llvm_batch.__file__).parent

FACES = [
    LLVMFrameAccessor.infer,
    LLVMFrameAccessor.ainfer,
    LLVMFrameAccessor.chat,
    LLVMFrameAccessor.achat,
    LLVMFrameAccessor.retry_errors,
    LLVMSeriesAccessor.infer,
    LLVMSeriesAccessor.ainfer,
    llvm_dask.LLVMDaskAccessor.infer,
    llvm_dask.LLVMDaskAccessor.chat,
]


def keys(typed_dict: type) -> set[str]:
    return set(typed_dict.__required_keys__ | typed_dict.__optional_keys__)  # type: ignore[attr-defined]


def test_frame_options_are_the_sampling_run_and_client_keywords_built_by_inheritance() -> None:
    assert keys(SamplingOptions) == set(OPTION_NAMES)
    assert keys(RunOptions) == {"client", "progress", "cache", "prefix", "priority", "max_outage"}
    assert keys(ClientOptions) == SETTING_NAMES | CONNECTION_NAMES
    assert keys(FrameOptions) == keys(SamplingOptions) | keys(RunOptions) | keys(ClientOptions)
    assert not FrameOptions.__required_keys__  # type: ignore[attr-defined]
    assert set(RUN_DEFAULTS) == keys(RunOptions)


def test_the_client_keywords_extend_client_settings_instead_of_copying_them() -> None:
    tree = ast.parse((PACKAGE / "frame_options.py").read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    bases = {name: [ast.unparse(b) for b in node.bases] for name, node in classes.items()}
    assert bases["ClientOptions"][0] == ClientSettings.__name__
    assert bases["FrameOptions"][:3] == ["SamplingOptions", "RunOptions", "ClientOptions"]
    written = {
        stmt.target.id
        for node in classes.values()
        for stmt in node.body
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
    }
    assert not written & SETTING_NAMES


@pytest.mark.parametrize("method", FACES, ids=lambda m: m.__qualname__)
def test_every_frame_face_takes_the_one_typed_definition(method) -> None:
    kwargs = inspect.signature(method).parameters["kwargs"]
    assert kwargs.kind is inspect.Parameter.VAR_KEYWORD
    assert typing.get_type_hints(method)["kwargs"] == typing.Unpack[FrameOptions]
    assert method.__doc__


def test_the_sync_client_and_its_faces_have_no_untyped_keywords() -> None:
    for method in [LLVMClient.__init__, *FACES]:
        hints = typing.get_type_hints(method)
        assert all(hint is not typing.Any for hint in hints.values()), method


def test_split_sorts_the_keywords_and_fills_the_run_defaults() -> None:
    sampling, run, client = split_keywords(
        {
            "max_tokens": 3,
            "temperature": None,  # None: the server's default, not sent
            "priority": "high",
            "cache": True,
            "base_url": "http://127.0.0.1:9",
            "max_retries": 0,
            "max_retrys": 1,  # type: ignore[typeddict-unknown-key]
        }
    )
    assert sampling == {"max_tokens": 3}
    assert run == {**RUN_DEFAULTS, "priority": "high", "cache": True}
    assert run["prefix"] == "llvm_" and run["max_outage"] == DEFAULT_MAX_OUTAGE
    assert client == {"base_url": "http://127.0.0.1:9", "max_retries": 0, "max_retrys": 1}


def test_the_frame_modules_have_no_keyword_lists_and_read_no_environment_of_their_own() -> None:
    for name in ("accessor.py", "dask.py", "frame_options.py"):
        tree = ast.parse((PACKAGE / name).read_text())
        assigned = {
            target.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        assert not assigned & {"_RUN_KEYS", "_CALL_KEYS"}, name
        reads = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not reads & {"environ", "getenv"}, name


def _resolve(model=None, **kwargs) -> FrameCall:
    sampling, run, client = split_keywords(kwargs)
    return FrameCall.resolve(infer_spec("prompt", None, sampling), model, run, client)


def test_resolution_settles_model_priority_cache_and_progress_once(monkeypatch) -> None:
    monkeypatch.setenv("LLVM_DEFAULT_MODEL", "env-model")
    call = _resolve(base_url="http://127.0.0.1:9", priority="LOW", cache=True, progress=False)
    assert (call.model, call.config.default_model) == ("env-model", "env-model")
    assert call.priority is Priority.LOW
    assert call.cache is result_cache(True) and isinstance(call.cache, ResultCache)
    assert call.progress == "off" and call.client is None
    assert call.config.base_url == "http://127.0.0.1:9"
    meta = _resolve(metadata={"llvm_default_model": "meta-model"}, max_tokens=2)
    assert meta.model == "meta-model" and dict(meta.spec.options) == {"max_tokens": 2}
    given = _resolve("arg-model", default_model="other", metadata={"llvm_default_model": "m"})
    assert (given.model, given.config.default_model) == ("arg-model", "arg-model")


def test_resolution_errors_say_what_to_do(monkeypatch) -> None:
    monkeypatch.delenv("LLVM_DEFAULT_MODEL", raising=False)
    with pytest.raises(ValueError, match=f"^no model given: {MODEL_HINT}$"):
        _resolve()
    assert MODEL_HINT == "pass model=, a client with a default model, or set LLVM_DEFAULT_MODEL"
    with pytest.raises(ValueError, match="priority must be one of high, normal, low"):
        _resolve("m", priority="urgent")
    with pytest.raises(TypeError, match="unknown client option"):
        _resolve("m", max_retrys=2)
    with LLVMClient("http://127.0.0.1:9", default_model="client-model") as client:
        assert _resolve(client=client).config is client.config
        assert _resolve(client=client).model == "client-model"
        with pytest.raises(TypeError, match=r"either client= or client options.*\(max_retries\)"):
            _resolve(client=client, max_retries=1)
