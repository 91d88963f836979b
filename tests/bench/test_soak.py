"""The soak runs end to end on a real server with the whole request mix (a smoke run of seconds, not the soak)."""

import pytest

from bench import soak


@pytest.mark.slow
def test_soak_mix_gets_only_deliberate_answers(tiny_store, tmp_path):
    soak.main(
        [
            "--minutes",
            "0.05",
            "--warmup",
            "20",
            "--concurrency",
            "4",
            "--store",
            str(tiny_store),
            "--out",
            str(tmp_path),
            "--sample-s",
            "1",
        ]
    )
    report = (tmp_path / "soak-latest.md").read_text()
    assert "5xx or dropped connections: 0" in report
    for status in ("200", "400", "415", "422"):
        assert f"{status}: " in report, report
    readings = report.split("Resident memory every 1 s (MiB): ")[1].splitlines()[0].split(", ")
    assert len(readings) >= 3 and all(float(m) > 0 for m in readings)  # after warm-up, then each second
