"""iperf3's control connection, sans-IO: both sides of a whole test fed to each other byte by byte, the
bytes on the wire as iperf3 3.12 writes them, and what either side refuses."""

from __future__ import annotations

import json

import pytest

from stack.node.apps.iperf3_protocol import (
    CLIENT,
    COOKIE_SIZE,
    IE_NUM_STREAMS,
    IE_UNIMPLEMENTED,
    NEED_DATA,
    SERVER,
    Control,
    CookieReceived,
    Parameters,
    ParametersReceived,
    ProtocolError,
    Results,
    ResultsReceived,
    ServerErrorReceived,
    State,
    StateReceived,
    StreamResult,
    new_cookie,
    stream_ids,
)


def deliver(data: bytes, to: Control) -> list[object]:
    """Feed `data` one byte at a time (every split point must work); the events that came out."""
    events = []
    for index in range(len(data)):
        to.receive_data(data[index:index + 1])
        while (event := to.next_event()) is not NEED_DATA:
            events.append(event)
    return events


def test_a_whole_test_both_sides() -> None:
    client, server = Control(CLIENT), Control(SERVER)
    cookie = new_cookie()
    assert len(cookie) == COOKIE_SIZE and cookie.endswith(b"\0")
    assert deliver(client.send_cookie(cookie), server) == [CookieReceived(cookie)]
    assert deliver(server.send_state(State.PARAM_EXCHANGE), client) == [StateReceived(State.PARAM_EXCHANGE)]
    asked = Parameters(time=3, parallel=2, reverse=True)
    (event,) = deliver(client.send_parameters(asked), server)
    assert isinstance(event, ParametersReceived)
    assert (event.parameters.time, event.parameters.parallel, event.parameters.reverse) == (3, 2, True)
    assert event.parameters.refusal() is None
    for state in (State.CREATE_STREAMS, State.TEST_START, State.TEST_RUNNING):
        assert deliver(server.send_state(state), client) == [StateReceived(state)]
    assert deliver(client.send_state(State.TEST_END), server) == [StateReceived(State.TEST_END)]
    assert deliver(server.send_state(State.EXCHANGE_RESULTS), client) == [
        StateReceived(State.EXCHANGE_RESULTS)]
    theirs = Results((StreamResult(1, 1000, -1, 0.0, 3.0), StreamResult(3, 2000, -1, 0.0, 3.0)), 50.0, 40.0,
                     10.0, -1)
    (event,) = deliver(client.send_results(theirs), server)
    assert isinstance(event, ResultsReceived) and event.results.total_bytes == 3000
    ours = Results((StreamResult(1, 1000, 0, 0.0, 3.0), StreamResult(3, 2000, 0, 0.0, 3.0)), 90.0, 80.0,
                   10.0, 0)
    (event,) = deliver(server.send_results(ours), client)
    assert isinstance(event, ResultsReceived) and event.results == ours
    assert deliver(server.send_state(State.DISPLAY_RESULTS), client) == [StateReceived(State.DISPLAY_RESULTS)]
    assert deliver(client.send_state(State.IPERF_DONE), server) == [StateReceived(State.IPERF_DONE)]


def test_bytes_on_the_wire_are_iperf3s() -> None:
    """A state is one signed byte; a JSON document has a 4-byte big-endian length before it."""
    server = Control(SERVER)
    server.receive_data(b"x" * 36 + b"\0")
    server.next_event()
    assert server.send_state(State.PARAM_EXCHANGE) == b"\x09"
    document = json.dumps({"tcp": True, "omit": 0, "time": 10, "num": 0, "blockcount": 0, "parallel": 1,
                           "len": 131072, "pacing_timer": 1000, "client_version": "3.12"}).encode()
    server.receive_data(len(document).to_bytes(4, "big") + document)
    event = server.next_event()
    assert isinstance(event, ParametersReceived) and event.parameters.length == 131072
    assert event.parameters.extra == {"pacing_timer": 1000}
    assert server.send_state(State.CREATE_STREAMS) == b"\x0a"
    assert Control(SERVER).send_state(State.ACCESS_DENIED) == b"\xff"
    framed = Control(CLIENT)
    framed.receive_data(b"\x09")
    framed.next_event()
    sent = framed.send_parameters(Parameters(time=5))
    size = int.from_bytes(sent[:4], "big")
    assert size == len(sent) - 4 and json.loads(sent[4:])["time"] == 5 and json.loads(sent[4:])["tcp"] is True


def test_the_stream_ids_are_iperf3s() -> None:
    assert stream_ids(1) == [1]
    assert stream_ids(4) == [1, 3, 4, 5]
    assert stream_ids(0) == []


def test_a_server_error_carries_two_numbers() -> None:
    client = Control(CLIENT)
    server = Control(SERVER)
    server.receive_data(new_cookie())
    server.next_event()
    refusal = server.send_state(State.PARAM_EXCHANGE) + server.send_error(IE_UNIMPLEMENTED, 22)
    events = deliver(refusal, client)
    assert events[-1] == ServerErrorReceived(IE_UNIMPLEMENTED, 22)
    assert "not implemented" in events[-1].words and "errno 22" in events[-1].words
    assert deliver(Control(SERVER).send_state(State.ACCESS_DENIED), Control(CLIENT)) == [
        StateReceived(State.ACCESS_DENIED)]


@pytest.mark.parametrize(("document", "refusal"), [
    ({"udp": True, "parallel": 1}, IE_UNIMPLEMENTED),
    ({"tcp": True, "bidirectional": True}, IE_UNIMPLEMENTED),
    ({"tcp": True, "parallel": 129}, IE_NUM_STREAMS),
    ({"tcp": True, "parallel": 0}, IE_NUM_STREAMS),
    ({"tcp": True, "len": 1 << 21}, IE_UNIMPLEMENTED),
    ({"tcp": True, "parallel": 128}, None),
])
def test_what_a_server_refuses_to_run(document: dict, refusal: int | None) -> None:
    assert Parameters.from_json(document).refusal() == refusal


@pytest.mark.parametrize("document", [[1, 2], {"time": "ten"}, {"time": -1}, {"parallel": True},
                                      {"time": 10 ** 9}])
def test_parameters_that_are_not_iperf3s(document: object) -> None:
    with pytest.raises(ProtocolError):
        Parameters.from_json(document)


def test_out_of_order_and_malformed_input_is_refused() -> None:
    server = Control(SERVER)
    server.receive_data(new_cookie())
    server.next_event()
    with pytest.raises(ProtocolError):
        server.send_state(State.CREATE_STREAMS)  # before the parameters
    with pytest.raises(ProtocolError):
        server.send_state(State.TEST_END)  # the client's state
    server.send_state(State.PARAM_EXCHANGE)
    server.receive_data((10 << 20).to_bytes(4, "big"))
    with pytest.raises(ProtocolError, match="JSON document of"):
        server.next_event()
    client = Control(CLIENT)
    client.receive_data(b"\x04")  # TEST_END comes from a client, never to one
    with pytest.raises(ProtocolError, match="only a client"):
        client.next_event()
    client = Control(CLIENT)
    client.receive_data(b"\x63")
    with pytest.raises(ProtocolError, match="no iperf3 state"):
        client.next_event()
    client = Control(CLIENT)
    with pytest.raises(ProtocolError):
        client.send_state(State.TEST_END)  # before TEST_RUNNING
    server = Control(SERVER)
    server.receive_data(b"short")
    server.receive_data(b"")
    with pytest.raises(ProtocolError, match="closed in the middle"):
        server.next_event()


def test_results_that_lack_a_field_are_refused() -> None:
    good = Results((StreamResult(1, 10),), 1.0, 1.0, 0.0, -1).to_json()
    assert Results.from_json(good).streams[0].bytes == 10
    for key in ("cpu_util_total", "sender_has_retransmits", "streams"):
        with pytest.raises(ProtocolError):
            Results.from_json({k: v for k, v in good.items() if k != key})
    with pytest.raises(ProtocolError):
        Results.from_json({**good, "streams": [{"id": 1}]})
