"""Repeat launches without Triton's per-call binding.

`JITFunction.run` re-derives, on every launch, what it compiled the kernel for: each
argument is specialised (dtype, 16-byte alignment, integer divisibility), the options
are turned into a string key, used globals are re-checked, the grid is canonicalised.
On the H200 host that was about a third of flashtile's host time per call (NOTES.md
session 9 §7), and small calls (decode steps, 1k-token prefill) are host-bound.

`CachedKernel` wraps a jitted kernel with the same `kernel[grid](*args, **kwargs)`
syntax. The first launch for a key goes through Triton (compiling if needed); later
launches with the same key call the compiled kernel's launcher directly. The key holds
every argument's type, every non-tensor argument by value, every tensor's dtype and
16-byte alignment (descriptors: also block shape, layout, padding) and Triton's debug /
instrumentation knobs, so it is at least as fine as Triton's own specialisation and
cache key (tests/test_launcher.py checks it against Triton's binder): a hit can only
reuse the kernel Triton itself would have picked. Two per-launch checks of Triton's are
not repeated on a hit: that the kernel's used globals still hold their compile-time
values, and `pre_run_hooks` (flashtile's kernels read only constants and register none).
Arguments of other kinds (tuples, pointer wrappers) keep Triton's own path.
"""

from __future__ import annotations

import inspect
import operator

import torch
from triton import knobs
from triton.runtime import driver

# Entries are dropped wholesale past this many (e.g. varlen calls with ever-new
# max_seqlen values): a miss only costs one slow launch.
MAX_ENTRIES = 512


# Argument types keyed by value. The key also holds every argument's type, so 1, 1.0 and
# True (equal as dict keys) stay apart, as they do in Triton's signatures.
_BY_VALUE = frozenset((int, float, bool, str, type(None)))


def _key_part(arg, _tensor=torch.Tensor):
    """What Triton could specialise a tensor-like argument on, exactly or more finely."""
    if isinstance(arg, _tensor):
        return arg.dtype, not arg.data_ptr() & 15
    if hasattr(arg, "block_shape"):  # a host TMA descriptor (Triton's or Gluon's)
        base = arg.base
        return (base.dtype, not base.data_ptr() & 15, tuple(arg.block_shape),
                getattr(arg, "layout", None), arg.padding)
    # Anything else (tuples that may hold tensors, pointer wrappers, ...) could pin
    # memory or miss every call as a key: such launches keep Triton's own path.
    raise TypeError(f"no launch-cache key for {type(arg).__name__}")


def _hooked(hook) -> bool:
    """A launch hook is set: a HookChain with calls (Triton 3.6), or a plain callable."""
    return bool(getattr(hook, "calls", hook))


class CachedKernel:
    """A jitted Triton / Gluon kernel launched as `kernel[grid](*args, **kwargs)`, with
    repeat launches skipping `JITFunction.run` (see the module doc)."""

    def __init__(self, fn):
        from triton.runtime.interpreter import InterpretedFunction

        self.fn = fn
        # The interpreter runs Python per launch anyway; it keeps Triton's own path.
        self._direct = not isinstance(fn, InterpretedFunction)
        params = inspect.signature(fn.fn).parameters
        self._names = tuple(params)
        self._defaults = {name: p.default for name, p in params.items()
                          if p.default is not inspect.Parameter.empty}
        self._entries: dict = {}
        self._keyed_at: dict = {}

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launch(grid, args, kwargs)

    def launch(self, grid, args: tuple, kwargs: dict):
        runtime = knobs.runtime
        # Launch hooks (profilers) want Triton's launch metadata, and a grid function
        # wants the bound arguments: both take Triton's own path.
        if (not self._direct or _hooked(runtime.launch_enter_hook)
                or _hooked(runtime.launch_exit_hook) or callable(grid)):
            return self.fn[grid](*args, **kwargs)
        device = driver.active.get_current_device()
        values = (*args, *kwargs.values())
        types = tuple(map(type, values))
        at = self._keyed_at.get(types)
        if at is None:  # (one entry per call site and argument types: a handful)
            at = self._keyed_at[types] = tuple(
                i for i, kind in enumerate(types) if kind not in _BY_VALUE)
        parts = list(values)
        try:
            for i in at:  # tensors and descriptors: dtype and alignment, not identity
                parts[i] = _key_part(parts[i])
            # (Triton adds these two knobs to every launch's options: part of its key too)
            key = (device, runtime.debug, knobs.compilation.instrumentation_mode, types,
                   *kwargs, *parts)
            entry = self._entries.get(key)
        except TypeError:  # an argument with no key (see _key_part): no cache for this call
            return self.fn[grid](*args, **kwargs)
        if entry is None:
            return self._first_launch(key, grid, args, kwargs)
        kernel, tail = entry
        full = (*args, *tail({**self._defaults, **kwargs})) if tail else args
        grid_y = grid[1] if len(grid) > 1 else 1
        grid_z = grid[2] if len(grid) > 2 else 1
        stream = driver.active.get_current_stream(device)
        kernel.run(grid[0], grid_y, grid_z, stream, kernel.function, kernel.packed_metadata,
                   None, runtime.launch_enter_hook, runtime.launch_exit_hook, *full)
        return kernel

    def _first_launch(self, key, grid, args, kwargs):
        kernel = self.fn[grid](*args, **kwargs)
        if getattr(kernel, "function", None) is not None:  # compiled and loaded
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            tail = self._names[len(args):]  # the parameters not passed positionally
            take = operator.itemgetter(*tail) if tail else None
            self._entries[key] = (kernel, (lambda d: (take(d),)) if len(tail) == 1 else take)
        return kernel

    def cache_size(self) -> int:
        return len(self._entries)
