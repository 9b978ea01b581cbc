"""The saescope app: the frame (status bar, panes, log, footer) and app-wide actions.

Panes live in a TabbedContent, one file each under `tui/widgets/`; the Predict
pane is the first. All engine traffic goes through `EngineLink`, whose messages
are handled here and handed to the widgets that show them.

Notes
- Keys that must work while typing in the prompt are ctrl keys or F-keys (F1 help,
  F2-F7 the panes); the letter keys (`?`, `l`, `r`) do the same where no text
  field has focus. Digits are the Inspector's (neighbours), so panes have F-keys.
- The log toggle never moves focus: the user keeps their place (Tab reaches the
  log when it is shown).
- `ctrl+q` while training runs asks whether to leave it running (it is its own
  process on the engine's side and goes on), stop it (checkpointed), or stay.
- Starting and restarting the engine never runs twice at once: cancelling a start
  halfway could orphan an engine process. Restarting an engine that still runs
  takes a second press (the palette's command counts as confirmed).
"""

from __future__ import annotations

import time

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, TabbedContent, TabPane
from textual.worker import Worker

from tui.client import EngineError
from tui.commands import COMMANDS, SaescopeCommands
from tui.link import EngineLink
from tui.messages import ConnectionChanged, JobFailed, JobsChanged, JobView, LogLine, ModelChanged
from tui.screens.help import HelpScreen, HelpSections
from tui.target import EngineTarget
from tui.widgets.engine_banner import EngineBanner
from tui.widgets.log_view import LogView
from tui.widgets.predict_pane import PredictPane
from tui.widgets.prompt_input import PromptInput
from tui.widgets.status_bar import StatusBar
from tui.widgets.top_tokens import TopTokensTable
from tui.navigation import OpenFeature
from tui.sae_session import SaeSession
from tui.widgets.ablation_pane import AblationPane
from tui.widgets.ablation_tree import AblationTree
from tui.widgets.circuit_pane import CircuitPane
from tui.widgets.circuit_tree import CircuitTree
from tui.widgets.graph_pane import GraphPane
from tui.widgets.graph_tree import NeighbourTree
from tui.widgets.inspector_pane import InspectorPane
from tui.widgets.runs_table import RunsTable
from tui.widgets.train_pane import TrainPane
from tui.screens.quit_training import QuitTrainingScreen

RESTART_CONFIRM_S = 3.0
# (pane id, title, key): the tabs, their keys, the palette's "Show pane" entries
PANES = [("predict", "Predict", "f2"), ("inspector", "Inspector", "f3"), ("ablation", "Ablation", "f4"),
         ("train", "Training", "f5"), ("circuit", "Circuit", "f6"), ("graph", "Graph", "f7")]


class SaescopeApp(App[None]):
    TITLE = "saescope"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {SaescopeCommands}
    BINDINGS = [
        Binding("question_mark,f1", "help", "Help", id="app.help", key_display="F1",
                tooltip="This help (F1 also works while typing)"),
        Binding("l,ctrl+l", "toggle_log", "Log", id="app.toggle_log",
                tooltip="Show or hide the log (engine stderr)"),
        Binding("ctrl+r,r", "restart_engine", "Restart", id="app.restart_engine", show=False,
                tooltip="Restart the engine (twice while it runs)"),
        Binding("ctrl+g", "cancel_jobs", "Cancel", id="app.cancel_jobs",
                tooltip="Cancel the running engine jobs"),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", show=False, tooltip="Quit saescope"),
        # one footer entry for them all ("F2…F7 Panes"); the help lists each
        *(Binding(key, f"show_pane('{pane}')", "Panes" if i == 0 else title, id=f"app.pane.{pane}",
                  show=i == 0, key_display=f"F2…{PANES[-1][2].upper()}" if i == 0 else key.upper(), tooltip=f"Show the {title} pane")
          for i, (pane, title, key) in enumerate(PANES)),
    ]

    def __init__(self, target: EngineTarget, model_spec: str = "default") -> None:
        super().__init__()
        self.link = EngineLink(target, model_spec, self.post_message)
        self.jobs: tuple[JobView, ...] = ()
        self._engine_worker: Worker | None = None
        self._restart_asked = 0.0
        self._focus_before_log = None

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield EngineBanner()
        saes = SaeSession(self.link)
        panes = {"predict": lambda: PredictPane(self.link), "inspector": lambda: InspectorPane(self.link, saes),
                 "ablation": lambda: AblationPane(self.link, saes), "train": lambda: TrainPane(self.link),
                 "circuit": lambda: CircuitPane(self.link, saes), "graph": lambda: GraphPane(self.link)}
        with TabbedContent(id="panes"):
            for pane, title, _ in PANES:
                with TabPane(title, id=pane):
                    yield panes[pane]()
        yield LogView(id="log")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(StatusBar).how = self.link.how
        self.query_one(PromptInput).focus()
        self._engine_worker = self.run_worker(self.link.connect(), group="engine")

    async def on_unmount(self) -> None:
        await self.link.close()

    # ---- engine news ----------------------------------------------------------------
    def on_connection_changed(self, m: ConnectionChanged) -> None:
        bar = self.query_one(StatusBar)
        bar.connection, bar.how, bar.died = m.state, m.how, m.died
        banner = self.query_one(EngineBanner)
        if m.state == "disconnected" and m.reason:
            banner.show_down(m.reason, m.died, remote=self.link.target.how == "tcp")
            self.notify(m.reason, title="The engine died" if m.died else "No engine",
                        severity="error", timeout=10)
        else:
            banner.hide()
        if m.state == "connected":
            self.query_one(TrainPane).reconnected()  # runs that kept training, and their curves

    def on_model_changed(self, m: ModelChanged) -> None:
        bar = self.query_one(StatusBar)
        bar.model_ok = m.state == "loaded"
        bar.model = {"loading": f"loading {m.spec}…", "loaded": f"{m.name} · {m.device}",
                     "failed": f"{m.spec}: not loaded", "none": ""}[m.state]
        if m.state == "failed" and self.link.connected:  # a death is reported on its own
            self.notify(m.detail, title=f"Model {m.spec} did not load", severity="error", timeout=10)

    def on_jobs_changed(self, m: JobsChanged) -> None:
        self.jobs = m.jobs
        if not self.screen_stack or not (bars := self.query(StatusBar)):
            return  # the app is closing: a background request may end after its screens went
        bars.first().jobs = m.jobs
        if m.jobs:
            bars.first().failed = ""  # a new job: the last failure is old news
        self.refresh_bindings()

    def on_job_failed(self, m: JobFailed) -> None:
        if bars := self.query(StatusBar):
            bars.first().failed = m.method

    def on_log_line(self, m: LogLine) -> None:
        if views := self.query(LogView):  # none while the app is closing: a late line is dropped
            views.first().add(m.source, m.text)

    # ---- actions ------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_jobs":
            return bool(self.jobs)  # in the footer only while something runs
        return True

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.help_sections()))

    def help_sections(self) -> HelpSections:
        palette = Binding(self.COMMAND_PALETTE_BINDING, "command_palette", "Command palette",
                          tooltip="Command palette: every pane and action by name")
        moving = [Binding("tab,shift+tab", "focus_next", "Next field", tooltip="Move between the fields of a pane"),
                  Binding("left,right", "tab", "Tabs", tooltip="On the pane tabs: the previous / next pane")]
        return [("Everywhere", [*self.BINDINGS, palette, *moving]),
                ("Predict: prompt", PromptInput.BINDINGS),
                ("Predict: tokens", [*TopTokensTable.BINDINGS, *PredictPane.BINDINGS]),
                ("Inspector", InspectorPane.BINDINGS),
                ("Ablation", [*AblationPane.BINDINGS, *AblationTree.BINDINGS]),
                ("Training", [*TrainPane.BINDINGS, *RunsTable.BINDINGS]),
                ("Circuit", [*CircuitPane.BINDINGS, *CircuitTree.BINDINGS]),
                ("Graph", [*GraphPane.BINDINGS, *NeighbourTree.BINDINGS]),
                ("Log (focused)", LogView.BINDINGS)]

    def palette_commands(self) -> list[tuple[str, str, str]]:
        """(name, action, help) for the palette: the app's commands, a "Show pane" entry
        per pane and each pane's own keys (run on that pane, which is shown first)."""
        out = list(COMMANDS)
        for pane, title, key in PANES:
            out.append((f"Show pane: {title}", f"show_pane('{pane}')", f"The {title} pane ({key.upper()})"))
        for pane, title, _ in PANES:
            widget = self.query_one(f"#{pane}", TabPane).children[0]
            for b in type(widget).BINDINGS:
                if b.id and b.description:
                    label = b.tooltip or b.description
                    keys = ", ".join(self.get_key_display(Binding(k, "")) for k in b.key.split(","))
                    out.append((f"{title}: {label}", f"pane_action('{pane}', {b.action!r})", f"key {keys}"))
        return out

    async def action_pane_action(self, pane: str, action: str) -> None:
        """A pane's own action from the palette: show the pane, then run it there."""
        self.action_show_pane(pane)
        await self.query_one(f"#{pane}", TabPane).children[0].run_action(action)

    def action_toggle_log(self) -> None:
        """Show or hide the log; focus stays where it was (it returns from the log to
        where it came from when the log is hidden)."""
        log = self.query_one(LogView)
        if log.toggle():
            self._focus_before_log = self.focused
            log.scroll_end(animate=False)
        elif self.focused is None or self.focused is log:
            before = self._focus_before_log
            if before is not None and before.is_attached and before.focusable:
                before.focus()
            else:
                self.action_show_pane(self.query_one("#panes", TabbedContent).active)

    def action_focus_prompt(self) -> None:
        self.query_one(PromptInput).focus()

    def action_predict(self) -> None:
        self.query_one(PredictPane).predict()

    def action_train(self, what: str) -> None:
        """Training palette commands: show the pane, then `TrainPane.command(what)`."""
        self.query_one("#panes", TabbedContent).active = "train"
        self.query_one(TrainPane).command(what)

    def on_open_feature(self, m: OpenFeature) -> None:
        self.action_goto_feature(m.feature, m.path)

    def action_goto_feature(self, feature: int, path: str | None = None) -> None:
        """Show a feature in the Inspector (palette, Ablation and Circuit panes)."""
        self.action_show_pane("inspector")
        self.query_one(InspectorPane).show_feature(feature, path)

    def action_search_features(self, kind: str) -> None:
        self.action_show_pane("inspector")
        self.query_one(InspectorPane).action_search(kind)

    def action_show_pane(self, pane: str) -> None:
        self.query_one("#panes", TabbedContent).active = pane
        self._focus_pane(pane)
        self.call_after_refresh(self._focus_pane, pane)  # again once shown, if focus did not take

    def _focus_pane(self, pane: str) -> None:
        """Focus into the shown pane: where it says (`focus_content`), else its first field."""
        widget = self.query_one(f"#{pane}", TabPane).children[0]
        if self.focused is not None and widget in self.focused.ancestors:
            return
        if hasattr(widget, "focus_content"):
            widget.focus_content()
        else:
            inside = [w for w in self.screen.focus_chain if widget in w.ancestors]
            if inside:
                inside[0].focus()

    def action_restart_engine(self, confirmed: bool = False) -> None:
        if self._engine_worker is not None and self._engine_worker.is_running:
            self.notify("The engine is already starting.")
            return
        # A stray `r` must not throw away a running engine (and its jobs): ask twice.
        now = time.monotonic()
        if self.link.connected and not confirmed and now - self._restart_asked > RESTART_CONFIRM_S:
            self._restart_asked = now
            self.notify("The engine is running: press again to restart it.", timeout=RESTART_CONFIRM_S)
            return
        self._restart_asked = 0.0
        self._engine_worker = self.run_worker(self.link.restart(), group="engine")

    async def action_quit(self) -> None:
        """Quit; while training runs, ask first whether to leave it running or stop it."""
        pane = self.query(TrainPane)
        jobs = pane.first().book.active_jobs() if pane else []
        if not jobs or not self.link.connected:
            self.exit()
            return
        if isinstance(self.screen, QuitTrainingScreen):
            return
        names = [r.name for job in jobs for r in job.runs if r.active]
        self.push_screen(QuitTrainingScreen(names), self._quit_chosen)

    def _quit_chosen(self, choice: str | None) -> None:
        if choice == "leave":
            self.run_worker(self._leave_and_quit(), group="quit")
        elif choice == "stop":
            self.notify("Stopping the training runs (checkpointed)…")
            self.run_worker(self._stop_and_quit(), group="quit")

    async def _leave_and_quit(self) -> None:
        # The connection closes first, so no request is cancelled on the way out (a
        # cancelled `train.start` would stop its run): the engine sees its input end,
        # which leaves training going.
        self.link.log("quitting; the training runs go on")
        await self.link.close()
        self.exit()

    async def _stop_and_quit(self) -> None:
        await self.query_one(TrainPane).stop_all()
        self.exit()

    def action_cancel_jobs(self) -> None:
        self.run_worker(self._cancel_jobs(), group="jobs")

    async def _cancel_jobs(self) -> None:
        # Training runs in its own process; the runs that are only followed (found at
        # connection) are stopped with `train.stop` (checkpointed).
        await self.query_one(TrainPane).stop_all()
        try:
            n = await self.link.cancel_jobs()
        except EngineError as e:
            self.notify(str(e), severity="error")
            return
        self.notify(f"Cancelling {n} job{'s' if n != 1 else ''}." if n else "No jobs are running.")
