"""``python -m app.simulator``: serve a generated workspace in the foreground.

Ctrl-C stops it quietly with exit code 0 (it is how the simulator is stopped); a port already
in use is one line and exit code 1."""

from __future__ import annotations

import argparse
import contextlib
import errno
import socket
import sys

import uvicorn

from app.simulator.server import create_simulator_app
from app.simulator.workspace import generate_workspace


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the simulator until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m app.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port")
    parser.add_argument("--admins", type=int, default=40)
    parser.add_argument("--teams", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--token", default="sim-token", help="accepted bearer token")
    parser.add_argument("--secret", default="sim-secret", help="webhook signing client secret")
    args = parser.parse_args(argv)

    workspace = generate_workspace(args.admins, args.teams, seed=args.seed)
    app = create_simulator_app(workspace, access_token=args.token, client_secret=args.secret)
    # Bind first so the printed URL is right even for --port 0.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            reason = "is in use; pick another with --port (0 picks a free one)"
        else:
            reason = f"cannot be listened on: {exc.strerror or exc}"
        sys.stderr.write(f"{parser.prog}: port {args.port} on {args.host} {reason}\n")
        return 1
    port = sock.getsockname()[1]
    sys.stdout.write(f"http://{args.host}:{port}\n")
    sys.stdout.flush()
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    # uvicorn stops gracefully on Ctrl-C, then re-raises the interrupt it had held back.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # Ctrl-C while the workspace was still being generated
        raise SystemExit(0) from None
