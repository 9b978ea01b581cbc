"""`python -m engine ...` is the `saescope` command (the TUI spawns the engine this way)."""

from engine.cli import main

main()
