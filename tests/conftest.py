"""Shared test setup.

Without a GPU, Triton kernels run in Triton's interpreter; the variable must be
set before triton is imported anywhere, hence here. The `auto` backend still
sends CPU tensors to the PyTorch path, so this only matters to tests that ask
for the Triton backend.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def triton_backend():
    """Force the Triton kernels (GPU test files use it for every test)."""
    import flashtile

    with flashtile.use_backend("triton"):
        yield


@pytest.fixture
def count_calls(monkeypatch):
    """count_calls(module, name) wraps module.name for this test and returns a one-element
    list holding its call count (the Gluon tests use it to prove their kernel ran)."""
    def patch(module, name):
        count = [0]
        real = getattr(module, name)

        def counted(*args, **kwargs):
            count[0] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
        return count
    return patch
