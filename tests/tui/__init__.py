"""Tests of the terminal app: client, pilot-driven app, snapshots, tmux end to end."""
