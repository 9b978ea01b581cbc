"""`python -m tui`: start the terminal app (what `saescope` with no command runs).

    python -m tui [--model SPEC] [--engine CMD | --connect HOST:PORT [--token T]]

With neither `--engine` nor `--connect`, the app starts a local engine with this
Python. `--engine` takes a whole command line (split like a shell would), e.g.
`--engine "ssh gpu-box saescope engine serve --stdio"`.
"""

from __future__ import annotations

import argparse
import os
import sys

from tui.target import EngineTarget


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="saescope", description="saescope's terminal app.")
    parser.add_argument("--model", "-m", default="default",
                        help="Model spec the app asks the engine to load (default: the embedded model).")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--engine", metavar="CMD",
                       help="Command line that starts an engine speaking --stdio, "
                            "e.g. \"ssh HOST saescope engine serve --stdio\".")
    where.add_argument("--connect", metavar="HOST:PORT",
                       help="Attach to an engine started with `saescope engine serve --listen`.")
    parser.add_argument("--token", default=os.environ.get("SAESCOPE_TOKEN"),
                        help="Token for --connect (default: $SAESCOPE_TOKEN).")
    return parser.parse_args(argv)


def target_from_args(args: argparse.Namespace) -> EngineTarget:
    if args.connect:
        return EngineTarget.tcp(args.connect, args.token)
    if args.engine:
        return EngineTarget.command(args.engine)
    return EngineTarget.local()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        target = target_from_args(args)
    except ValueError as e:
        print(f"saescope: {e}", file=sys.stderr)
        sys.exit(2)
    from tui.app import SaescopeApp  # textual loads only once the arguments are good

    SaescopeApp(target, args.model).run()


if __name__ == "__main__":
    main()
