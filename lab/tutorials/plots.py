"""The tutorials' plots: what a student would rather look at than read, as PNG and SVG files.

Two pictures, each with the stack's side next to the kernel's, drawn from measured samples:

- `queue_plot`: a listener's SYN queue (half-open, SYN_RECV) and accept queue (completed, not yet
  accepted) over time, one panel per listener, with the backlog+1 line the accept queue stops at;
- `congestion_plot`: a bulk sender's congestion window and slow-start threshold, its smoothed RTT,
  and its retransmissions (fast retransmit and timeout marked apart), one column per sender.

matplotlib draws through its Agg canvas on `Figure` objects of our own (no pyplot: no global figure
state, no display needed). `publish` writes both formats and registers them with the tutorial's
`Session` (`artifact("plots", ...)` and `figure(...)` for the report).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:  # annotations only
    from lab.tutorials.session import Session

FORMATS = ("png", "svg")
DPI = 110
SYN_COLOUR = "#d95f02"
ACCEPT_COLOUR = "#1b9e77"
CWND_COLOUR = "#1f78b4"
SSTHRESH_COLOUR = "#e7298a"
SRTT_COLOUR = "#7570b3"
# Linux's "no threshold yet" (TCP_INFINITE_SSTHRESH) and anything above it is not drawn.
INFINITE_SSTHRESH = 0x7FFFFFFF


@dataclass(frozen=True)
class QueueSample:
    """One look at a listener: seconds since the lab's part began, and both queues' lengths."""

    time: float
    syn_queue: int
    accept_queue: int


@dataclass(frozen=True)
class SenderSample:
    """One look at a sender: congestion window and ssthresh in segments (None: no threshold yet),
    smoothed RTT in milliseconds (None: not measured yet)."""

    time: float
    cwnd: float
    ssthresh: float | None
    srtt_ms: float | None


@dataclass
class SenderSeries:
    """One sender's samples and the times of its retransmissions, by the kind that caused them."""

    name: str
    samples: list[SenderSample] = field(default_factory=list)
    fast_retransmits: list[float] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)
    retransmits: list[float] = field(default_factory=list)  # every retransmitted segment


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.svg; the paths, PNG first."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in FORMATS:
        path = stem.with_name(f"{stem.name}.{kind}")
        metadata = {"Date": None} if kind == "svg" else {}
        figure.savefig(path, format=kind, metadata=metadata)
        paths.append(path)
    return paths


def queue_plot(sides: dict[str, Sequence[QueueSample]], backlog: int, stem: Path) -> list[Path]:
    """Each listener's SYN queue and accept queue over time, one panel per side; the files written."""
    figure = _new_figure(5.2 * max(1, len(sides)), 3.9)
    axes = figure.subplots(1, max(1, len(sides)), squeeze=False, sharey=True)[0]
    highest = max([backlog + 1] + [max(s.syn_queue, s.accept_queue) for seen in sides.values() for s in seen])
    for ax, (side, samples) in zip(axes, sides.items(), strict=False):
        times = [s.time for s in samples]
        ax.step(times, [s.syn_queue for s in samples], where="post", color=SYN_COLOUR,
                label="SYN queue (SYN_RECV)")
        ax.step(times, [s.accept_queue for s in samples], where="post", color=ACCEPT_COLOUR,
                label="accept queue (ESTABLISHED, not accepted)")
        ax.axhline(backlog + 1, color="grey", linestyle="--", linewidth=1,
                   label=f"backlog + 1 = {backlog + 1}")
        ax.set_title(side)
        ax.set_xlabel("seconds")
        ax.set_ylim(-0.3, highest + 1.2)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("connections")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=3, fontsize="small")
    return save(figure, stem)


def _shown_ssthresh(value: float | None) -> float:
    return float("nan") if value is None or value >= INFINITE_SSTHRESH else value


def congestion_plot(senders: Sequence[SenderSeries], stem: Path) -> list[Path]:
    """cwnd and ssthresh, srtt, and retransmissions over time, one column per sender; the files written."""
    columns = max(1, len(senders))
    figure = _new_figure(5.2 * columns, 7.0)
    grid = figure.subplots(3, columns, squeeze=False, sharex="col")
    for column, sender in enumerate(senders):
        window, rtt, losses = grid[0][column], grid[1][column], grid[2][column]
        times = [s.time for s in sender.samples]
        window.step(times, [s.cwnd for s in sender.samples], where="post", color=CWND_COLOUR, label="cwnd")
        window.step(times, [_shown_ssthresh(s.ssthresh) for s in sender.samples], where="post",
                    color=SSTHRESH_COLOUR, linestyle="--", label="ssthresh")
        window.set_title(sender.name)
        window.set_ylabel("segments")
        window.legend(loc="upper left", fontsize="small")
        srtt = [(s.time, s.srtt_ms) for s in sender.samples if s.srtt_ms is not None]
        rtt.plot([t for t, _ in srtt], [v for _, v in srtt], color=SRTT_COLOUR, label="srtt")
        rtt.set_ylabel("srtt (ms)")
        rows = (("retransmitted segment", sender.retransmits, 0, "|", "grey"),
                ("fast retransmit", sender.fast_retransmits, 1, "v", CWND_COLOUR),
                ("timeout (RTO)", sender.timeouts, 2, "x", SSTHRESH_COLOUR))
        for label, moments, row, marker, colour in rows:
            losses.plot(moments, [row] * len(moments), linestyle="none", marker=marker, color=colour,
                        label=f"{label} ({len(moments)})")
        losses.set_yticks([0, 1, 2], ["segments", "fast", "RTO"])
        losses.set_ylim(-0.5, 2.5)
        losses.set_xlabel("seconds")
        losses.legend(loc="upper right", fontsize="x-small")
        for ax in (window, rtt, losses):
            ax.grid(True, alpha=0.3)
    return save(figure, stem)


def publish(session: Session, paths: list[Path], title: str, caption: str = "") -> list[Path]:
    """List the files under the result's `plots` and show the SVG (else the PNG) in the report."""
    for path in paths:
        session.artifact("plots", path)
    shown = next((p for p in paths if p.suffix == ".svg"), paths[0] if paths else None)
    if shown is not None:
        session.figure(title, shown, caption)
    return paths
