"""Reference routes: the least a Starlette app on uvicorn can do for the same request, measured
in the same run on the same core, so that the service's figures can be read as ratios that
survive a noisy shared machine.

- `GET /api/v1/snapshot`: the service's pre-serialized gzip bytes, or 304 on a matching
  `If-None-Match` (no store, no auth, no middleware).
- `POST /webhooks/intercom`: reads the body, checks the HMAC and answers 200 (no parsing, no
  storing).

Run as `python -m bench.reference --port P --cpu N [--body-file F --etag E] [--secret S]`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.intercom.signature import SIGNATURE_HEADER, signature_is_valid
from bench.loadgen import pin_to_cpu


def build_app(*, body: bytes, etag: str, secret: str) -> Starlette:
    headers = {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}

    async def snapshot(request: Request) -> Response:
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(
            body,
            media_type="application/json",
            headers={**headers, "Content-Encoding": "gzip"},
        )

    async def webhook(request: Request) -> Response:
        raw = await request.body()
        if not signature_is_valid(raw, request.headers.get(SIGNATURE_HEADER), secret):
            return Response(b'{"error":"invalid_signature"}', status_code=401)
        return Response(b'{"status":"accepted"}', media_type="application/json")

    async def healthz(_request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/api/v1/snapshot", snapshot, methods=["GET"]),
            Route("/webhooks/intercom", webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--body-file", type=Path, default=None)
    parser.add_argument("--etag", default='"v0"')
    parser.add_argument("--secret", default="")
    args = parser.parse_args()
    pin_to_cpu(args.cpu)
    body = args.body_file.read_bytes() if args.body_file else b"{}"
    app = build_app(body=body, etag=args.etag, secret=args.secret)
    # The same server settings `intercom-sync serve` uses (uvloop and httptools when present).
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
