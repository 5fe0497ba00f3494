"""``python -m agentspan_server``: run the Agentspan server (same options as ``agentspan server start``)."""

from __future__ import annotations

import argparse
import sys

from agentspan.errors import AgentspanError
from agentspan_server.main import serve


def main(argv: list[str] | None = None) -> int:
    """Parses the command line and serves until interrupted; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m agentspan_server", description="Run the Agentspan server.")
    parser.add_argument("--db", default=None, help="sqlite:///PATH, a path, or postgresql://... (default: embedded)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=6767, help="TCP port (default: 6767)")
    parser.add_argument(
        "--api-key", action="append", default=[], metavar="KEY[:ROLE]", help="accepted key (repeatable)"
    )
    parser.add_argument("--keys-file", default=None, help="file of 'KEY ROLE' lines")
    parser.add_argument("--max-body-bytes", type=int, default=1_048_576, help="largest request body (bytes)")
    args = parser.parse_args(argv)
    try:
        serve(args.db, args.host, args.port, args.api_key, args.keys_file, args.max_body_bytes)
    except AgentspanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
