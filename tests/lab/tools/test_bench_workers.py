"""`lab bench workers`: the speed-ups and the ratios to the kernel's figures (no root)."""

from __future__ import annotations

from lab.tools.bench_workers import with_worker_ratios


def test_speedups_are_two_workers_over_one_and_ratios_stack_over_kernel() -> None:
    figures = with_worker_ratios({
        "stack_accept_cps_1_worker": 2000.0, "stack_accept_cps_2_workers": 3000.0,
        "parallel_bulk_gbps_1_worker": 2.0, "parallel_bulk_gbps_2_workers": 3.0,
        "kernel_accept_cps": 30000.0, "kernel_parallel_bulk_gbps": 30.0})
    assert figures["workers_accept_speedup"] == 1.5 and figures["workers_bulk_speedup"] == 1.5
    assert figures["stack_accept_ratio_2_workers"] == 0.1
    assert figures["parallel_bulk_ratio_1_worker"] == 0.0667
