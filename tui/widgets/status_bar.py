"""The one-line bar at the top: connection, model, device, running jobs, and the
last job that failed (until the next one starts; its message is in the log).

Notes
- When the line is too narrow, the app's name goes first, then the end is cut.
- It shows only facts that are stable once the app is idle (no clock, no pid, no
  timings), so snapshots of an idle app are deterministic.
"""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from tui.messages import JobView

_CONNECTION = {
    "connecting": ("◌ connecting", "$warning"),
    "connected": ("● connected", "$success"),
    "disconnected": ("○ disconnected", "$error"),
}


def jobs_text(jobs: tuple[JobView, ...]) -> str:
    """`no jobs`, `job: sleep 35%`, `2 jobs: sleep 35%, predict`."""
    if not jobs:
        return "no jobs"
    parts = [j.method + (f" {j.fraction:.0%}" if j.fraction is not None else "") for j in jobs]
    head = "job" if len(jobs) == 1 else f"{len(jobs)} jobs"
    return f"{head}: {', '.join(parts)}"


class StatusBar(Widget):
    DEFAULT_CSS = """
    StatusBar {
        dock: top;
        height: 1;
        background: $panel;
        color: $foreground;
    }
    """

    connection = reactive("connecting")
    how = reactive("")
    died = reactive(False)
    model = reactive("")  # what the model slot says: "loading default…", "mini-gelu-1l · cpu"
    model_ok = reactive(False)
    jobs: reactive[tuple[JobView, ...]] = reactive(())
    failed = reactive("")  # the method of the last job that failed, until another starts

    def render(self) -> Content:
        label, colour = _CONNECTION[self.connection]
        if self.died:
            label = "○ engine died"
        sep = (" │ ", "$text-muted")
        model_style = "" if self.model_ok and self.connection == "connected" else "$text-muted"
        facts = Content.assemble(
            (label, colour), (f" · {self.how}" if self.how else "", ""), sep,
            (self.model or "no model", model_style), sep,
            (jobs_text(self.jobs), "$warning" if self.jobs else "$text-muted"),
            (f" · ✗ {self.failed} failed" if self.failed and not self.jobs else "", "$error"),
        )
        brand = Content.assemble((" saescope", "bold $accent"), sep)
        if brand.cell_length + facts.cell_length > self.size.width:
            return Content(" ") + facts  # the facts matter more than the name
        return brand + facts
