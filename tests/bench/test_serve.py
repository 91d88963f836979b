"""The benchmark runs end to end (every contender a real server, load generator, in-process ceiling) and reports
both ratios, a table and a plot. A smoke run on the tiny model: it checks the plumbing and the report, not figures."""

import csv

import pytest

from bench import serve


@pytest.mark.slow
def test_benchmark_reports_both_ratios_for_every_concurrency(tiny_store, tmp_path):
    serve.main(
        [
            "--store", str(tiny_store), "--concurrency", "1", "4", "--requests", "30",
            "--ceiling-seconds", "0.2", "--out", str(tmp_path), "--litserve-timeouts", "0", "0.002",
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
    assert (tmp_path / "serve-latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
