"""The paired rounds' summary: medians over rounds, so that one round a neighbour slowed does not move the headline."""

from bench import rounds


def _round(n: int, rps_16: float, ceiling: float) -> dict:
    return {
        "round": n,
        "ceiling_one_session": ceiling * 0.9,
        "ceiling_best_layout": ceiling,
        "single_ms": 3.7,
        "rps_16": rps_16,
        "p99_ms_16": 90.0 + n,
        "p50_ms_1": 6.0,
        "non_200_16": 0,
        "non_200_1": 0,
        "ratio_one_session_16": rps_16 / (ceiling * 0.9),
        "ratio_best_layout_16": rps_16 / ceiling,
        "p50_over_single_ms_1": 6.0 - 3.7,
    }


def test_the_median_ignores_one_disturbed_round():
    rows = [_round(1, 240.0, 300.0), _round(2, 150.0, 300.0), _round(3, 246.0, 300.0)]
    stats = rounds.summary(rows)
    assert stats["rps_16"] == (240.0, 150.0, 246.0)
    assert stats["ratio_best_layout_16"] == (0.8, 0.5, 0.82)
    assert stats["p99_ms_16"] == (92.0, 91.0, 93.0)


def test_the_section_states_every_figure_with_its_target_and_every_round():
    text = "\n".join(rounds.markdown([_round(1, 240.0, 300.0), _round(2, 246.0, 300.0)], 1500, 2.0))
    assert "| throughput at 16 clients / in-process, best layout | 0.810 | 0.800 | 0.820 | >= 0.90 |" in text
    assert "| p50 at 1 client - in-process single-patch p50 (ms) | 2.30 | 2.30 | 2.30 |" in text
    assert text.count("\n| 1 |") == 1 and text.count("\n| 2 |") == 1
    assert "2 paired rounds" in text and "1500 requests each" in text
