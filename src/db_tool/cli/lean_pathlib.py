"""Import pathlib without the modules it needs only for globbing, matching and URIs.

pathlib imports `re` (which imports `enum`), `fnmatch`, `urllib.parse` (which imports
`ipaddress`) and `functools` (which imports `collections`) at its top, but uses them only
inside `glob`, `match` and `as_uri` (functools: the lru_cache on glob's selectors). On this
project's hook paths (a reuse, a stop, a warm fresh init) that is ~13 ms of a ~100 ms command
for modules nobody calls. `install()` puts a finder first on `sys.meta_path` that, when
pathlib is first imported (by whatever module), executes it with those four standing in as
deferred modules: the first attribute anyone reads from one imports the real module and
answers from it, so every behaviour is the standard one; only the moment of the import moves.
The stand-ins are in `sys.modules` only while pathlib's own code runs, and the finder removes
itself on that first import. A path that never imports pathlib (every --help) pays nothing.

The same idea as Mercurial's demandimport, cut down to four modules and one importer. It
runs in db-tool's own commands only (cli/launch.py), never on `import db_tool`: a library
user's process keeps its imports as they are.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType
else:
    ModuleType = type(sys)  # types.ModuleType, without importing types

DEFERRED = ("re", "fnmatch", "urllib.parse", "functools")


class _Deferred(ModuleType):
    """Stands for a module not imported yet: any public attribute imports it."""

    def __getattr__(self, attr: str) -> object:
        if attr.startswith("__"):
            # The import system probes __path__, __spec__ and the like: answering would
            # import the module, which is what this avoids.
            raise AttributeError(attr)
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]  # read during pathlib's own import: the real one now
        real = __import__(name, fromlist=["_"])
        pathlib = sys.modules.get("pathlib")
        if pathlib is not None:
            for key, value in list(vars(pathlib).items()):
                if value is self:
                    setattr(pathlib, key, real)  # later reads go straight to the module
        return getattr(real, attr)


def _lru_cache(*args: object, **kwargs: object) -> Callable[[Callable[..., object]],
                                                             Callable[..., object]]:
    """functools.lru_cache as pathlib applies it at import (to glob's selector factory), with
    functools imported and the real cache built on the first call."""

    def decorate(func: Callable[..., object]) -> Callable[..., object]:
        cached: Callable[..., object] | None = None

        def call(*a: object, **k: object) -> object:
            nonlocal cached
            if cached is None:
                from functools import lru_cache

                cached = lru_cache(*args, **kwargs)(func)  # type: ignore[call-overload]
            return cached(*a, **k)

        return call

    return decorate


def _quote_from_bytes(*args: object, **kwargs: object) -> str:
    from urllib.parse import quote_from_bytes

    return quote_from_bytes(*args, **kwargs)  # type: ignore[arg-type]


def _exec_deferring(exec_module: Callable[[ModuleType], None], module: ModuleType) -> None:
    """Run pathlib's code with the DEFERRED modules (those not loaded yet) deferred."""
    stand_ins: dict[str, ModuleType] = {}
    for name in DEFERRED:
        if name not in sys.modules:
            stand_ins[name] = sys.modules[name] = _Deferred(name)
    parse = stand_ins.get("urllib.parse")
    if parse is not None:
        # pathlib reads it with `from urllib.parse import quote_from_bytes`, at import time.
        parse.quote_from_bytes = _quote_from_bytes  # type: ignore[attr-defined]
    tools = stand_ins.get("functools")
    if tools is not None:
        # pathlib: `if hasattr(functools, "lru_cache"): _make_selector = functools.lru_cache()(…)`
        tools.lru_cache = _lru_cache  # type: ignore[attr-defined]
    try:
        exec_module(module)
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]


class _Loader:
    """pathlib's own loader, with its exec_module run by _exec_deferring."""

    def __init__(self, loader: object) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)  # type: ignore[attr-defined, no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        _exec_deferring(self._loader.exec_module, module)  # type: ignore[attr-defined]

    def __getattr__(self, attr: str) -> object:  # get_source, get_code, ... as pathlib's own
        return getattr(self._loader, attr)


class _Finder:
    """First on sys.meta_path until pathlib is imported; finds nothing else."""

    @classmethod
    def find_spec(cls, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if name != "pathlib":
            return None
        if cls in sys.meta_path:
            sys.meta_path.remove(cls)  # once: this import is the only one it takes part in
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = None if find is None else find(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec  # type: ignore[no-any-return]
        return None


def install() -> None:
    """Defer the DEFERRED modules on pathlib's first import (if that is still to come in this
    process)."""
    if "pathlib" not in sys.modules and _Finder not in sys.meta_path:
        sys.meta_path.insert(0, _Finder)
