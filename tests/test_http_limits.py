"""The HTTP edges `intercom-sync serve` holds without a proxy: a header block over
16 KiB is refused, a client that does not finish its headers in time is disconnected, and a
request the parser cannot read gets the JSON error shape. All over real sockets to a real
`serve` process."""

from __future__ import annotations

import select
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.http_server import HEADER_TIMEOUT_SECONDS, MAX_HEADER_BYTES
from app.simulator import SimulatorServer
from harness.service import ServiceProcess, service_env, signed_headers

# Far above any deadline the server is given here: the tests wait for an outcome, not a time.
PATIENCE_SECONDS = 60.0
SHORT_HEADER_TIMEOUT = 1.0


class ShortDeadlineServe(ServiceProcess):
    """`serve`'s uvicorn set-up (app.http_server.run_server) with a shorter header deadline,
    so that tests of the deadline do not each wait the default 10 s."""

    def command(self) -> list[str]:
        code = (
            "import sys; from app.http_server import run_server; "
            "run_server(host='127.0.0.1', port=int(sys.argv[1]), "
            "header_timeout_seconds=float(sys.argv[2]))"
        )
        return [sys.executable, "-c", code, str(self.port), str(SHORT_HEADER_TIMEOUT)]


@pytest.fixture
def served(database_url: str, sim: SimulatorServer, tmp_path: Path) -> Iterator[ServiceProcess]:
    """`intercom-sync serve` as the container runs it."""
    server = ServiceProcess(service_env(database_url, sim), log_path=tmp_path / "serve.log")
    server.start()
    yield server
    server.terminate()


@pytest.fixture
def short_deadline(
    database_url: str, sim: SimulatorServer, tmp_path: Path
) -> Iterator[ServiceProcess]:
    server = ShortDeadlineServe(service_env(database_url, sim), log_path=tmp_path / "serve.log")
    server.start()
    yield server
    server.terminate()


def header_block(size: int, *, headers: int = 1, path: str = "/healthz") -> bytes:
    """A GET whose header block (request line to the blank line, inclusive) is `size` bytes,
    padded over `headers` X-Pad headers."""
    head = f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n".encode()
    pad_lines = [f"X-Pad-{i}: ".encode() for i in range(headers)]
    room = size - len(head) - sum(len(line) + 2 for line in pad_lines) - 2
    assert room >= 0, "too many headers for the size"
    lines = []
    for i, line in enumerate(pad_lines):
        share = room // headers + (1 if i < room % headers else 0)
        lines.append(line + b"v" * share + b"\r\n")
    block = head + b"".join(lines) + b"\r\n"
    assert len(block) == size
    return block


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_SECONDS)
    sock.settimeout(PATIENCE_SECONDS)
    return sock


def send_and_read(port: int, data: bytes, *, chunk: int | None = None) -> bytes:
    """Send `data` (in pieces of `chunk` bytes), then read until the server closes. A reset
    (the server closed with our bytes unread) ends the answer too."""
    received = b""
    with connect(port) as sock:
        try:
            step = chunk or len(data)
            for start in range(0, len(data), step):
                sock.sendall(data[start : start + step])
            while piece := sock.recv(65536):
                received += piece
        except (ConnectionResetError, BrokenPipeError):
            pass
    return received


def status_of(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer[9:12])


def json_body(answer: bytes) -> object:
    return orjson.loads(answer.split(b"\r\n\r\n", 1)[1])


def test_a_17_kib_header_block_is_refused_and_a_15_kib_one_is_served(
    served: ServiceProcess,
) -> None:
    small = send_and_read(served.port, header_block(15 * 1024))
    assert status_of(small) == 200, small[:200]
    large = send_and_read(served.port, header_block(17 * 1024))
    assert status_of(large) in (431, None), large[:200]
    if large:
        assert json_body(large) == {
            "error": {
                "code": "headers_too_large",
                "message": f"the request's header block is over {MAX_HEADER_BYTES} bytes",
            }
        }
    # The service is unharmed.
    assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200


def test_the_limit_holds_however_the_block_is_split_into_headers_and_writes(
    served: ServiceProcess,
) -> None:
    @settings(max_examples=40, deadline=None, database=None)
    @given(
        size=st.integers(MAX_HEADER_BYTES - 2000, MAX_HEADER_BYTES + 2000)
        | st.sampled_from([MAX_HEADER_BYTES, MAX_HEADER_BYTES + 1]),
        headers=st.integers(1, 40),
        chunk=st.none() | st.sampled_from([512, 1460, 4096, 9000]),
    )
    def judged_by_size(size: int, headers: int, chunk: int | None) -> None:
        answer = send_and_read(served.port, header_block(size, headers=headers), chunk=chunk)
        if size <= MAX_HEADER_BYTES:
            assert status_of(answer) == 200, (size, answer[:200])
        else:
            assert status_of(answer) in (431, None), (size, answer[:200])

    judged_by_size()


def test_one_endless_header_is_cut_off_without_being_read_whole(served: ServiceProcess) -> None:
    sent = 0
    closed = False
    with connect(served.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: ")
        try:
            while sent < 50 * 1024 * 1024:
                sock.sendall(b"v" * 65536)
                sent += 65536
        except (ConnectionResetError, BrokenPipeError):
            closed = True
        if not closed:
            try:
                answer = b""
                while piece := sock.recv(65536):
                    answer += piece
                closed = True
                assert status_of(answer) in (431, None)
            except ConnectionResetError:
                closed = True
    assert closed
    assert sent < 50 * 1024 * 1024, "the server read a 50 MB header"


def test_headers_and_bodies_in_the_same_writes_are_judged_per_request(
    served: ServiceProcess,
) -> None:
    """Two pipelined requests of 12 KiB headers each in one write are each under the limit, and
    a large body arriving with its headers is not counted as header."""
    first = header_block(12 * 1024).replace(b"Connection: close\r\n", b"X-Keep: 1\r\n")
    second = header_block(12 * 1024)
    answer = send_and_read(served.port, first + second)
    assert answer.count(b"HTTP/1.1 200 OK") == 2, answer[:300]

    body = b'{"type": "notification_event", "padding": "' + b"p" * 200_000 + b'"}'
    headers = signed_headers(body, "not-the-secret")
    request = (
        b"POST /webhooks/intercom HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        + b"".join(f"{name}: {value}\r\n".encode() for name, value in headers.items())
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    answer = send_and_read(served.port, request)
    assert status_of(answer) == 401, answer[:300]


def test_malformed_http_gets_a_400_in_the_json_error_shape(served: ServiceProcess) -> None:
    for garbage in (b"NOT HTTP AT ALL\r\n\r\n", b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n"):
        answer = send_and_read(served.port, garbage)
        assert status_of(answer) == 400, answer[:200]
        assert json_body(answer) == {
            "error": {"code": "bad_request", "message": "the request is not valid HTTP/1.1"}
        }


def closed_within_patience(sock: socket.socket) -> bytes:
    """What the server sent before it closed `sock`; fails if it never closes."""
    answer = b""
    try:
        while piece := sock.recv(65536):
            answer += piece
    except TimeoutError:
        pytest.fail(f"the server held the connection for {PATIENCE_SECONDS}s")
    except ConnectionResetError:
        pass
    return answer


def test_the_default_deadline_disconnects_a_stalled_client(served: ServiceProcess) -> None:
    assert HEADER_TIMEOUT_SECONDS == 10.0  # ; `serve` above runs with the default
    with connect(served.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Half: ")
        answer = closed_within_patience(sock)
    assert status_of(answer) == 408, answer[:200]


def test_a_client_that_stalls_inside_its_headers_is_disconnected(
    short_deadline: ServiceProcess,
) -> None:
    with connect(short_deadline.port) as sock:
        sock.sendall(header_block(2048)[:1000])
        answer = closed_within_patience(sock)
    assert status_of(answer) == 408
    assert json_body(answer) == {
        "error": {
            "code": "request_timeout",
            "message": "the request's headers did not arrive in time",
        }
    }
    # A client that connects and says nothing is closed as well, with nothing to answer.
    with connect(short_deadline.port) as sock:
        assert closed_within_patience(sock) == b""
    # A request whose headers arrived may take its time over the body.
    body = b'{"type": "notification_event"}'
    request = (
        b"POST /webhooks/intercom HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nX-Hub-Signature: sha1=00\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    with connect(short_deadline.port) as sock:
        sock.sendall(request)
        time.sleep(SHORT_HEADER_TIMEOUT * 2.5)
        sock.sendall(body)
        answer = closed_within_patience(sock)
    assert status_of(answer) == 401, answer[:200]


def test_many_slow_sockets_do_not_stay_open_and_others_are_served(
    short_deadline: ServiceProcess,
) -> None:
    """Each slow client keeps sending a byte of its header block now and then: the deadline
    runs from the start of the request, not from the last byte."""
    slow: list[socket.socket] = []
    try:
        for _ in range(150):
            sock = connect(short_deadline.port)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
            sock.setblocking(False)
            slow.append(sock)
        assert httpx.get(f"{short_deadline.url}/healthz", timeout=10).status_code == 200
        still_open = set(slow)
        give_up = time.monotonic() + PATIENCE_SECONDS
        while still_open and time.monotonic() < give_up:
            for sock in list(still_open):
                try:
                    sock.send(b"X")
                except (BrokenPipeError, ConnectionResetError):
                    still_open.discard(sock)
            readable, _, _ = select.select(list(still_open), [], [], 0.2)
            for sock in readable:
                try:
                    while sock.recv(65536):
                        pass
                except BlockingIOError:
                    continue  # an answer arrived; the close follows
                except ConnectionResetError:
                    pass
                still_open.discard(sock)
        assert not still_open, f"{len(still_open)} of {len(slow)} slow sockets stayed open"
    finally:
        for sock in slow:
            sock.close()
    assert httpx.get(f"{short_deadline.url}/healthz", timeout=10).status_code == 200
