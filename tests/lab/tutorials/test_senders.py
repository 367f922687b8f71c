"""Both senders' windows over time: Linux's tcp_probe lines, and the stack's ss rows and trace, as one
series."""

from __future__ import annotations

from lab.kernel.tracepoints import parse_trace_line
from lab.tutorials.senders import kernel_series, median, series_json, series_of, stack_series

PROBE = ("          python-10655   [000] ..s2.  {time}: tcp_probe: family=AF_INET src={src} dest=10.0.0.2:9 "
         "mark=0x0 data_len=0 snd_nxt=0x1 snd_una=0x1 snd_cwnd={cwnd} ssthresh={ssthresh} snd_wnd=64256 "
         "srtt={srtt} rcv_wnd=65160 sock_cookie=2 skbaddr=000000001 skaddr=000000002")
RETRANSMIT = ("          python-10655   [000] ..s2.  {time}: tcp_retransmit_skb: skbaddr=0000000080eb5e85 "
              "skaddr=000000005a1b1fb9 family=AF_INET sport=53190 dport=9 saddr=10.0.0.1 daddr=10.0.0.2 "
              "saddrv6=::ffff:10.0.0.1 daddrv6=::ffff:10.0.0.2 state=TCP_ESTABLISHED err=0")


def probe(time: float, cwnd: int, ssthresh: int, srtt: int, src: str = "10.0.0.1:53190") -> str:
    return PROBE.format(time=f"{time:.6f}", src=src, cwnd=cwnd, ssthresh=ssthresh, srtt=srtt)


def test_kernel_series_from_tcp_probe_names_fast_retransmits_and_timeouts() -> None:
    lines = [probe(100.0, 10, 2147483647, 0), probe(100.1, 20, 2147483647, 21000),
             RETRANSMIT.format(time="100.150000"), probe(100.2, 14, 14, 22000),
             probe(100.3, 15, 14, 22500), probe(100.5, 1, 7, 23000),
             probe(100.6, 99, 99, 1, src="10.0.0.1:40000")]  # another connection: left out
    events = [event for line in lines if (event := parse_trace_line(line)) is not None]
    series = kernel_series("Linux", events, ("10.0.0.1", 53190), started=100.0)
    assert [s.cwnd for s in series.samples] == [10, 20, 14, 15, 1]
    assert series.samples[0].ssthresh is None and series.samples[0].srtt_ms is None
    assert series.samples[1].srtt_ms == 21.0
    assert series.fast_retransmits == [0.2] and series.timeouts == [0.5]
    assert series.retransmits == [0.15]


def test_a_probe_of_another_format_is_left_out() -> None:
    event = parse_trace_line(probe(1.0, 10, 10, 1).replace("snd_cwnd=", "cwnd="))
    assert event is not None
    assert kernel_series("Linux", [event], ("10.0.0.1", 53190), 0.0).samples == []


def test_stack_series_in_segments_and_milliseconds_with_causes_from_the_trace() -> None:
    rows = [(0.0, {"cwnd": 14600, "ssthresh": 0x7FFFFFFF, "srtt": None, "mss": 1460}),
            (0.02, {"cwnd": 29200, "ssthresh": 14600, "srtt": 0.0215, "mss": 1460})]
    events = [{"name": "tcp_retransmit_skb", "time": 50.1, "local": "10.0.0.2:40000"},
              {"name": "tcp_cwnd_change", "time": 50.1, "local": "10.0.0.2:40000",
               "reason": "fast_retransmit"},
              {"name": "tcp_cwnd_change", "time": 50.2, "local": "10.0.0.2:40000"},
              {"name": "tcp_cwnd_change", "time": 50.4, "local": "10.0.0.2:40000", "reason": "rto"},
              {"name": "tcp_retransmit_skb", "time": 50.4, "local": "10.0.0.2:40001"}]
    series = stack_series("stack", rows, events, ("10.0.0.2", 40000), started=50.0)
    assert [(s.cwnd, s.ssthresh) for s in series.samples] == [(10.0, None), (20.0, 10.0)]
    assert series.samples[1].srtt_ms is not None and abs(series.samples[1].srtt_ms - 21.5) < 1e-9
    assert series.retransmits == [0.1] and series.fast_retransmits == [0.1] and series.timeouts == [0.4]


def test_series_survive_json() -> None:
    rows = [(0.0, {"cwnd": 14600, "ssthresh": 14600, "srtt": 0.02, "mss": 1460})]
    series = stack_series("stack", rows, [], ("10.0.0.2", 1), 0.0)
    assert series_of(series_json(series)) == series


def test_median_ignores_unknown_values() -> None:
    assert median([None, 3.0, 1.0, 2.0]) == 2.0
    assert median([None]) is None
