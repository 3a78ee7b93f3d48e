"""How `intercom-sync serve` (and so the container) runs uvicorn, with the HTTP edge limits
held by the server itself, without a proxy in front of it:

- a request whose header block (request line and header lines) is over 16 KiB is answered 431
  and the connection closed;
- a client that has not finished a request's header block within 10 s of starting it (or of
  connecting) is disconnected;
- a request the HTTP parser cannot read is answered 400 in the usual JSON error shape, and the
  connection closed.

httptools, uvicorn's fast parser, has neither limit, and uvicorn has no timeout for unfinished
headers with either parser: a small subclass of its httptools protocol adds them, so the hot
paths keep the fast parser.
"""

from __future__ import annotations

import asyncio

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEADER_BYTES = 16 * 1024
HEADER_TIMEOUT_SECONDS = 10.0
# By import path, so that each worker process of `--workers N` loads the same class.
PROTOCOL = "app.http_server:EdgeLimitedHttpProtocol"


def _error_bytes(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


_BAD_REQUEST = _error_bytes("bad_request", "the request is not valid HTTP/1.1")
_HEADERS_TOO_LARGE = _error_bytes(
    "headers_too_large", f"the request's header block is over {MAX_HEADER_BYTES} bytes"
)
_HEADERS_TIMEOUT = _error_bytes("request_timeout", "the request's headers did not arrive in time")


class EdgeLimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size limit and a deadline on each header block.

    The size of a header block is counted in two ways. While it is still arriving, every byte
    received is counted (less what belonged to an earlier request's body or header block in the
    same read), so a client streaming one endless header is cut off after the limit, not after
    the parser has buffered all of it. When it is complete, it is measured from what was parsed,
    so a block that arrived in one read together with its body is judged by itself.
    """

    max_header_bytes = MAX_HEADER_BYTES
    # Tests shorten it in their own server process; each worker of `--workers N` has the default.
    header_timeout_seconds = HEADER_TIMEOUT_SECONDS

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        # A connection is waiting for a header block from its first moment: one that never
        # sends a byte is as much a held-open socket as one that stops half-way.
        self._awaiting_headers = True
        self._request_begun = False
        self._header_bytes = 0
        self._read_other_bytes = 0
        self._refused = False
        self._header_started = self.loop.time()
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        self._read_other_bytes = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if not self._refused:  # else the refusal is answered already
                self.logger.warning("Invalid HTTP request received.")
                self._refuse(400, _BAD_REQUEST)
            return
        if self._awaiting_headers and not self._refused:
            self._header_bytes += len(data) - self._read_other_bytes
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, _HEADERS_TOO_LARGE)
            elif self._header_timer is None:
                self._arm_header_timer()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, _BAD_REQUEST)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        self._awaiting_headers = True
        self._header_bytes = 0
        if self._header_timer is None:
            # Else the deadline set when the connection opened still holds for its first request.
            self._header_started = self.loop.time()

    def on_headers_complete(self) -> None:
        size = (
            len(self.parser.get_method())
            + len(self.url)
            + len(b"  HTTP/1.1\r\n\r\n")
            + sum(len(name) + len(value) + 4 for name, value in self.headers)
        )
        self._read_other_bytes += size
        self._awaiting_headers = False
        self._cancel_header_timer()
        if size > self.max_header_bytes:
            self._refuse(431, _HEADERS_TOO_LARGE)
            # Stops the parser; data_received sees the refusal and answers nothing more.
            raise _Refused
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._read_other_bytes += len(body)
        super().on_body(body)

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_at(
            self._header_started + self.header_timeout_seconds, self._header_deadline
        )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        if not self._awaiting_headers or self.transport.is_closing():
            return
        if self._request_begun:
            self._refuse(408, _HEADERS_TIMEOUT)
        else:
            self.transport.close()  # nothing was asked, so nothing is answered

    def _refuse(self, status: int, body: bytes) -> None:
        """Answer `status` with the JSON error `body` and close the connection."""
        self._refused = True
        self._awaiting_headers = False
        self._cancel_header_timer()
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # An earlier pipelined request is still being answered: an answer written now
            # would land inside its response, so the connection is only closed.
            self.transport.close()
            return
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that has been refused."""


def run_server(
    *,
    host: str,
    port: int,
    workers: int = 1,
    graceful_timeout: int = 20,
    header_timeout_seconds: float = HEADER_TIMEOUT_SECONDS,
) -> None:
    """Serve `app.main:app` as `intercom-sync serve` and the container do."""
    EdgeLimitedHttpProtocol.header_timeout_seconds = header_timeout_seconds
    uvicorn.run(
        "app.main:app",
        host=host,
        port=port,
        workers=workers,
        http=PROTOCOL,
        log_config=None,
        # RequestIdMiddleware writes the access line (with the request id); uvicorn's own
        # would be formatted for every request only to be dropped.
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=graceful_timeout,
    )
