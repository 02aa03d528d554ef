"""Loading a user's behaviour class: `FILE.py:Class` or `module.path:Class`.

Theory of operation. A scenario file, `pbft replica --behaviour`, `bench`, `fuzz` and the
real-process runs all name a behaviour the same way (catalogue.lookup); a reference with a
colon is a user's class and comes here. A file is executed once per path and
modification time as a module of its own (its directory is importable while it loads,
so it may import its neighbours); a module path is imported normally. Whatever goes wrong
is a UsageError of one sentence naming the file and the line: the file is missing, it
does not parse, importing it raised, it has no such class, or the class does not derive
from the public base (`Behaviour` for a replica, `ClientBehaviour` for a client).

Loading reads files, which is the one impure thing in this layer; the classes it returns
are as deterministic as the user wrote them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from types import ModuleType
from typing import Any

from ..errors import UsageError, exception_text, is_interrupt, safe_str
from ..files import Unreadable, check_regular
from ..protocol.messages import MAX_OPERATION
from .api import declaration_problem, did_you_mean

_MODULES: dict[tuple[str, float], ModuleType] = {}


def user_output():
    """While a user's code runs (its module loads, `setup`, the hooks of a simulated
    run), what it prints goes to stderr: stdout stays the tool's (`--json`)."""
    return contextlib.redirect_stdout(sys.stderr)


def resolve_path(path: str, base_dir: str = "") -> str:
    """`path` made absolute against `base_dir` (the scenario file's directory), else the
    working directory."""
    path = os.path.expanduser(path)
    if not os.path.isabs(path) and base_dir:
        path = os.path.join(base_dir, path)
    return os.path.abspath(path)


def absolute(ref: str, base_dir: str = "") -> str:
    """A reference that means the same from any directory: a file reference's path made
    absolute; catalogue names and module paths unchanged."""
    where, _, cls = ref.rpartition(":")
    if is_file(where):
        return f"{resolve_path(where, base_dir)}:{cls}"
    return ref


def is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def load(ref: str, target: str = "replica", base_dir: str = "") -> type:
    """The class `ref` (FILE.py:Class or module.path:Class) names, checked against the
    public base of `target`."""
    where, _, cls_name = ref.rpartition(":")
    if not where or not cls_name.isidentifier():
        raise UsageError(f"{'service' if target == 'service' else 'behaviour'} {ref!r}: expected FILE.py:Class or module.path:Class.")
    kind = "service" if target == "service" else "behaviour"
    if is_file(where):
        shown = where
        module = _load_file(resolve_path(where, base_dir), shown, kind)
    else:
        shown = where
        module = _import(where, kind)
    return _class(module, cls_name, shown, target)


def _line_in(exc: BaseException, path: str) -> int | None:
    frames = [fr for fr in traceback.extract_tb(exc.__traceback__) if os.path.abspath(fr.filename) == path]
    return frames[-1].lineno if frames else None


def _load_file(path: str, shown: str, kind: str = "behaviour") -> ModuleType:
    try:
        check_regular(path)  # a pipe would block the import for ever
        mtime = os.stat(path).st_mtime
    except Unreadable as why:
        raise UsageError(f"{shown}: {why}.") from None
    except FileNotFoundError:
        raise UsageError(f"{shown}: no such {kind} file.") from None
    except OSError as exc:
        raise UsageError(f"{shown}: cannot read it ({exc.strerror}).") from None
    cached = _MODULES.get((path, mtime))
    if cached is not None:
        return cached
    name = "pbft_user_" + hashlib.sha256(path.encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{shown}: not a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    folder = os.path.dirname(path)
    sys.path.insert(0, folder)
    try:
        with user_output():
            spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise UsageError(f"{shown} line {exc.lineno}: syntax error ({exc.msg}).") from None
    except BaseException as exc:  # noqa: BLE001 - anything the user's module raises
        sys.modules.pop(name, None)
        if is_interrupt(exc):
            raise
        line = _line_in(exc, path)
        at = f" line {line}" if line is not None else ""
        raise UsageError(f"{shown}{at}: loading it raised {exception_text(exc)}.") from None
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
    _MODULES[(path, mtime)] = module
    return module


def _import(dotted: str, kind: str = "behaviour") -> ModuleType:
    try:
        with user_output():
            return importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        if exc.name and dotted.startswith(exc.name):
            raise UsageError(f"{kind} module {dotted}: no such module (is it on PYTHONPATH?).") from None
        raise UsageError(f"{kind} module {dotted}: importing it raised {exception_text(exc)}.") from None
    except SyntaxError as exc:
        raise UsageError(f"{exc.filename} line {exc.lineno}: syntax error ({exc.msg}).") from None
    except BaseException as exc:  # noqa: BLE001 - anything the user's module raises
        if is_interrupt(exc):
            raise
        frames = traceback.extract_tb(exc.__traceback__)
        at = f" ({frames[-1].filename} line {frames[-1].lineno})" if frames else ""
        raise UsageError(f"{kind} module {dotted}: importing it raised {exception_text(exc)}{at}.") from None


def _class(module: ModuleType, cls_name: str, shown: str, target: str) -> type:
    from .base import Behaviour
    from .clients import ClientBehaviour

    if target == "service":
        return _service_class(module, cls_name, shown)
    cls = getattr(module, cls_name, None)
    if cls is None:
        classes = [n for n, v in vars(module).items() if inspect.isclass(v) and v.__module__ == module.__name__]
        defines = f"; it defines {', '.join(classes)}" if classes else ""
        raise UsageError(f"{shown} has no class {cls_name}{did_you_mean(cls_name, classes)}{defines}.")
    base = ClientBehaviour if target == "client" else Behaviour
    if not inspect.isclass(cls) or not issubclass(cls, base):
        try:
            line = f" line {inspect.getsourcelines(cls)[1]}"
        except (OSError, TypeError):
            line = ""
        other = Behaviour if target == "client" else ClientBehaviour
        hint = ""
        if inspect.isclass(cls) and issubclass(cls, other):
            hint = f" (it is a {'replica' if target == 'client' else 'client'} behaviour)"
        raise UsageError(
            f"{shown}{line}: {cls_name} does not derive from pbft.adversary.{base.__name__}{hint}."
        )
    problem = declaration_problem(cls)
    if problem:
        raise UsageError(f"{shown}{_class_line(cls)}: {cls_name}.{problem}.")
    _refuse_async_hooks(cls, cls_name, shown)
    return cls


def _refuse_async_hooks(cls: type, cls_name: str, shown: str) -> None:
    """A hook written `async def` would return a coroutine nobody awaits: its body would
    never run and the run would pass as if the attack had been tried. Refused at load."""
    from .base import HOOKS

    for hook in HOOKS:
        fn = getattr(cls, hook, None)
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise UsageError(
                f"{shown}{_class_line(fn)}: {cls_name}.{hook} is an async def, but hooks are called "  # type: ignore[arg-type]
                f"synchronously (its body would never run); define it with a plain def."
            )


def _class_line(cls: Any) -> str:
    """" line N" where `cls` (a class or a function) is defined, or ""."""
    try:
        return f" line {inspect.getsourcelines(cls)[1]}"
    except Exception:  # noqa: BLE001 - no source to show
        return ""


def _service_class(module: ModuleType, cls_name: str, shown: str) -> type:
    """A user's service (target "service"): a class deriving from pbft.service.api.Service."""
    from ..service.api import Service

    cls = getattr(module, cls_name, None)
    if cls is None:
        classes = [n for n, v in vars(module).items() if inspect.isclass(v) and v.__module__ == module.__name__]
        raise UsageError(f"{shown} has no class {cls_name}{did_you_mean(cls_name, classes)}.")
    if not inspect.isclass(cls) or not issubclass(cls, Service):
        raise UsageError(f"{shown}: {cls_name} does not derive from pbft.service.api.Service.")
    if cls.execute is Service.execute:
        raise UsageError(f"{shown}: {cls_name} does not define execute(state, operation, client).")
    return cls


_CHECKED_SERVICES: set[object] = set()
"""Service specs whose `setup` was tried once in this process (`make_service`)."""


def make_service(spec) -> object:
    """A fresh instance of the service a `ServiceSpec` names, made with its parameters:
    UsageError (one sentence) for a class that cannot be loaded or made, whose
    `identity()` raises or is not a string, or (tried once per spec, on an empty state)
    whose `setup` raises. Whatever the class's own code raises is the service's failure,
    named with the class."""
    cls = load(spec.ref, "service", spec.base_dir)
    service = _construct(cls, spec)
    found = service_identity(cls, spec.ref)
    if spec.identity and found != spec.identity:
        # Replicas running another version of the service would compute other states
        # from the same operations: refuse to start rather than diverge.
        raise UsageError(
            f"service {spec.ref} is {found!r}, but the cluster file's [service] says identity = "
            f"{spec.identity!r}: every replica must run the same service and version."
        )
    try:
        fresh = spec not in _CHECKED_SERVICES
    except TypeError:  # an unhashable spec (a test's): try it every time
        fresh = True
    if fresh:
        _try_setup(_construct(cls, spec), spec.ref, _construct(cls, spec))
        try:
            _CHECKED_SERVICES.add(spec)
        except TypeError:
            pass
    return service


def _construct(cls: type, spec) -> object:
    try:
        return cls(**spec.kwargs())
    except TypeError as exc:
        raise UsageError(f"service {spec.ref}: its parameters do not fit ({safe_str(exc)}).") from None
    except BaseException as exc:  # noqa: BLE001 - the user's constructor
        if is_interrupt(exc):
            raise
        raise UsageError(f"service {spec.ref}: making it raised {exception_text(exc)} ({_where(exc)}).") from None


def service_identity(cls: type, ref: str) -> str:
    """`cls.identity()`, checked: UsageError (one sentence) if it raises or says
    something other than a string."""
    identity = getattr(cls, "identity", None)
    if not callable(identity):
        return ""
    try:
        found = identity()
    except BaseException as exc:  # noqa: BLE001 - the user's classmethod
        if is_interrupt(exc):
            raise
        raise UsageError(f"service {ref}: its identity() raised {exception_text(exc)} ({_where(exc)}).") from None
    if not isinstance(found, str):
        raise UsageError(f"service {ref}: its identity() returned {type(found).__name__}, not a string.")
    return found


def _try_setup(service: object, ref: str, again: object | None = None) -> None:
    """Run the service's `setup` on an empty state, so that one that raises is a sentence
    before any run rather than a crash in the first replica that starts; with `again` (a
    second instance), run it twice and compare: a setup whose initial state differs from
    one run to the next (randomness, the clock) would give every replica another genesis
    state, and the group could never agree on a checkpoint."""
    from ..service.api import Hosted, ServiceError

    try:
        first = Hosted(service)  # type: ignore[arg-type]
        second = Hosted(again) if again is not None else None  # type: ignore[arg-type]
    except ServiceError as exc:
        cause = exc.__cause__
        if cause is None:
            raise UsageError(f"service {ref}: {safe_str(exc)}.") from None
        raise UsageError(f"service {ref}: its setup raised {exception_text(cause)} ({_where(cause)}).") from None
    if second is not None and first.digest() != second.digest():
        raise UsageError(
            f"service {ref}: its setup wrote a different initial state each time it ran (randomness, the clock "
            f"or I/O?): every replica would start from another state (docs/services.md, The rules)."
        )


def _where(exc: BaseException) -> str:
    """"FILE line N" of the user's deepest frame in `exc`'s traceback."""
    from .base import failure_of

    return failure_of("", "", exc).where


def check_sample(ref: str, drawn: object) -> tuple[bytes, bool] | None:
    """What a service's `sample_operation` returned, checked: None, or (operation bytes,
    read-only bool); UsageError (one sentence naming the service) otherwise."""
    if drawn is None:
        return None
    if (
        isinstance(drawn, tuple) and len(drawn) == 2
        and type(drawn[0]) is bytes and type(drawn[1]) is bool
    ):
        if len(drawn[0]) > MAX_OPERATION:
            raise UsageError(
                f"service {ref}: sample_operation returned an operation of {len(drawn[0])} bytes, "
                f"more than a request carries ({MAX_OPERATION})."
            )
        return drawn  # type: ignore[return-value]
    try:
        shown = f"{drawn!r:.60}"
    except BaseException as exc:  # noqa: BLE001 - the user's __repr__
        if is_interrupt(exc):
            raise
        shown = type(drawn).__name__
    raise UsageError(
        f"service {ref}: sample_operation must return None or (operation bytes, read_only bool), not {shown}."
    )


def service_from_options(ref: str | None, params: list[str], base_dir: str):
    """`--service REF --service-param K=V ...` as a checked ServiceSpec (the class made
    once, so that a bad one is one sentence now), or None without --service."""
    from ..protocol.config import ServiceSpec
    from .catalogue import parse_value

    if ref is None:
        if params:
            raise UsageError("--service-param needs --service naming the class.")
        return None
    if ":" not in ref:
        raise UsageError(f"--service {ref!r}: expected module.path:Class or FILE.py:Class.")
    parsed: dict[str, bool | int | float | str] = {}
    for item in params:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise UsageError(f"--service-param {item!r}: expected KEY=VALUE.")
        v = parse_value(value)
        if not isinstance(v, bool | int | float | str):
            raise UsageError(f"--service-param {item!r}: a value is a boolean, integer, float or string.")
        parsed[key] = v
    spec = ServiceSpec(ref, tuple(sorted(parsed.items())), base_dir)
    make_service(spec)
    return spec
