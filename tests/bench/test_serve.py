"""The service benchmark runs end to end (real server, load generator, in-process ceiling) and reports both ratios.
A smoke run on the tiny model: it checks the plumbing and the report, not the figures."""

import csv

import pytest

from bench import serve


@pytest.mark.slow
def test_benchmark_reports_both_ratios_for_every_concurrency(tiny_store, tmp_path):
    serve.main(
        [
            "--store", str(tiny_store), "--concurrency", "1", "4", "--requests", "30",
            "--ceiling-seconds", "0.2", "--out", str(tmp_path),
        ]
    )  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "serve-latest.csv").open()))
    assert [int(r["concurrency"]) for r in rows] == [1, 4]
    for r in rows:
        assert int(r["non_200"]) == 0
        assert 0 < float(r["ratio_best_layout"]) <= float(r["ratio_same_layout"])
        assert float(r["mean_batch"]) >= 1.0
    report = (tmp_path / "serve-latest.md").read_text()
    assert "ratio, same layout" in report and "before and one after" in report
