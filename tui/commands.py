"""The command palette (ctrl+p): the app's actions by name.

Each command names an app action, so the palette, the key bindings and the help
screen all run the same code. A number in the query offers "Go to feature N".

Notes
- Besides the commands below, the app lists each pane (`Show pane: …`) and every
  key of each pane (`Ablation: …`), built from the panes' own bindings
  (`SaescopeApp.palette_commands`), so the palette cannot drift from the keys.
"""

from __future__ import annotations

import re
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

# (name, action, help)
COMMANDS: list[tuple[str, str, str]] = [
    ("Predict", "predict", "Send the prompt and show the top next tokens"),
    ("Focus prompt", "focus_prompt", "Move the cursor to the prompt"),
    ("Toggle log", "toggle_log", "Show or hide engine stderr and app messages"),
    ("Restart engine", "restart_engine(True)", "Stop the engine (if it runs) and start a fresh one"),
    ("Cancel jobs", "cancel_jobs", "Cancel the running engine jobs"),
    ("Start training", "train('new')", "Training: the form that starts SAE runs"),
    ("Stop selected run", "train('stop')", "Training: stop the selected run's job (checkpointed; resume continues it)"),
    ("Resume selected run", "train('resume')", "Training: continue a stopped run from its checkpoint"),
    ("Open run folder", "train('open')", "Training: reopen a run folder, or a folder of side-by-side runs as one comparison"),
    ("Compare runs", "train('compare')", "Training: final metrics of the shown runs side by side"),
    ("Search: features that fire on a text", "search_features('text')", "Inspector: features firing on typed text"),
    ("Search: features that boost a token", "search_features('token')", "Inspector: logit effect on one token"),
    ("Search: densest features", "search_features('densest')", "Inspector: the features that fire most often"),
    ("Search: dead features", "search_features('dead')", "Inspector: features that never fire in the index"),
    ("Help: keys", "help", "Show every key binding"),
]


class SaescopeCommands(Provider):
    async def discover(self) -> Hits:
        for name, action, help_text in self.app.palette_commands():
            yield DiscoveryHit(name, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        if number := re.search(r"\d+", query):  # "12", "feature 12", "#12": go to it
            n = int(number.group())
            yield Hit(1.0, f"Go to feature {n}", partial(self.app.run_action, f"goto_feature({n})"),
                      help="Inspector: show this feature of the open SAE")
        for name, action, help_text in self.app.palette_commands():
            score = max(matcher.match(name), matcher.match(help_text) * 0.5)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self.app.run_action, action), help=help_text)
