"""The app's screens (modal or full), one per module."""
