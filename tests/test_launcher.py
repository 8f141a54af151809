"""The launch cache (flashtile/kernels/launcher.py) on a machine without a GPU: a fake
jitted function stands in for Triton's, so the test sees which launches went through
Triton (first per key) and which reused the compiled kernel, and with what arguments."""

from types import SimpleNamespace

import pytest
import torch

from flashtile.kernels import forward, launcher
from flashtile.kernels.launcher import CachedKernel


def _kernel_source(X, Y, n, scale, FLAG: bool, BLOCK: int = 64):
    pass


class _FakeCompiled:
    function = "fn-handle"
    packed_metadata = "meta"

    def __init__(self, log):
        self.log = log

    def run(self, gx, gy, gz, stream, function, metadata, launch_metadata, enter, exit_,
            *args):
        self.log.append(("direct", (gx, gy, gz), stream, args))


class _FakeJit:
    """Triton's `fn[grid](*args, **kwargs)`: logs the call, returns a compiled kernel."""
    fn = staticmethod(_kernel_source)

    def __init__(self):
        self.log = []
        self.compiled = _FakeCompiled(self.log)

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.log.append(("triton", grid, args, kwargs))
            return self.compiled
        return run


class _FakeDriver:
    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return 1234


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(launcher, "driver", SimpleNamespace(active=_FakeDriver()))
    jit = _FakeJit()
    kernel = CachedKernel(jit)
    kernel._direct = True  # (the fake is not an InterpretedFunction either way)
    return jit, kernel


def _launch(kernel, x, y, n=7, scale=0.5, flag=True, **options):
    kernel[(3, 2)](x, y, n, scale, FLAG=flag, num_warps=4, **options)


def test_repeat_launch_reuses_the_compiled_kernel_with_every_argument(fake):
    jit, kernel = fake
    x, y = torch.randn(64), torch.randn(64)
    _launch(kernel, x, y)
    x2, y2 = torch.randn(64), torch.randn(64)
    _launch(kernel, x2, y2)
    assert [entry[0] for entry in jit.log] == ["triton", "direct"]
    _, grid, stream, args = jit.log[1]
    assert grid == (3, 2, 1) and stream == 1234
    # signature order, the constexpr and the default included, the new tensors passed
    assert args[0] is x2 and args[1] is y2 and args[2:] == (7, 0.5, True, 64)
    assert kernel.cache_size() == 1


@pytest.mark.parametrize("change", ["int", "float", "bool_vs_int", "dtype", "alignment",
                                    "constexpr", "option"])
def test_anything_triton_specialises_on_misses_the_cache(fake, change):
    jit, kernel = fake
    x, y = torch.randn(64), torch.randn(64)
    _launch(kernel, x, y)
    if change == "int":
        _launch(kernel, x, y, n=16)
    elif change == "float":
        _launch(kernel, x, y, scale=0.25)
    elif change == "bool_vs_int":
        _launch(kernel, x, y, n=True)
    elif change == "dtype":
        _launch(kernel, x.half(), y)
    elif change == "alignment":  # 4 bytes past a 16-byte aligned base
        _launch(kernel, torch.randn(65)[1:], y)
    elif change == "constexpr":
        _launch(kernel, x, y, flag=False)
    else:
        _launch(kernel, x, y, num_stages=2)
    assert [entry[0] for entry in jit.log] == ["triton", "triton"]
    assert kernel.cache_size() == 2


def test_cache_is_bounded(fake, monkeypatch):
    jit, kernel = fake
    monkeypatch.setattr(launcher, "MAX_ENTRIES", 3)
    x, y = torch.randn(64), torch.randn(64)
    for n in range(5):
        _launch(kernel, x, y, n=n)
    assert kernel.cache_size() <= 3
    _launch(kernel, x, y, n=4)
    assert jit.log[-1][0] == "direct"


def test_launch_hooks_take_tritons_path(fake, monkeypatch):
    from triton import knobs

    jit, kernel = fake
    x, y = torch.randn(64), torch.randn(64)
    _launch(kernel, x, y)
    hook = lambda *args: None  # noqa: E731
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        _launch(kernel, x, y)
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert [entry[0] for entry in jit.log] == ["triton", "triton"]


def test_plain_hook_and_grid_function_take_tritons_path(fake, monkeypatch):
    from triton import knobs

    jit, kernel = fake
    x, y = torch.randn(64), torch.randn(64)
    _launch(kernel, x, y)
    monkeypatch.setattr(knobs.runtime, "launch_exit_hook", lambda *args: None)
    _launch(kernel, x, y)
    monkeypatch.undo()
    monkeypatch.setattr(launcher, "driver", SimpleNamespace(active=_FakeDriver()))
    kernel[lambda meta: (3,)](x, y, 7, 0.5, FLAG=True, num_warps=4)
    _launch(kernel, x, y)
    assert [entry[0] for entry in jit.log] == ["triton", "triton", "triton", "direct"]


def test_unhashable_argument_takes_tritons_path(fake):
    jit, kernel = fake
    x, y = torch.randn(64), torch.randn(64)
    for _ in range(2):
        kernel[(1,)](x, y, [1], 0.5, FLAG=True)
    assert [entry[0] for entry in jit.log] == ["triton", "triton"]
    assert kernel.cache_size() == 0


def test_interpreter_keeps_tritons_own_launch():
    from triton.runtime.interpreter import InterpretedFunction

    expected = isinstance(forward._fwd_kernel, InterpretedFunction)
    assert forward._fwd_launch._direct is not expected
