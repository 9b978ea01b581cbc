"""The command palette (ctrl+p): the app's actions by name.

Each command names an app action, so the palette, the key bindings and the help
screen all run the same code.
"""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

# (name, action, help)
COMMANDS: list[tuple[str, str, str]] = [
    ("Predict", "predict", "Send the prompt and show the top next tokens"),
    ("Focus prompt", "focus_prompt", "Move the cursor to the prompt"),
    ("Toggle log", "toggle_log", "Show or hide engine stderr and app messages"),
    ("Restart engine", "restart_engine(True)", "Stop the engine (if it runs) and start a fresh one"),
    ("Start test job", "start_test_job", "Run the engine's sleep job with progress in the status bar"),
    ("Cancel jobs", "cancel_jobs", "Cancel the running engine jobs"),
    ("Start training", "train('new')", "Training: the form that starts SAE runs"),
    ("Cancel selected run", "train('pause')", "Training: pause the selected run's job (checkpointed)"),
    ("Resume selected run", "train('resume')", "Training: continue the selected run from its checkpoint"),
    ("Open run folder", "train('open')", "Training: reopen a run folder and replay its metrics"),
    ("Compare runs", "train('compare')", "Training: final metrics of every run side by side"),
    ("Help: keys", "help", "Show every key binding"),
]


class SaescopeCommands(Provider):
    async def discover(self) -> Hits:
        for name, action, help_text in COMMANDS:
            yield DiscoveryHit(name, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, action, help_text in COMMANDS:
            score = max(matcher.match(name), matcher.match(help_text) * 0.5)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self.app.run_action, action), help=help_text)
