"""The benchmark runs end to end (every contender a real server, load generator, in-process ceiling) and reports
both ratios, a table and a plot. A smoke run on the tiny model: it checks the plumbing and the report, not figures."""

import csv

import onnxruntime as ort
import pytest

from bench import serve
from bench.inprocess import open_session
from service.runtime.store import resolve


@pytest.mark.slow
def test_benchmark_reports_both_ratios_for_every_concurrency(tiny_store, tmp_path):
    serve.main(
        [
            "--store", str(tiny_store), "--concurrency", "1", "4", "--requests", "30",
            "--ceiling-seconds", "0.2", "--out", str(tmp_path),
            "--litserve-timeouts", "0", "--litserve-workers", "1", "2",
            "--rounds", "2", "--round-requests", "30", "--round-ceiling-seconds", "0.2",
        ]
    )  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "serve-latest.csv").open()))
    contenders = ["Res-MTNet Serve", "per-request FastAPI", "LitServe"]
    assert [(r["contender"], int(r["concurrency"])) for r in rows] == [(c, n) for c in contenders for n in (1, 4)]
    for r in rows:
        assert int(r["non_200"]) == 0
        assert 0 < float(r["ratio_best_layout"]) <= float(r["ratio_one_session"])
    assert float(rows[1]["mean_batch"]) >= 1.0  # the service's own view, from /metrics
    report = (tmp_path / "serve-latest.md").read_text()
    assert "ratio, 1 session" in report and "before and one after" in report and "batch_timeout" in report
    assert "Provider: CPUExecutionProvider" in report and "of batch timeouts 0 s and 1 or 2 workers" in report
    assert (tmp_path / "serve-latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rounds = list(csv.DictReader((tmp_path / "serve-latest-rounds.csv").open()))
    assert [int(r["round"]) for r in rounds] == [1, 2]
    for r in rounds:
        assert int(r["non_200_16"]) == int(r["non_200_1"]) == 0
        assert 0 < float(r["ratio_best_layout_16"]) <= float(r["ratio_one_session_16"])
        assert float(r["p50_over_single_ms_1"]) == float(r["p50_ms_1"]) - float(r["single_ms"])
    assert "Headline: the service in 2 paired rounds" in report


def test_cuda_asked_for_without_cuda_is_refused_not_run_on_cpu():
    with pytest.raises(SystemExit, match="--provider cuda, but onnxruntime offers only CPUExecutionProvider"):
        serve.resolve_provider("cuda", ["CPUExecutionProvider"])
    assert serve.resolve_provider("auto", ["CPUExecutionProvider"]) == "cpu"
    assert serve.resolve_provider("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == "cuda"
    assert serve.resolve_provider("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == "cpu"


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is present here")
def test_the_cuda_ceiling_refuses_a_session_that_fell_back_to_cpu(tiny_store):
    onnx = resolve(tiny_store, "res_mtnet").onnx_path
    with pytest.raises(RuntimeError, match="did not activate CUDAExecutionProvider"):
        open_session(onnx, 1, "cuda")
    assert open_session(onnx, 1, "cpu").get_providers()[0] == "CPUExecutionProvider"


def test_the_cuda_sweep_measures_the_ceiling_at_larger_batches():
    assert serve.ceiling_batches("cpu", 16) == [1, 16]
    assert serve.ceiling_batches("cuda", 64) == [1, 4, 16, 64]
    assert serve.ceiling_batches("cuda", 8) == [1, 4, 8]
    assert serve.DEFAULTS["cuda"]["max_batch"] > serve.DEFAULTS["cpu"]["max_batch"]
    assert max(serve.DEFAULTS["cuda"]["concurrency"]) > max(serve.DEFAULTS["cpu"]["concurrency"])


def test_the_machine_line_names_the_gpu_or_its_absence(monkeypatch):
    monkeypatch.setattr(serve.shutil, "which", lambda name: None)
    assert "no GPU" in serve.machine()
