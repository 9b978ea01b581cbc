"""The panes' controllers: plain Python that owns each pane's engine requests and state, posts typed messages, and runs in tests without a screen."""
