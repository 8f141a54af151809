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

`CachedKernel.bind` goes one step further for call sites that memoise their launch
plans in a `PlanCache` (all of flashtile's): a `BoundLaunch` fixes the grid, the
trailing arguments and the keywords, so a call passes only its leading tensors /
descriptors and the key is built from those alone. It also encodes each TMA descriptor
once per (address, shape, strides, box, layout) instead of on every launch, as Triton
3.6's launcher does (`_Direct`).
"""

from __future__ import annotations

import functools
import inspect
import operator
from typing import NamedTuple

import torch
import triton
from triton import knobs
from triton.runtime import driver

try:  # (device and host number the TMA element types differently)
    from triton.backends.nvidia.driver import TMA_DTYPE_DEVICE_TO_HOST
except ImportError:
    TMA_DTYPE_DEVICE_TO_HOST = None
# `_Direct` follows Triton 3.6's CUDA launcher argument for argument: other versions (and
# builds without the NVIDIA backend) keep Triton's own descriptor path.
_DIRECT_OK = triton.__version__.startswith("3.6.") and TMA_DTYPE_DEVICE_TO_HOST is not None

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

    def bind(self, grid: tuple, trailing: tuple, kwargs: dict) -> BoundLaunch:
        """This kernel with `grid`, the positional arguments after the per-call ones
        (`trailing`, plain scalars) and `kwargs` fixed: see `BoundLaunch`."""
        return BoundLaunch(self, grid, trailing, kwargs)


def on_tensors_device(entry):
    """Run a host entry point (first argument: a tensor) with that tensor's CUDA device
    current: Triton launches on the current device and its current stream, so tensors
    on another GPU of the process (e.g. a model split over GPUs without set_device)
    would otherwise be launched on the wrong one."""
    @functools.wraps(entry)
    def run(x, *args, **kwargs):
        device = x.device
        if device.type == "cuda" and device.index != torch.cuda.current_device():
            with torch.cuda.device(device):
                return entry(x, *args, **kwargs)
        return entry(x, *args, **kwargs)
    return run


_PLAN_CACHES: list = []
# False: every call builds its plan again (A/B runs, benchmarks/host_plans.py)
USE_PLANS = True


def clear_plans() -> None:
    """Forget every memoised launch plan (after changing a module constant that plan
    builders read, such as config.MAX_GRID_YZ in a test)."""
    for cache in _PLAN_CACHES:
        cache._plans.clear()


class PlanCache:
    """Launch plans (`BoundLaunch`es and what a call site derives with them) by a key
    holding everything they are computed from: shapes, strides, dtypes, options, the
    chosen config. Dropped wholesale past MAX_ENTRIES, like the launch cache."""

    def __init__(self):
        self._plans: dict = {}
        _PLAN_CACHES.append(self)

    def get(self, key):
        return self._plans.get(key) if USE_PLANS else None

    def add(self, key, plan):
        if len(self._plans) >= MAX_ENTRIES:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def __len__(self) -> int:
        return len(self._plans)


class BoundLaunch:
    """`kernel[grid](*lead, *trailing, **kwargs)` with all but `lead` fixed at bind time,
    so a call keys only its leading arguments (tensors / descriptors, by type and
    `_key_part`) with the device and Triton's knobs: with the fixed part that is the
    launch cache's whole key, so a hit is what `CachedKernel.launch` would reuse.
    Misses, launch hooks and the interpreter go through `CachedKernel.launch`."""

    __slots__ = ("cached", "grid", "trailing", "kwargs", "_grid3", "_kernels")

    def __init__(self, cached: CachedKernel, grid: tuple, trailing: tuple, kwargs: dict):
        self.cached, self.grid, self.trailing, self.kwargs = cached, grid, trailing, kwargs
        self._grid3 = (*grid, 1, 1)[:3]
        self._kernels: dict = {}  # key of the leading arguments -> (kernel, full tail)

    def __call__(self, *lead):
        runtime = knobs.runtime
        enter, exit_ = runtime.launch_enter_hook, runtime.launch_exit_hook
        cached = self.cached
        if not cached._direct or _hooked(enter) or _hooked(exit_):
            return cached.launch(self.grid, (*lead, *self.trailing), self.kwargs)
        device = driver.active.get_current_device()
        try:
            key = (device, runtime.debug, knobs.compilation.instrumentation_mode,
                   *map(type, lead), *map(_key_part, lead))
        except TypeError:  # (see _key_part)
            return cached.launch(self.grid, (*lead, *self.trailing), self.kwargs)
        hit = self._kernels.get(key)
        if hit is None:
            kernel = cached.launch(self.grid, (*lead, *self.trailing), self.kwargs)
            if getattr(kernel, "function", None) is not None:
                self._kernels[key] = (kernel, self._tail(len(lead)),
                                      _Direct.of(kernel, len(lead)))
            return kernel
        kernel, tail, direct = hit
        stream = driver.active.get_current_stream(device)
        if direct is not None and USE_TENSOR_MAPS:
            args = list(lead)
            for i, encoding in direct.slots:  # (last first: expanding shifts what follows)
                args[i:i + 1] = _tensor_map(args[i], encoding)
            direct.launch(*self._grid3, stream, kernel.function, direct.cooperative,
                          direct.pdl, None, None, kernel.packed_metadata, None, enter, exit_,
                          *args, *tail)
        else:
            kernel.run(*self._grid3, stream, kernel.function, kernel.packed_metadata, None,
                       enter, exit_, *lead, *tail)
        return kernel

    def _tail(self, n_lead: int) -> tuple:
        """Everything after the leading arguments, in signature order (defaults filled)."""
        cached = self.cached
        named = {**cached._defaults, **self.kwargs}
        rest = cached._names[n_lead + len(self.trailing):]
        return (*self.trailing, *(named[name] for name in rest))


# False: every launch has Triton encode its TMA descriptors again (A/B runs).
USE_TENSOR_MAPS = True
_TENSOR_MAPS: dict = {}  # encoding key -> (CUtensorMap, *shape, *strides)
# More than MAX_ENTRIES: a deep model's training step alone passes ~10 descriptors per
# layer (forward and backward), each entry a few hundred bytes. Dropped wholesale past it.
MAX_TENSOR_MAPS = 8192


def _tensor_map(desc, encoding: tuple) -> tuple:
    """A host TMA descriptor as Triton 3.6's launcher passes it (`make_tensordesc_arg`):
    the encoded CUtensorMap, then the shape and strides. Encoded once per address,
    shape, strides, padding and the kernel's box / swizzle / element type: that is all
    the map holds, and a training loop's caching allocator hands out the same addresses
    step after step."""
    base = desc.base
    shape, strides = desc.shape, desc.strides
    key = (base.data_ptr(), *shape, *strides, desc.padding, encoding)
    hit = _TENSOR_MAPS.get(key)
    if hit is None:
        if len(_TENSOR_MAPS) >= MAX_TENSOR_MAPS:
            _TENSOR_MAPS.clear()
        swizzle, elem_size, elem_type, block = encoding
        tensor_map = driver.active.utils.fill_tma_descriptor(
            base.data_ptr(), swizzle, elem_size, elem_type, list(block), shape, strides,
            1 if desc.padding == "nan" else 0)
        hit = _TENSOR_MAPS[key] = (tensor_map, *shape, *strides)
    return hit


class _Direct(NamedTuple):
    """How a `BoundLaunch` calls a compiled kernel's C launcher itself, with its TMA
    descriptors encoded through `_tensor_map`: Triton 3.6's `CudaLauncher` wraps that
    launcher in a function that encodes every descriptor on every launch."""
    launch: object  # the C launcher the wrapper calls
    slots: tuple  # (argument position, (swizzle, element size, type, box)), last first
    cooperative: bool
    pdl: bool

    @staticmethod
    def of(kernel, n_lead: int):
        """The direct launch of `kernel`, or None where Triton's own launcher must run:
        no descriptors, a launcher not shaped like Triton 3.6's, scratch memory to
        allocate, descriptors without metadata or with FP4 padding, or outside the
        `n_lead` leading arguments."""
        run = getattr(kernel, "run", None)
        wrapper = getattr(run, "launch", None)
        code = getattr(wrapper, "__code__", None)
        if not _DIRECT_OK or code is None or not wrapper.__closure__:
            return None
        cells = dict(zip(code.co_freevars, (c.cell_contents for c in wrapper.__closure__)))
        if set(cells) != {"launcher", "tensordesc_indices", "tensordesc_meta"}:
            return None
        if getattr(run, "global_scratch_size", 1) or getattr(run, "profile_scratch_size", 1):
            return None
        indices, metas = sorted(cells["tensordesc_indices"]), cells["tensordesc_meta"]
        if (len(indices) != len(metas) or any(i >= n_lead for i in indices)
                or any(m is None or m["fp4_padded"] for m in metas)):
            return None
        slots = tuple((i, (m["swizzle"], m["elem_size"],
                           TMA_DTYPE_DEVICE_TO_HOST[m["elem_type"]], tuple(m["block_size"])))
                      for i, m in zip(indices, metas))
        return _Direct(cells["launcher"], slots[::-1], bool(run.launch_cooperative_grid),
                       bool(run.launch_pdl))
