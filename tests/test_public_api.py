"""The public face: ``__all__`` in step with the package, one error tree, layers kept apart."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import sys
from pathlib import Path

import pytest

import llvm_batch
from llvm_batch import errors

PACKAGE = Path(llvm_batch.__file__).parent
ERROR_CLASSES = [
    obj
    for obj in vars(errors).values()
    if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__
]


def test_every_name_in_all_exists() -> None:
    missing = [name for name in llvm_batch.__all__ if not hasattr(llvm_batch, name)]
    assert missing == []


def test_all_is_sorted_and_has_no_duplicates() -> None:
    assert llvm_batch.__all__ == sorted(set(llvm_batch.__all__))


def test_all_equals_the_public_names_the_package_defines() -> None:
    """``__all__``, the lazy name table and the names imported for type checkers agree, and
    each name resolves to the object its home module defines (httpx's test_exported_members)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    typed = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for inner in node.body
        if isinstance(inner, ast.ImportFrom)
        for alias in inner.names
    }
    public = set(llvm_batch.__all__) - {"__version__"}
    assert public == typed == set(llvm_batch._HOMES)
    for name in public:
        home = importlib.import_module(llvm_batch._HOMES[name], "llvm_batch")
        assert getattr(llvm_batch, name) is getattr(home, name), name
    assert {n for n in dir(llvm_batch) if n in public} == public


def test_version_matches_the_installed_distribution() -> None:
    assert llvm_batch.__version__ == importlib.metadata.version("llvm-batch")


def test_every_error_class_subclasses_llvm_error_and_is_exported() -> None:
    assert len(ERROR_CLASSES) >= 14
    for cls in ERROR_CLASSES:
        assert issubclass(cls, llvm_batch.LLVMError), cls
        assert cls.__name__ in llvm_batch.__all__, cls
        assert getattr(llvm_batch, cls.__name__) is cls


def test_every_error_class_is_drawn_in_the_tree_and_has_its_own_type() -> None:
    for cls in ERROR_CLASSES:
        assert cls.__name__ in errors.__doc__, cls
    leaves = [cls for cls in ERROR_CLASSES if cls is not llvm_batch.LLVMError]
    types = [cls.error_type for cls in leaves]
    assert len(types) == len(set(types))


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (llvm_batch.LLVMConnectionError, ConnectionError),
        (llvm_batch.LLVMTimeoutError, TimeoutError),
        (llvm_batch.InvalidResponseError, ValueError),
        (llvm_batch.InputError, ValueError),
    ],
)
def test_errors_also_inherit_the_builtin_callers_catch(cls, builtin) -> None:
    assert issubclass(cls, builtin)


def test_error_types_match_the_result_column_categories() -> None:
    expected = {
        "server_error": llvm_batch.ServerError,
        "rate_limited": llvm_batch.RateLimitError,
        "timeout": llvm_batch.LLVMTimeoutError,
        "connection": llvm_batch.LLVMConnectionError,
        "invalid_response": llvm_batch.InvalidResponseError,
        "client_error": llvm_batch.BadRequestError,
        "auth": llvm_batch.AuthenticationError,
        "model_not_found": llvm_batch.ModelNotFoundError,
        "invalid_input": llvm_batch.InputError,
    }
    assert {cls.error_type: cls for cls in expected.values()} == expected


def test_retryable_flags_follow_the_design() -> None:
    retryable = {cls.__name__ for cls in ERROR_CLASSES if cls.retryable}
    assert retryable == {
        "LLVMConnectionError",
        "LLVMTimeoutError",
        "RateLimitError",
        "ServerError",
        "InvalidResponseError",
    }


def imports_of(path: Path) -> set[str]:
    """Top-level names a module imports (``.x`` for relative imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.add("." + (node.module or ""))
            else:
                found.add(node.module.split(".")[0])
    return found - {"__future__"}


BASE_AND_POLICY = {
    "compat": set(),
    "config": {".compat", ".retry"},
    "errors": set(),
    "retry": {".errors"},
    "breaker": {".attempt", ".config"},
    "limiter": {".config"},
    "attempt": {".errors", ".retry"},
    "scheduler": {".attempt", ".errors", ".limiter", ".config"},
    "protocol": {".config", ".protocols.base", ".protocols.llvm", ".protocols.openai"},
    "protocols/base": {".errors", ".retry"},
    "protocols/llvm": {".base"},
    "protocols/openai": {".errors", ".base"},
}


BACKPORTS = {"compat": {"typing_extensions"}}


@pytest.mark.parametrize("module", sorted(BASE_AND_POLICY))
def test_base_modules_import_only_the_stdlib_and_lower_layers(module) -> None:
    imported = imports_of(PACKAGE / f"{module}.py")
    third_party = {name for name in imported if not name.startswith(".")}
    # compat's one job: the standard library's name, else its backport on older Pythons.
    allowed = set(sys.stdlib_module_names) | BACKPORTS.get(module, set())
    assert third_party <= allowed, third_party - allowed
    assert {name for name in imported if name.startswith(".")} <= BASE_AND_POLICY[module]


def test_aiohttp_is_imported_by_the_transport_and_the_reference_server_only() -> None:
    importers = sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "aiohttp" in imports_of(path)
    )
    assert importers == ["server.py", "server_openai.py", "transport.py"]


def test_the_package_ships_its_type_marker() -> None:
    assert (PACKAGE / "py.typed").exists()


def test_the_sync_client_mirrors_the_async_signatures() -> None:
    import inspect

    from llvm_batch import AsyncLLVMClient, LLVMClient

    shared = [
        name
        for name, member in inspect.getmembers(AsyncLLVMClient, inspect.iscoroutinefunction)
        if not name.startswith("_") and name not in {"aclose", "close", "send"}
    ]
    assert {"chat", "get_model_info", "run_inference", "list_models", "ping"} <= set(shared)
    for name in shared:
        sync = inspect.signature(getattr(LLVMClient, name))
        coro = inspect.signature(getattr(AsyncLLVMClient, name))
        assert sync == coro, name


#: The async engine's hooks for injected time and randomness, which the sync face leaves out:
#: its engine runs on a hidden loop thread the caller can't keep in step with.
ENGINE_HOOKS = {"clock", "sleep", "wall_clock", "random"}


def test_the_sync_client_is_built_like_the_async_one_minus_the_time_hooks() -> None:
    from llvm_batch import AsyncLLVMClient, LLVMClient

    sync = inspect.signature(LLVMClient.__init__).parameters
    engine = inspect.signature(AsyncLLVMClient.__init__).parameters
    assert ENGINE_HOOKS <= set(engine)
    assert list(sync.values()) == [p for name, p in engine.items() if name not in ENGINE_HOOKS]
    assert str(sync["settings"].annotation) == "Unpack[ClientSettings]"
    for name in ("set_api_key", "get_api_key", "get_default_model", "stats"):
        method = getattr(LLVMClient, name)
        assert inspect.signature(method) == inspect.signature(getattr(AsyncLLVMClient, name))
        assert method.__doc__, name


def test_the_loop_plumbing_stands_apart_from_the_clients() -> None:
    """``loops`` needs nothing of the package; the sync facade and the batch layer use it."""
    assert {name for name in imports_of(PACKAGE / "loops.py") if name.startswith(".")} == set()
    assert ".loops" in imports_of(PACKAGE / "sync.py")
    batch_imports = imports_of(PACKAGE / "batch" / "__init__.py")
    assert ".loops" in batch_imports and ".sync" not in batch_imports


def _attributes_first_set_outside_init(cls: ast.ClassDef) -> dict[str, str]:
    """``self.x`` assigned in a method but neither in ``__init__`` nor declared on the class."""
    declared = {
        node.target.id
        for node in cls.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    declared |= {
        target.id
        for node in cls.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    born: set[str] = set()
    later: dict[str, str] = {}
    methods = [n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for method in methods:
        for node in ast.walk(method):
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets = [node.target]
            else:
                continue
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    if method.name == "__init__":
                        born.add(target.attr)
                    else:
                        later.setdefault(target.attr, method.name)
    return {name: where for name, where in later.items() if name not in born | declared}


def test_every_attribute_is_born_in_init() -> None:
    """A reader finds everything an object holds in its ``__init__`` (or class body)."""
    late = {
        f"{path.relative_to(PACKAGE).as_posix()}:{cls.name}.{name} (in {where})"
        for path in PACKAGE.rglob("*.py")
        for cls in ast.walk(ast.parse(path.read_text()))
        if isinstance(cls, ast.ClassDef)
        for name, where in _attributes_first_set_outside_init(cls).items()
    }
    assert late == set()


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


#: Our size guideline (~400 lines a module, ~150 lines of logic a class), with a little room.
MAX_MODULE_LINES = 420
MAX_CLASS_LOGIC_LINES = 160


def test_modules_and_classes_stay_small() -> None:
    """Modules stay near 400 lines; classes near 150 lines of logic (no blank, comment or
    docstring lines): past that, a module or class has more than one job."""
    too_big = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        name = path.relative_to(PACKAGE).as_posix()
        if len(lines) > MAX_MODULE_LINES:
            too_big.append(f"{name}: {len(lines)} lines")
        tree = ast.parse(source)
        docs = _docstring_lines(tree)
        for cls in ast.walk(tree):
            if not isinstance(cls, ast.ClassDef):
                continue
            logic = sum(
                1
                for number in range(cls.lineno, (cls.end_lineno or cls.lineno) + 1)
                if number not in docs
                and lines[number - 1].strip()
                and not lines[number - 1].strip().startswith("#")
            )
            if logic > MAX_CLASS_LOGIC_LINES:
                too_big.append(f"{name}:{cls.name}: {logic} lines of logic")
    assert too_big == []
