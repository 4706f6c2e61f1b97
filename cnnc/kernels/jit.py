"""`cached_njit`: Numba's `njit(cache=True)` with a disk cache that concurrent processes
can share.

Numba's cache keeps, per function, an index file (signature and CPU -> data file) and
one data file per compiled overload, named by the first number the index does not use
yet. Saving reads the index, picks that number, writes the index back and then the data.
Two processes that save two different overloads of one function at the same moment
(`channel_segment` has two: one with a literal channel count of 1) both pick `.1.nbc`;
the index keeps one key and the data file holds the other process's code, which a later
process loads for the wrong argument types and crashes in (SIGSEGV). Here the data file
is named after a hash of its key, so writers of different overloads never share a file
and a data file always holds the code of the key that names it; the data is written
before the index points at it, and the index update (read, add, write) holds an
exclusive lock so no writer drops another's entry.

Numba keys an entry on the function's own bytecode, its file's time stamp and the CPU
(name and features), but kernels inline helpers of other files (and `run_plan` calls
kernels by the argument layouts of `interpreter.kernel_types`): the key here also holds a
digest of every kernel source, so an entry compiled from other sources is never loaded,
wherever the cache lives (`NUMBA_CACHE_DIR` too), and the CPU target whose tile the
kernels compile in (cnnc/backend.py).

A kernel loaded from the cache hands its start-up hooks (a parallel kernel's: start
Numba's thread pool) on to the callers compiled against it, which Numba does not
(`_SharedFunctionCache.load_overload`).

`call_linked(helper, *args)` calls a cached helper (a kernel's chunk of work) through a
symbol the dynamic linker resolves, not as a Numba call. A Numba call links the callee's
whole module into the caller's, and LLVM then optimises it again (inlining it into each
call site) and generates its machine code once more, for the caller and again for each
parallel loop body that calls it: `pool2d` compiled in 17.6 s with `_pool_chunk` linked,
in 1.7 s plus `_pool_chunk`'s 8.8 s without. The helper is compiled (or loaded) once, for
the argument types of the call, and its address registered under a name made of its
module, name and types (`_link`). A cache entry holds the links its code declares
(`_links_of`, read off the code itself, so a call in a function linked into the kernel
counts too), and loading it registers them first: code loaded with a symbol left
unregistered would call address 0.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import os
from pathlib import Path

import numba
from llvmlite import binding as llvm
from numba import types
from numba.core import cgutils
from numba.core.caching import FunctionCache, IndexDataCacheFile
from numba.core.errors import TypingError
from numba.core.imputils import lower_constant
from numba.extending import intrinsic, models, register_model, typeof_impl

from ..backend import current_target

try:
    import fcntl
except ImportError:  # Windows: no lock; a lost index entry only costs a recompile
    fcntl = None


@functools.cache
def sources_digest() -> str:
    """sha256 of every kernel source file (this package's *.py)."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _exclusive(path: str):
    if fcntl is None:
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- helpers called through a symbol (call_linked) ---------------------------------------
# A link is (module, function name, argument types): a linked_njit helper compiled for
# those types, whose address is registered under the link's symbol.
_LINK_PREFIX = "cnnc.linked."
_NUMBA_OPT = int(numba.core.config.OPT)  # Numba's LLVM level (NUMBA_OPT), as imported
_links: dict[str, tuple] = {}  # symbol -> link, of the links registered in this process


def _symbol(link: tuple) -> str:
    module, name, argtypes = link
    digest = hashlib.sha256(repr(argtypes).encode()).hexdigest()[:16]
    return f"{_LINK_PREFIX}{module}.{name}.{digest}"


def _link(link: tuple, helper: Linked | None = None) -> str:
    """Compile (or load) the helper of ``link`` (``helper``, else the module-level name
    the link gives) at Numba's own optimisation level unless the helper sets its own, and
    register its address under its symbol, once a process; the symbol."""
    symbol = _symbol(link)
    if _links.get(symbol) == link:
        return symbol
    if symbol in _links:
        raise RuntimeError(f"two links named {symbol}: {_links[symbol]} and {link}")
    module, name, argtypes = link
    found = getattr(importlib.import_module(module), name, None)
    if helper is not None and found is not helper:  # a cached caller finds it by name
        raise TypingError(f"call_linked: {module}.{name} is not the module-level name of "
                          "a linked_njit helper")
    if not isinstance(found, Linked):
        raise TypingError(f"call_linked: {module}.{name} is not a linked_njit helper")
    with _llvm_opt_level(_NUMBA_OPT):  # not the caller's llvm_opt (jit.cached_njit)
        found.dispatcher.compile(argtypes)
    compiled = found.dispatcher.overloads[argtypes]
    if compiled.signature.return_type != types.none:
        raise TypingError(f"call_linked: {name} returns {compiled.signature.return_type}, "
                          "not nothing")
    llvm.add_symbol(symbol, native_address(compiled))
    _links[symbol] = link
    return symbol


def native_address(compiled) -> int:
    """The address of a compiled overload's code, called by Numba's own convention (not
    its Python wrapper); it stays valid while the overload's dispatcher keeps the code."""
    address = compiled.library.get_pointer_to_function(compiled.fndesc.llvm_func_name)
    if not address:
        raise RuntimeError(f"no compiled code of {compiled.fndesc.qualname} found")
    return address


def _links_of(library) -> tuple:
    """The links the code of ``library`` (a compiled function, with what was linked into
    it) calls, with their symbols: its declared, undefined functions named by a link's
    symbol."""
    return tuple((f.name, _links[f.name]) for f in library._final_module.functions
                 if f.is_declaration and f.name.startswith(_LINK_PREFIX))


class Linked:
    """A ``cached_njit`` function that jitted code calls with ``call_linked``; Python
    calls it as the function itself."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        functools.update_wrapper(self, dispatcher.py_func)

    def __call__(self, *args):
        return self.dispatcher(*args)


class _LinkedType(types.Opaque):
    """The Numba type of a ``Linked`` helper (not a Dispatcher: a tuple of a call's
    arguments that starts with a Dispatcher types as a first-class function)."""

    def __init__(self, helper: Linked):
        self.helper = helper
        super().__init__(f"linked({helper.__module__}.{helper.__qualname__})")

    @property
    def key(self):
        return self.helper


register_model(_LinkedType)(models.OpaqueModel)
typeof_impl.register(Linked)(lambda value, context: _LinkedType(value))
lower_constant(_LinkedType)(lambda context, builder, ty, value: context.get_dummy_value())


def linked_njit(**options):
    """``cached_njit(**options)`` for a helper that jitted code calls with
    ``call_linked`` (a kernel's chunk of work): a ``Linked``."""
    return lambda py_func: Linked(cached_njit(**options)(py_func))


@intrinsic
def call_linked(typingctx, helper, *args):
    """``helper(*args)`` for a ``linked_njit`` helper that returns nothing, called
    through a symbol rather than linked into the caller (see the module docstring).
    Literal arguments are passed as their plain types; the helper is compiled for those."""
    if not isinstance(helper, _LinkedType):
        raise TypingError(f"call_linked calls a linked_njit function, not {helper}")
    argtypes = tuple(types.unliteral(a) for a in args)
    link = (helper.helper.__module__, helper.helper.__qualname__, argtypes)
    symbol = _link(link, helper.helper)
    sig = types.none(helper, types.StarArgTuple.from_types(args))

    def codegen(context, builder, sig, llargs):
        fnty = context.call_conv.get_function_type(types.none, argtypes)
        fn = cgutils.get_or_insert_function(builder.module, fnty, symbol)
        values = [context.cast(builder, builder.extract_value(llargs[1], i), a, t)
                  for i, (a, t) in enumerate(zip(args, argtypes, strict=True))]
        status, _ = context.call_conv.call_function(builder, fn, types.none, argtypes, values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()

    return sig, codegen


class _KeyedCacheFile(IndexDataCacheFile):
    """Numba's index and data files, each data file named after its key; an entry's data
    holds the links its code needs, registered before it is loaded."""

    links = ()  # those of the entry being saved (_SharedFunctionCache.save_overload)

    def save(self, key, data):
        data = (self.links, data)
        number = int(hashlib.sha256(repr(key).encode()).hexdigest()[:15], 16)
        data_name = self._data_name(number)
        self._save_data(data_name, data)  # atomic (a temporary file, then a rename)
        with _exclusive(self._index_path + ".lock"):
            overloads = self._load_index()
            overloads[key] = data_name
            self._save_index(overloads)

    def load(self, key):
        saved = super().load(key)
        if saved is None:
            return None
        links, data = saved
        try:
            for symbol, link in links:
                if _link(link) != symbol:
                    return None
        except Exception:  # noqa: BLE001 - as if not cached: the compile says what is wrong
            return None
        return data


class _SharedFunctionCache(FunctionCache):
    def __init__(self, py_func):
        super().__init__(py_func)
        self._cache_file = _KeyedCacheFile(self._cache_path, self._impl.filename_base,
                                           self._impl.locator.get_source_stamp())

    def save_overload(self, sig, cres):
        self._cache_file.links = _links_of(cres.library)
        try:
            super().save_overload(sig, cres)
        finally:
            self._cache_file.links = ()

    def load_overload(self, sig, target_context):
        cres = super().load_overload(sig, target_context)
        if cres is not None:
            # Numba runs a loaded entry's reload_init (a parallel kernel's: start the
            # thread pool) but does not keep it on the entry's library, so a caller
            # compiled against this loaded callee (a plan interpreter over cached kernels,
            # every cold compile's helper) was saved without it, and crashed on a null
            # function pointer in a process where it was the first parallel code to run
            # (numba#8578, #9938)
            cres.library._reload_init.update(cres.reload_init)
        return cres

    def _index_key(self, sig, codegen):
        # the whole target, tile included: kernels compile its constants in (CNNC_TARGET may
        # narrow it, and backend.py, which sets the tiles, is not among the kernel sources)
        return (*super()._index_key(sig, codegen), sources_digest(), repr(current_target()))


@contextlib.contextmanager
def _llvm_opt_level(level: int):
    """LLVM's optimisation passes at ``level`` (Numba's ``NUMBA_OPT``, read as each pass
    pipeline is built) for what compiles in this block, in this thread alone: Numba's
    compiler lock is held throughout."""
    from numba.core import config
    from numba.core.compiler_lock import global_compiler_lock
    with global_compiler_lock:
        saved = config.OPT
        try:
            config.OPT = type(saved)(level)
            yield
        finally:
            config.OPT = saved


def cached_njit(llvm_opt: int | None = None, **options):
    """`numba.njit(**options)` with the disk cache above; ``llvm_opt`` compiles the
    function (and what it calls) at that LLVM optimisation level instead of Numba's
    (3, unless ``NUMBA_OPT`` says otherwise)."""

    def wrap(py_func):
        dispatcher = numba.njit(**options)(py_func)
        # what Dispatcher.enable_caching (cache=True) does, with the safe cache class
        dispatcher._cache = _SharedFunctionCache(dispatcher.py_func)
        if llvm_opt is not None:
            compile_at_default = dispatcher.compile

            def compile(sig):  # every compile of the dispatcher goes through this
                with _llvm_opt_level(llvm_opt):
                    return compile_at_default(sig)

            dispatcher.compile = compile
        return dispatcher

    return wrap


def is_cached(dispatcher, argtypes: tuple) -> bool:
    """Whether the disk cache holds ``dispatcher``'s code for ``argtypes`` for this
    machine and these sources (its index has the key; nothing is loaded)."""
    cache = dispatcher._cache
    try:
        # the key of Dispatcher.compile(argtypes), which is how kernels are compiled
        key = cache._index_key(tuple(argtypes), dispatcher.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except Exception:  # noqa: BLE001 - an unreadable index: as good as none
        return False


def cache_directory_of(dispatcher) -> str:
    """Where the disk cache of a cached_njit function lives (for the tests and notes)."""
    return os.fspath(dispatcher._cache._cache_path)
