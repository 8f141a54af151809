"""Tests for the benchmark harness (`flashtile.bench`), the suite (benchmarks/suite.py)
and the charts (benchmarks/plot.py), on CPU with the PyTorch backend."""

import json
import os
from pathlib import Path

import pytest
import torch

from flashtile import bench, cli
from flashtile.__main__ import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def torch_backend(monkeypatch):
    monkeypatch.setenv("FLASHTILE_BACKEND", "torch")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("OUT", raising=False)


@pytest.fixture(scope="module")
def suite():
    return bench.load_benchmark_script("suite")


@pytest.fixture(scope="module")
def plot():
    return bench.load_benchmark_script("plot")


# ----------------------------------------------------------------------------- harness


def test_flops_follow_flash_attention():
    b, h, s, d = 2, 16, 4096, 128
    fwd = 4 * b * h * s * s * d
    assert bench.attention_flops(b, h, s, s, d) == fwd
    assert bench.attention_flops(b, h, s, s, d, causal=True) == fwd / 2
    assert bench.attention_flops(b, h, s, s, d, mode="bwd") == 2.5 * fwd
    assert bench.attention_flops(b, h, s, s, d, causal=True, mode="fwd_bwd") == 3.5 * fwd / 2
    assert bench.attention_flops(1, 1, 128, 256, 64) == 4 * 128 * 256 * 64  # Sq != Sk
    # the NOTES.md ceiling: 16k tokens, model dim 2048, d 128, 16k -> 2.2 TFLOP forward
    assert bench.attention_flops(1, 16, 16384, 16384, 128) == pytest.approx(2.2e12, rel=0.01)
    assert bench.tflops(1e12, 1000.0) == pytest.approx(1.0)
    with pytest.raises(KeyError):
        bench.attention_flops(1, 1, 1, 1, 1, mode="both")


def test_cli_uses_the_harness():
    for name in ("attention_flops", "tflops", "benchmark_ms", "rotating", "DTYPES"):
        assert getattr(cli, name) is getattr(bench, name)


def test_rotating_inputs_are_random_and_cycle():
    sets = bench.make_inputs(1, 8, 2, 4, torch.float32, "cpu", sets=3, seed=1)
    assert len(sets) == 3 and all(len(s) == 4 for s in sets)
    q, k, v, do = sets[0]
    assert q.requires_grad and k.requires_grad and v.requires_grad and not do.requires_grad
    assert all(bool((x != 0).any()) for s in sets for x in s)  # never zeros
    assert not torch.equal(sets[0][0], sets[1][0])
    seen = []
    call = bench.rotating(lambda q, k, v, do: seen.append(q), sets)
    for _ in range(4):
        call()
    assert [id(x) for x in seen] == [id(sets[i][0]) for i in (0, 1, 2, 0)]
    assert bench.benchmark_ms(lambda: torch.zeros(1), "cpu", repeats=3) >= 0


def test_time_case_every_pass():
    [method], missing = bench.get_methods(["flashtile"])
    assert not missing
    row = bench.time_case(method, 32, 64, True, torch.float32, "cpu", bench.PASSES,
                          tokens=128, model_dim=64, repeats=2)
    assert (row["batch"], row["heads"]) == (2, 2)  # 128 // 64 tokens, 64 // 32 heads
    for p in bench.PASSES:
        assert row[f"{p}_ms"] > 0
        flops = bench.attention_flops(2, 2, 64, 64, 32, True, p)
        assert row[f"{p}_tflops"] == pytest.approx(bench.tflops(flops, row[f"{p}_ms"]))
    assert row["first_call_s"] >= 0 and "errors" not in row and "unsupported" not in row


def test_failing_methods_are_recorded_not_raised():
    def no_forward(q, k, v, causal):
        raise NotImplementedError("head dim 32 unsupported")

    def no_backward(q, k, v, causal):
        return (q * 2).detach()  # no graph: the backward raises

    row = bench.time_case(bench.Method("broken", no_forward), 32, 16, False, torch.float32,
                          "cpu", tokens=16, model_dim=32, repeats=1)
    assert row["unsupported"] == "NotImplementedError: head dim 32 unsupported"
    row = bench.time_case(bench.Method("fwd-only", no_backward), 32, 16, False, torch.float32,
                          "cpu", ("fwd", "bwd"), tokens=16, model_dim=32, repeats=1)
    assert row["fwd_ms"] > 0 and "bwd" in row["errors"] and "bwd_ms" not in row


def test_methods_registry():
    methods, missing = bench.get_methods(["flashtile", "sdpa", "sdpa-flash", "sdpa-math"])
    assert [m.name for m in methods] == ["flashtile", "sdpa", "sdpa-flash", "sdpa-math"]
    for name in ("flash-attn-2", "flash-attn-3", "flash-attn-4"):
        try:
            bench.make_method(name)
        except ImportError:  # not installed here: get_methods skips it, with the reason
            assert name in bench.get_methods([name])[1]
    with pytest.raises(ValueError):
        bench.get_methods(["no-such-method"])
    assert "flex" in bench.default_methods("cuda") and "flex" not in bench.default_methods("cpu")
    q, k, v, _ = bench.make_inputs(1, 16, 2, 8, torch.float32, "cpu", sets=1)[0]
    ref = bench.make_method("sdpa").fn(q, k, v, True)
    assert torch.allclose(bench.make_method("flashtile").fn(q, k, v, True), ref, atol=1e-5)
    with bench.make_method("sdpa-efficient").context():  # CPU has no efficient kernel
        with pytest.raises(RuntimeError):
            bench.make_method("sdpa").fn(q, k, v, True)


# ----------------------------------------------------------------------------- suite


def test_suite_cpu_run_writes_json_table_and_charts(tmp_path, capsys):
    out, res = tmp_path / "out", tmp_path / "results"
    assert main(["bench", "--suite", "--device", "cpu", "--seqlens", "64", "--out", str(out),
                 "--results-dir", str(res), "--methods", "flashtile", "sdpa", "sdpa-efficient",
                 "--passes", "fwd", "bwd"]) == 0
    captured = capsys.readouterr()
    assert "[1/" in captured.err  # progress on stderr
    assert "x flash" in captured.out and "suite: 4/6 cases timed, 2 unsupported" in captured.out
    for folder in (out, res):
        report = json.loads((folder / "suite.json").read_text())
        assert (folder / "suite.txt").exists()
        assert (folder / "suite_speed_fwd_d64_fp32.png").stat().st_size > 0
        assert (folder / "suite_speedup_fp32.png").exists()
    assert report["kind"] == "flashtile-bench-suite" and report["finished"]
    assert report["environment"]["device"] == "cpu" and report["memory"] == []
    assert [(r["dtype"], r["head_dim"], r["causal"]) for r in report["compile"]] == \
        [("fp32", 64, False), ("fp32", 64, True)]
    assert all(r["total_s"] > 0 for r in report["compile"])
    rows = {(r["method"], r["causal"]): r for r in report["speed"]}
    assert len(rows) == 6 and {r["seqlen"] for r in report["speed"]} == {64}
    for causal in (False, True):
        for m in ("flashtile", "sdpa"):
            assert rows[m, causal]["fwd_tflops"] > 0 and rows[m, causal]["bwd_tflops"] > 0
            assert rows[m, causal]["batch"] == 256 // 64 and rows[m, causal]["heads"] == 2
        assert "unsupported" in rows["sdpa-efficient", causal]


def test_suite_time_budget_and_defaults(suite, tmp_path):
    quick = suite.suite_config("cuda", quick=True)
    assert quick.dtypes == ["bf16"] and quick.head_dims == [64, 128]
    assert quick.seqlens == [1024, 4096, 16384] and quick.passes == ["fwd", "bwd"]
    assert quick.memory_seqlens == [4096, 8192, 16384, 32768] and quick.budget_s
    full = suite.suite_config("cuda")
    assert full.dtypes == ["bf16", "fp16"] and full.head_dims == [64, 128, 256]
    assert full.seqlens[0] == 512 and full.seqlens[-1] == 16384 and full.budget_s is None
    assert (full.tokens, full.model_dim) == (16384, 2048) and "sdpa-math" in full.memory_methods

    cfg = suite.suite_config("cpu", seqlens=[32], budget_s=0.0)
    report = suite.run_suite(cfg, [str(tmp_path)])
    assert report["speed"] and all(r["skipped"] == "time budget" for r in report["speed"])
    assert all(r["skipped"] == "time budget" for r in report["compile"])
    assert json.loads((tmp_path / "suite.json").read_text())["finished"]
    assert "skipped for time" in suite.format_report(report).splitlines()[-1]


def test_budget_rations_the_per_shape_compilers(suite, monkeypatch, tmp_path):
    assert suite._middle_first([512, 1024, 2048, 4096, 8192, 16384]) == \
        [4096, 8192, 2048, 16384, 1024, 512]
    real = bench.make_method
    monkeypatch.setattr(bench, "make_method", lambda name: (
        bench.Method(name, real("sdpa").fn, jit=True) if name == "sdpa" else real(name)))
    cfg = suite.suite_config("cpu", seqlens=[16, 32], methods=["sdpa", "flashtile"],
                             passes=["fwd"], compile_times=False, budget_s=1e6)
    report = suite.run_suite(cfg, [str(tmp_path)])
    order = [(r["method"], r["seqlen"]) for r in report["speed"] if not r["causal"]]
    assert order == [("flashtile", 16), ("flashtile", 32), ("sdpa", 32), ("sdpa", 16)]
    clock = suite._Clock(100.0)
    clock.ration(2)
    assert 49 < clock.deadline <= 50.1 and not clock.out_of_time()
    clock.unration()
    assert clock.deadline == 100.0


def test_memory_sweep_until_out_of_memory(suite, plot, monkeypatch, tmp_path):
    # the CUDA memory counters, faked so that the sweep's code path runs on CPU
    for name, fake in [("empty_cache", lambda: None), ("reset_peak_memory_stats", lambda: None),
                       ("memory_allocated", lambda: 1000), ("max_memory_allocated", lambda: 1500)]:
        monkeypatch.setattr(torch.cuda, name, fake)
    monkeypatch.setattr(suite, "_memory_stats", lambda device: True)
    real = bench.make_method

    def make_method(name):
        if name != "sdpa-math":
            return real(name)

        def quadratic(q, k, v, causal):  # runs out of memory past 32 tokens
            if q.shape[1] > 32:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64 GiB")
            return real("sdpa").fn(q, k, v, causal)
        return bench.Method(name, quadratic)

    monkeypatch.setattr(bench, "make_method", make_method)
    cfg = suite.suite_config("cpu", seqlens=[32], methods=["flashtile"], passes=["fwd"],
                             memory_methods=["flashtile", "sdpa-math"],
                             memory_seqlens=[16, 32, 64, 128], memory_heads=2, memory_head_dim=16,
                             memory_dtype="fp32", compile_times=False)
    report = suite.run_suite(cfg, [str(tmp_path)])
    mem = {(r["method"], r["seqlen"]): r for r in report["memory"]}
    assert len(mem) == 8 and report["compile"] == []
    assert mem["flashtile", 128]["extra_bytes"] == 500 and mem["flashtile", 128]["finite"]
    assert mem["flashtile", 128]["floor_bytes"] == 4 * 128 * 2 * 16 * 4 + 128 * 2 * 4
    assert "extra_bytes" in mem["sdpa-math", 32] and mem["sdpa-math", 64]["oom"]
    assert mem["sdpa-math", 128]["skipped"].startswith("longer than")
    assert "OOM" in suite.format_report(report)
    assert plot.plot_memory(report, str(tmp_path / "memory.png"))


# ----------------------------------------------------------------------------- charts


def _synthetic_report():
    methods = ["flashtile", "sdpa-flash", "sdpa-cudnn", "flex", "sdpa-math"]
    speed = []
    for i, m in enumerate(methods[:-1]):
        for d in (64, 128):
            for causal in (False, True):
                for s in (1024, 4096, 16384):
                    row = dict(method=m, dtype="bf16", head_dim=d, seqlen=s, causal=causal,
                               batch=16384 // s, heads=2048 // d, fwd_ms=1.0, bwd_ms=2.0,
                               fwd_tflops=300.0 + 50 * i + s / 1024, bwd_tflops=250.0 + 40 * i)
                    if m == "flex" and s == 16384 and causal:
                        row = {k: v for k, v in row.items() if not k.endswith(("_ms", "_tflops"))}
                        row["skipped"] = "time budget"
                    speed.append(row)
    speed.append(dict(method="sdpa-cudnn", dtype="bf16", head_dim=256, seqlen=1024,
                      causal=False, unsupported="RuntimeError: no kernel"))
    memory = []
    for m in methods:
        for s in (4096, 8192, 16384, 32768):
            row = dict(method=m, seqlen=s, batch=1, heads=16, head_dim=128, dtype="bf16",
                       causal=False)
            if m == "sdpa-math" and s == 32768:
                row.update(oom=True, error="OutOfMemoryError: CUDA out of memory")
            else:
                extra = 5 * s * 16 * 128 * 2 * (s / 1024 if m == "sdpa-math" else 1)
                row.update(peak_bytes=int(extra) + 4 * s * 4096, baseline_bytes=4 * s * 4096,
                           extra_bytes=int(extra), floor_bytes=4 * s * 4096 + 64 * s,
                           input_bytes=4 * s * 4096)
            memory.append(row)
    return dict(kind="flashtile-bench-suite", version=1,
                environment=dict(device="cuda", gpu="NVIDIA H200", torch="2.11.0+cu130",
                                 triton="3.6.0", flashtile="0.1.0"),
                config=dict(quick=True, passes=["fwd", "bwd"], tokens=16384,
                            methods=methods[:-1]),
                methods={**{m: dict(available=True, label=bench.LABELS[m]) for m in methods},
                         "flash-attn-3": dict(available=False, reason="ModuleNotFoundError")},
                compile=[dict(method="flashtile", head_dim=64, dtype="bf16", causal=False,
                              fwd_s=2.0, bwd_s=4.0, total_s=6.0)],
                speed=speed, memory=memory, finished=True, wall_s=100.0)


def test_plot_suite_charts(plot, suite, tmp_path):
    path = tmp_path / "suite.json"
    report = _synthetic_report()
    path.write_text(json.dumps(report))
    charts = plot.main(str(path))
    names = sorted(os.path.basename(c) for c in charts)
    assert names == sorted([f"suite_speed_{p}_d{d}_bf16.png" for p in ("fwd", "bwd")
                            for d in (64, 128)] + ["suite_speedup_bf16.png", "suite_memory.png"])
    assert all((tmp_path / n).stat().st_size > 10_000 for n in names)
    text = suite.format_report(report)
    assert "OOM" in text and "x cuDNN" in text and "not installed: flash-attn-3" in text


def test_plot_keeps_reading_gpu_report(plot, tmp_path):
    path = REPO / "benchmarks" / "results" / "NVIDIA_H200" / "gpu_report.json"
    charts = plot.main(str(path), str(tmp_path))
    assert sorted(os.path.basename(c) for c in charts) == ["speed_bwd.png", "speed_fwd.png"]
    assert all(os.path.getsize(c) > 10_000 for c in charts)


def test_suite_median_takes_each_cases_median_and_keeps_the_runs():
    combine = bench.load_benchmark_script("suite_median").combine

    def report(fwd_ms, bwd_ms):
        row = dict(method="flashtile", dtype="bf16", head_dim=64, seqlen=1024, causal=True,
                   fwd_ms=fwd_ms, fwd_tflops=100.0 / fwd_ms, bwd_ms=bwd_ms,
                   bwd_tflops=250.0 / bwd_ms)
        other = dict(row, method="sdpa-flash", fwd_ms=2.0, fwd_tflops=50.0)
        return dict(speed=[row, other], config={})

    runs = [report(1.0, 2.0), report(4.0, 2.5), report(2.0, 5.0)]
    combined = combine(runs)
    row = combined["speed"][0]
    assert row["fwd_ms"] == 2.0 and row["fwd_tflops"] == pytest.approx(50.0)
    assert row["bwd_ms"] == 2.5 and row["bwd_tflops"] == pytest.approx(100.0)
    assert row["fwd_tflops_runs"] == [100.0, 25.0, 50.0]  # as measured, run order
    assert runs[0]["speed"][0]["fwd_ms"] == 1.0  # the inputs are left alone
    assert combined["speed"][1]["fwd_tflops"] == 50.0 and combined["runs"] == 3


def test_targets_report_worst_case_and_every_miss():
    targets = bench.load_benchmark_script("targets")

    def row(method, d, seqlen, causal, fwd, bwd):
        return dict(method=method, dtype="bf16", head_dim=d, seqlen=seqlen, causal=causal,
                    fwd_tflops=fwd, bwd_tflops=bwd)

    report = dict(speed=[
        row("flashtile", 128, 4096, False, 540.0, 500.0),
        row("sdpa-cudnn", 128, 4096, False, 600.0, 490.0),
        row("sdpa-flash", 128, 4096, False, 340.0, 300.0),
        row("flashtile", 128, 1024, True, 300.0, 250.0),  # below 2k: not a cuDNN case
        row("sdpa-cudnn", 128, 1024, True, 450.0, 300.0),
        row("sdpa-flash", 128, 1024, True, 250.0, 200.0),
        row("flashtile", 64, 4096, False, 450.0, 400.0),  # exactly at the targets: met
        row("sdpa-cudnn", 64, 4096, False, 450.0, 400.0),
        row("sdpa-flash", 64, 4096, False, 300.0, 250.0),
        row("flashtile", 256, 1024, True, 400.0, 240.0),
        row("sdpa-flash", 256, 1024, True, 250.0, 180.0),
    ], compile=[dict(method="flashtile", dtype="bf16", head_dim=128, seqlen=1024,
                     causal=True, total_s=31.0),
                dict(method="flashtile", dtype="bf16", head_dim=64, seqlen=1024,
                     causal=False, total_s=5.0)])
    results = {r["target"]: r for r in targets.check(report)}
    fwd_cudnn = results["forward >= 1.0x cuDNN, d64 / d128, S >= 2k"]
    assert fwd_cudnn["cases"] == 2 and fwd_cudnn["met"] is False
    assert [name for name, _ in fwd_cudnn["misses"]] == ["bf16 d128 4k non-causal"]
    assert fwd_cudnn["worst"] == ("bf16 d128 4k non-causal", pytest.approx(0.9))
    fwd_flash = results["forward >= 1.5x torch flash, d64 / d128, S >= 1k"]
    assert fwd_flash["cases"] == 3 and fwd_flash["misses"] == [
        ("bf16 d128 1k causal", pytest.approx(1.2))]  # 4k: 540 / 340 = 1.59 passes
    bwd = results["backward >= 1.0x cuDNN, d64 / d128, S >= 2k"]
    assert bwd["met"] is True and bwd["worst"] == ("bf16 d64 4k non-causal", 1.0)
    assert results["d256 forward >= 1.3x torch flash"]["met"] is True  # 1.6
    d256_bwd = results["d256 backward >= 1.3x torch flash"]
    assert d256_bwd["met"] is True and d256_bwd["worst"][1] == pytest.approx(240 / 180)
    first_call = [r for r in results.values() if r["target"].startswith("first call")][0]
    assert first_call["met"] is False and first_call["worst"] == ("bf16 d128 1k causal", 31.0)
    assert first_call["misses"] == [("bf16 d128 1k causal", 31.0)]
    table = targets.format_table(list(results.values()))
    assert "| **no** | bf16 d128 1k causal 1.20 |" in table
