"""Recipes that build the embedded defaults under `weights/` (rerunnable by anyone)."""
