"""``python -m app.simulator``: serve a generated workspace in the foreground."""

from __future__ import annotations

import argparse
import socket
import sys

import uvicorn

from app.simulator.server import create_simulator_app
from app.simulator.workspace import generate_workspace


def main(argv: list[str] | None = None) -> None:
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
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    sys.stdout.write(f"http://{args.host}:{port}\n")
    sys.stdout.flush()
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
