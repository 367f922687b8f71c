"""A bulk sender's congestion window over time, as the two sides report it, in one shape for the plot.

- Linux: `tcp:tcp_probe` events (one per ACK the sender processes in ESTABLISHED) carry snd_cwnd and
  ssthresh in segments and srtt in microseconds; `tcp:tcp_retransmit_skb` marks each retransmission.
  The tracepoints do not say why the window was cut, so a cut is named by what it looks like: after a
  timeout cwnd is 1 segment (tcp_enter_loss), after a fast retransmit it stays above 1.
- The stack: rows of its `ss` view (cwnd and ssthresh in bytes, srtt in seconds) and its trace, whose
  `tcp_cwnd_change` events name the cause (`fast_retransmit`, `rto`).

Both become a `lab.tutorials.plots.SenderSeries` with times relative to the transfer's start, and
go to and from JSON (a tutorial's metrics) unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lab.experiments.stack_answers import endpoint
from lab.kernel.tracepoints import TraceEvent
from lab.tutorials.plots import INFINITE_SSTHRESH, SenderSample, SenderSeries


def series_json(series: SenderSeries) -> dict[str, Any]:
    return {"name": series.name, "samples": [[s.time, s.cwnd, s.ssthresh, s.srtt_ms] for s in series.samples],
            "fast_retransmits": series.fast_retransmits, "timeouts": series.timeouts,
            "retransmits": series.retransmits}


def series_of(data: dict[str, Any]) -> SenderSeries:
    return SenderSeries(data["name"], [SenderSample(*row) for row in data["samples"]],
                        list(data["fast_retransmits"]), list(data["timeouts"]), list(data["retransmits"]))


def _threshold(value: float | None) -> float | None:
    return None if value is None or value >= INFINITE_SSTHRESH else value


def kernel_series(name: str, events: Iterable[TraceEvent], local: tuple[str, int],
                  started: float) -> SenderSeries:
    """The Linux sender at `local` from its tcp_probe and tcp_retransmit_skb events."""
    series = SenderSeries(name)
    previous: SenderSample | None = None
    for event in events:
        if (event.fields.get("saddr"), event.ports[0]) != local:
            continue
        moment = round(event.time - started, 4)
        if event.name == "tcp_retransmit_skb":
            series.retransmits.append(moment)
            continue
        if event.name != "tcp_probe":
            continue
        try:
            cwnd = float(event.fields["snd_cwnd"])
            ssthresh = _threshold(float(event.fields["ssthresh"]))
            srtt_us = int(event.fields.get("srtt", "0"))
        except (KeyError, ValueError):
            continue  # a line of another kernel's format: left out, not guessed
        sample = SenderSample(moment, cwnd, ssthresh, srtt_us / 1000.0 if srtt_us else None)
        if previous is not None and ssthresh is not None and ssthresh != previous.ssthresh:
            (series.timeouts if cwnd <= 1 else series.fast_retransmits).append(moment)
        series.samples.append(sample)
        previous = sample
    return series


def stack_series(name: str, rows: Iterable[tuple[float, dict[str, Any]]], events: Iterable[dict[str, Any]],
                 local: tuple[str, int], started: float) -> SenderSeries:
    """The stack sender at `local` from `(seconds, ss row)` pairs and its trace events (the stack's clock is
    CLOCK_MONOTONIC, so its event times line up with `started`, a `time.monotonic()` of this process)."""
    series = SenderSeries(name)
    for moment, row in rows:
        mss = max(1, int(row.get("mss") or 1))
        ssthresh = row.get("ssthresh")
        srtt = row.get("srtt")
        series.samples.append(SenderSample(
            moment, int(row.get("cwnd", 0)) / mss,
            None if ssthresh is None or ssthresh >= INFINITE_SSTHRESH else int(ssthresh) / mss,
            float(srtt) * 1000 if srtt else None))
    for event in events:
        if endpoint(event, "local") != local:
            continue
        moment = round(float(event["time"]) - started, 4)
        kind, reason = event.get("name"), event.get("reason")
        if kind == "tcp_retransmit_skb":
            series.retransmits.append(moment)
        elif kind == "tcp_cwnd_change" and reason == "fast_retransmit":
            series.fast_retransmits.append(moment)
        elif kind == "tcp_cwnd_change" and reason == "rto":
            series.timeouts.append(moment)
    return series


def median(values: Iterable[float | None]) -> float | None:
    """The middle of the known values (srtt over a transfer), or None when none is known."""
    known = sorted(v for v in values if v is not None)
    return known[len(known) // 2] if known else None
