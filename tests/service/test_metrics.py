from prometheus_client import CollectorRegistry

from service.metrics import Metrics


def test_a_sub_millisecond_stage_is_told_apart_from_a_slow_one():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.preprocess_seconds.observe(0.0003)
    metrics.preprocess_seconds.observe(0.0015)

    def below(le: str) -> float:
        return registry.get_sample_value("resmtnet_preprocess_seconds_bucket", {"le": le})

    assert (below("0.00025"), below("0.0005"), below("0.001"), below("0.002")) == (0, 1, 1, 2)


def test_the_process_reports_its_memory_and_start_time():
    registry = CollectorRegistry()
    Metrics(registry)
    assert registry.get_sample_value("process_resident_memory_bytes") > 10 * 2**20
    assert registry.get_sample_value("process_start_time_seconds") > 1.7e9
    names = {sample.name for family in registry.collect() for sample in family.samples}
    assert {"process_open_fds", "process_cpu_seconds_total", "python_info"} <= names
