"""Tests for the command line, `python -m flashtile` (CPU, PyTorch backend)."""

import re

import pytest
import torch

from flashtile import cli
from flashtile.__main__ import main


@pytest.fixture(autouse=True)
def torch_backend(monkeypatch):
    # The Triton kernels may not be ready; the CLI must work on the PyTorch path.
    monkeypatch.setenv("FLASHTILE_BACKEND", "torch")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("flashtile", "torch", "triton", "numpy", "TRITON_INTERPRET", "fp32 precision"):
        assert key in out
    assert re.search(r"CPU tensors run\s+torch", out)


def test_info_reports_unavailable_backend(monkeypatch, capsys):
    monkeypatch.setenv("FLASHTILE_BACKEND", "triton")
    assert main(["info"]) == 0
    assert re.search(r"CPU tensors run\s+none \(", capsys.readouterr().out)


def test_check_quick(capsys):
    assert main(["check", "--quick", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "PASS" in captured.out and "FAIL" not in captured.out
    assert "passed" in captured.out.splitlines()[-1]
    assert "[1/" in captured.err  # progress on stderr


def test_check_fails_on_wrong_output(monkeypatch, capsys):
    real = cli.flashtile.flash_attn_func
    monkeypatch.setattr(cli.flashtile, "flash_attn_func", lambda *a, **kw: real(*a, **kw) * 1.01)
    assert main(["check", "--quick", "--device", "cpu", "--dtype", "fp16", "-k", "causal"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "FAILED" in out.splitlines()[-1]


def test_bench_tiny(capsys):
    assert main(["bench", "--device", "cpu", "--seqlens", "128", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "flashtile" in out and "sdpa" in out and "fwd_bwd" in out
    assert "bench: 4/4 timed" in out


def test_bench_fp8_needs_cuda():
    with pytest.raises(SystemExit, match="bench --fp8 needs a CUDA GPU"):
        main(["bench", "--fp8", "--device", "cpu"])


def test_error_rule_and_flops():
    assert cli.within_tolerance(2e-3, 1e-3, 0.0)
    assert not cli.within_tolerance(2.1e-3, 1e-3, 0.0)
    assert cli.within_tolerance(3e-3, 1e-3, 0.0, factor=3.0)
    assert cli.attention_flops(2, 4, 128, 256, 64) == 4 * 2 * 4 * 128 * 256 * 64
    assert cli.attention_flops(2, 4, 128, 256, 64, causal=True, mode="fwd_bwd") == \
        3.5 * 2 * 2 * 4 * 128 * 256 * 64
    assert cli.tflops(1e12, 1000.0) == pytest.approx(1.0)
    assert cli.benchmark_ms(lambda: torch.zeros(1), "cpu", repeats=3) >= 0
