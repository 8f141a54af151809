"""The launch cache (flashtile/kernels/launcher.py) on a machine without a GPU: a fake
jitted function stands in for Triton's, so the test sees which launches went through
Triton (first per key) and which reused the compiled kernel, and with what arguments."""

from types import SimpleNamespace

import pytest
import torch
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

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


@pytest.mark.parametrize("odd", [[1], (1, 2), (torch.zeros(2),)], ids=["list", "tuple", "tensors"])
def test_other_argument_kinds_take_tritons_path(fake, odd):
    jit, kernel = fake
    x, y = torch.randn(64), torch.randn(64)
    for _ in range(2):
        kernel[(1,)](x, y, odd, 0.5, FLAG=True)
    assert [entry[0] for entry in jit.log] == ["triton", "triton"]
    assert kernel.cache_size() == 0


def test_interpreter_keeps_tritons_own_launch():
    from triton.runtime.interpreter import InterpretedFunction

    expected = isinstance(forward._fwd_kernel, InterpretedFunction)
    assert forward._fwd_launch._direct is not expected


# ---------------------------------------------------------------------------------------
# Against Triton's own binder and cache key (no GPU needed: sm_90 backend, CPU tensors)


def _typed_kernel(X, Y, D, n, m, scale, FLAG: tl.constexpr, BLOCK: tl.constexpr = 64):
    pass


class _TritonKeyed:
    """A jitted function whose 'compiled kernels' are Triton 3.6's real cache keys: what
    `JITFunction.run` does before compiling (the two knobs it adds to the options, the
    binder, `compute_cache_key`), with one fake compiled kernel per Triton key."""
    fn = staticmethod(_typed_kernel)

    def __init__(self):
        from triton.backends.compiler import GPUTarget
        from triton.compiler.compiler import make_backend
        from triton.runtime.jit import JITFunction, create_function_from_signature

        jit = JITFunction(_typed_kernel)
        self.binder = create_function_from_signature(
            jit.signature, jit.params, make_backend(GPUTarget("cuda", 90, 32)))
        self.log, self.kernels = [], {}

    def triton_choice(self, args, kwargs):
        from triton import knobs
        from triton.runtime.jit import compute_cache_key

        kwargs = dict(kwargs, debug=kwargs.get("debug", False) or knobs.runtime.debug,
                      instrumentation_mode=knobs.compilation.instrumentation_mode)
        bound, specialization, options = self.binder(*args, **kwargs)
        key = compute_cache_key({}, specialization, options)
        if key not in self.kernels:
            self.kernels[key] = _KeyedCompiled(key, self.log)
        return self.kernels[key], tuple(bound.values())

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            kernel, bound = self.triton_choice(args, kwargs)
            self.log.append(("triton", kernel.key, bound))
            return kernel
        return run


class _KeyedCompiled:
    function = "fn-handle"
    packed_metadata = "meta"

    def __init__(self, key, log):
        self.key, self.log = key, log

    def run(self, gx, gy, gz, stream, function, metadata, launch_metadata, enter, exit_,
            *args):
        self.log.append(("direct", self.key, args))


def _descriptor(x, block):
    from triton.tools.tensor_descriptor import TensorDescriptor
    return TensorDescriptor.from_tensor(x, block)


def _last_launch_is_tritons_choice(jit, args, kwargs) -> str:
    """Assert that the last launch ran the kernel Triton's own key selects for these
    arguments, with Triton's bound argument list; returns "triton" or "direct"."""
    how, key, launched = jit.log[-1]
    expected, bound = jit.triton_choice(args, kwargs)
    assert key == expected.key, (how, args, kwargs)
    assert len(launched) == len(bound)
    assert all(a is b or a == b for a, b in zip(launched, bound)), (args, kwargs)
    return how


def test_hits_launch_what_tritons_binder_picks(monkeypatch):
    """Launches varying every kind of argument, repeats included: whenever the cache
    launches directly, it is the kernel Triton's own key selects for those arguments,
    with Triton's bound argument list (same objects, same order, defaults filled in)."""
    from triton import knobs

    monkeypatch.setattr(launcher, "driver", SimpleNamespace(active=_FakeDriver()))
    jit = _TritonKeyed()
    kernel = CachedKernel(jit)
    kernel._direct = True
    base = torch.randn(4096)
    x16, y16 = base[:64], base[64:128]  # 16-byte aligned views
    odd = base[1:65]  # 4 bytes past alignment
    mat = torch.randn(64, 64)
    cases = []
    for n in (1, 7, 16, 17, 2**31 + 16):
        for x, y in ((x16, y16), (odd, y16), (x16.half(), y16)):
            cases.append(((x, y, _descriptor(mat, [16, 16]), n, 3, 0.5), dict(FLAG=True)))
    cases += [((x16, y16, _descriptor(mat, [32, 16]), 7, 3, 0.5), dict(FLAG=True)),
              ((x16, y16, _descriptor(mat.half(), [16, 16]), 7, 3, 0.5), dict(FLAG=True)),
              ((x16, y16, _descriptor(mat, [16, 16]), 7, 3, 1.0), dict(FLAG=False)),
              ((x16, y16, _descriptor(mat, [16, 16]), True, 3, 0.5), dict(FLAG=True)),
              ((x16, y16, _descriptor(mat, [16, 16]), 7, 3), dict(scale=0.5, FLAG=True,
                                                              BLOCK=128, num_warps=8)),
              ((x16, y16, _descriptor(mat, [16, 16])), dict(FLAG=True, m=3, n=7, scale=0.5))]
    direct = 0
    for debug in (False, True, False):
        monkeypatch.setattr(knobs.runtime, "debug", debug)
        for args, kwargs in cases + cases:  # every case twice: the repeat should hit
            kernel[(2,)](*args, **kwargs)
            direct += _last_launch_is_tritons_choice(jit, args, kwargs) == "direct"
    assert direct >= len(cases) * 2  # the repeats (and the second debug=False round) hit


# ---------------------------------------------------------------------------------------
# BoundLaunch: the grid, trailing arguments and keywords fixed at bind time


def test_bound_launch_passes_new_leading_arguments_and_the_fixed_rest(fake):
    jit, kernel = fake
    launch = kernel.bind((3, 2), (7, 0.5), dict(FLAG=True, num_warps=4))
    x, y = torch.randn(64), torch.randn(64)
    launch(x, y)
    x2, y2 = torch.randn(64), torch.randn(64)
    launch(x2, y2)
    assert [entry[0] for entry in jit.log] == ["triton", "direct"]
    assert jit.log[0][2][2:] == (7, 0.5)
    _, grid, stream, args = jit.log[1]
    assert grid == (3, 2, 1) and stream == 1234
    assert args[0] is x2 and args[1] is y2 and args[2:] == (7, 0.5, True, 64)
    # the plain launch of the same call hits the same entry of the launch cache
    _launch(kernel, x, y)
    assert jit.log[-1][0] == "direct" and kernel.cache_size() == 1


@pytest.mark.parametrize("change", ["dtype", "alignment", "kind"])
def test_bound_launch_misses_on_leading_dtype_alignment_or_kind(fake, change):
    jit, kernel = fake
    launch = kernel.bind((1,), (7, 0.5), dict(FLAG=True))
    x, y = torch.randn(64), torch.randn(64)
    launch(x, y)
    if change == "dtype":
        launch(x.half(), y)
    elif change == "alignment":
        launch(torch.randn(65)[1:], y)
    else:
        launch(_descriptor(torch.randn(64, 64), [16, 16]), y)
    assert [entry[0] for entry in jit.log] == ["triton", "triton"]


def test_bound_launch_with_hooks_takes_tritons_path(fake, monkeypatch):
    from triton import knobs

    jit, kernel = fake
    launch = kernel.bind((1,), (7, 0.5), dict(FLAG=True))
    x, y = torch.randn(64), torch.randn(64)
    launch(x, y)
    monkeypatch.setattr(knobs.runtime, "launch_exit_hook", lambda *args: None)
    launch(x, y)
    monkeypatch.setattr(knobs.runtime, "launch_exit_hook", None)
    monkeypatch.setattr(knobs.runtime, "debug", True)  # a knob in the key: a miss
    launch(x, y)
    assert [entry[0] for entry in jit.log] == ["triton", "triton", "triton"]


def test_bound_launches_launch_what_tritons_binder_picks(monkeypatch):
    """As above, through `bind`: leading tensors and descriptors varied, every call
    twice; each direct launch is Triton's own choice with Triton's bound arguments."""
    monkeypatch.setattr(launcher, "driver", SimpleNamespace(active=_FakeDriver()))
    jit = _TritonKeyed()
    kernel = CachedKernel(jit)
    kernel._direct = True
    base, mat = torch.randn(4096), torch.randn(64, 64)
    x16, y16, odd = base[:64], base[64:128], base[1:65]
    leads = [(x, y, _descriptor(m, block)) for x, y in ((x16, y16), (odd, y16), (x16.half(), odd))
             for m, block in ((mat, [16, 16]), (mat.half(), [16, 16]), (mat, [32, 16]))]
    direct = 0
    for trailing, kwargs in (((7, 3, 0.5), dict(FLAG=True)),
                             ((16, 3), dict(scale=1.0, FLAG=False, num_warps=8))):
        launch = kernel.bind((2,), trailing, kwargs)
        for lead in leads + leads:
            launch(*lead)
            direct += _last_launch_is_tritons_choice(jit, (*lead, *trailing), kwargs) == "direct"
    assert direct >= 2 * len(leads)


class _FakeUtils:
    """The driver's `fill_tma_descriptor`: a tag of what it was asked to encode."""

    def __init__(self):
        self.calls = 0

    def fill_tma_descriptor(self, ptr, swizzle, elem_size, elem_type, block, shape, strides,
                            padding):
        self.calls += 1
        return ("map", ptr, swizzle, elem_size, elem_type, tuple(block), tuple(shape),
                tuple(strides), padding)


def _tma_launcher(raw_log, n_args: int, desc_at: tuple, swizzle=3, metas=True, fp4=False,
                  scratch=0):
    """A Triton 3.6 `CudaLauncher` (its __init__, which builds the C module, skipped)
    whose C launcher only logs: its `launch` is Triton's own descriptor-expanding wrapper.
    Descriptor k has device element type 8 + k (types 8-10 are numbered differently on
    the host)."""
    from triton.backends.nvidia import driver as nvidia

    signature = {i: "i32" for i in range(n_args)}
    meta = []
    for k, i in enumerate(desc_at):
        signature[i] = "tensordesc<fp16[16, 32]>"
        meta.append(dict(swizzle=swizzle, elem_size=2, elem_type=8 + k, block_size=[16, 32],
                         fp4_padded=fp4))
    run = nvidia.CudaLauncher.__new__(nvidia.CudaLauncher)
    run.num_ctas, run.launch_cooperative_grid, run.launch_pdl = 1, False, True
    run.global_scratch_size, run.profile_scratch_size = scratch, 0
    run.global_scratch_align = run.profile_scratch_align = 1
    run.launch = nvidia.wrap_handle_tensordesc(lambda *args: raw_log.append(args), signature,
                                               meta if metas else None)
    return run


def _bound(compiled):
    """A BoundLaunch of a fake kernel whose first launch "compiles" to `compiled`."""
    kernel = CachedKernel(SimpleNamespace(fn=_kernel_source6))
    kernel._direct = True
    kernel.launch = lambda grid, args, kwargs: compiled
    return kernel.bind((4, 2), (5, 0.25), dict(FLAG=True))


def test_bound_launch_encodes_each_tensor_map_once_as_tritons_launcher_would(monkeypatch):
    """The direct launch (`launcher._Direct`) passes the C launcher exactly what Triton
    3.6's wrapper passes for the same call, and encodes a descriptor only for a new
    (address, shape, strides, padding, box, layout)."""
    from triton.runtime import driver as triton_driver

    utils = _FakeUtils()
    fake_driver = SimpleNamespace(active=SimpleNamespace(
        utils=utils, get_current_device=lambda: 0, get_current_stream=lambda device: 99))
    monkeypatch.setattr(launcher, "driver", fake_driver)
    monkeypatch.setattr(triton_driver, "_active", fake_driver.active)  # (Triton's wrapper)
    monkeypatch.setattr(launcher, "_TENSOR_MAPS", {})
    raw_log: list = []
    a, b = torch.randn(64, 64).half(), torch.randn(32, 32).half()
    y = torch.randn(8)
    desc = lambda x, padding="zero": TensorDescriptor.from_tensor(  # noqa: E731
        x, [16, 32], padding=padding)
    short = desc(a[:32])
    plain = [(desc(a), y, desc(b)),
             (desc(a), y, desc(b)),  # the same maps
             (short, y, desc(b)),  # a new shape
             (short, y, desc(b.as_strided((32, 32), (16, 1))))]  # new strides
    nan = [(desc(a[:32], "nan"), y, desc(b))] * 2  # new padding (a new launch key too)
    for swizzle in (3, 2):  # 2: another layout, so new maps for the same tensors
        compiled = SimpleNamespace(function="fn", packed_metadata="pm",
                                   run=_tma_launcher(raw_log, 6, (0, 2), swizzle))
        assert launcher._Direct.of(compiled, 3) is not None
        launch = _bound(compiled)
        for calls, new_maps in ((plain, (2, 1, 1)), (nan, (1,))):
            launch(*calls[0])  # a new key: through CachedKernel.launch, no direct launch
            for lead, new in zip(calls[1:], new_maps):
                before = utils.calls
                launch(*lead)
                direct = raw_log.pop()
                assert utils.calls - before == new
                compiled.run(4, 2, 1, 99, "fn", "pm", None, knobs_hook("enter"),
                             knobs_hook("exit"), *lead, 5, 0.25, True, 64)
                assert direct == raw_log.pop()  # (Triton's wrapper encodes both each time)
    before = utils.calls
    monkeypatch.setattr(launcher, "USE_TENSOR_MAPS", False)
    launch(*plain[2])
    assert utils.calls - before == 2  # switched off: Triton's wrapper encodes


@pytest.mark.parametrize("odd", ["fp4", "scratch", "no_metadata", "not_leading", "no_descs"])
def test_direct_launch_falls_back_where_tritons_launcher_differs(odd):
    """`_Direct.of` returns None (Triton's own launcher runs) for FP4-padded descriptors,
    scratch memory to allocate, descriptors without metadata, descriptors past the
    leading arguments, and launchers with no descriptor wrapper."""
    desc_at = (0, 2) if odd != "not_leading" else (0, 4)
    run = _tma_launcher([], 6, desc_at, fp4=odd == "fp4", metas=odd != "no_metadata",
                        scratch=64 if odd == "scratch" else 0)
    if odd == "no_descs":
        run = _tma_launcher([], 6, ())
    assert launcher._Direct.of(SimpleNamespace(run=run), 3) is None


def knobs_hook(which: str):
    from triton import knobs
    return getattr(knobs.runtime, f"launch_{which}_hook")


def _kernel_source6(A, Y, B, n, scale, FLAG: bool, BLOCK: int = 64):
    pass
