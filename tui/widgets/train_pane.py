"""The Training pane: start SAE training runs from a form, watch them train, compare them.

The runs table is always on top; under it the message line, then one view at a
time: the metric curves (loss, explained variance, L0, quiet fraction: not fired
in the last window of training tokens; one line per run, in its colour), feature
emergence (the fraction of features formed against tokens, one line per run, over
a random dictionary's dotted baseline), the firing density of the selected run
(its latest histogram, and beside it the histograms over training), the comparison
of final metrics and emergence figures, or the form that starts a run. `s` stops
the selected run's job (checkpointed) or resumes a stopped one exactly; `o`
reopens a run folder, or a folder of runs trained side by side as one comparison;
`p` opens the feature map of the selected finished run.

This widget lays out and draws; what the runs are and every engine request are
the controller's (`tui.controllers.training.TrainingController`), which posts
`TrainNote` and `RunsToShow` back here.

Notes
- Metric events only update the controller's `RunBook`; a timer redraws the table
  and the visible view at most `REDRAW_HZ` times a second, and only when the
  book's version moved. Keys are never queued behind a redraw storm.
- The message line wraps (up to a few lines), so an error is never cut off at
  the pane's width; errors go to the log (ctrl+l) as well.
- The emergence and compare views tell the controller they are on screen: it asks
  the engine for emergence only then (a snapshot every few steps, per run, would
  otherwise keep the engine matching decoders nobody looks at).
- Density over time is drawn from the step records' histograms the pane already
  has (every 10 steps, live, and for runs without snapshots too), not from
  `train.emergence`'s thinned copy of the same records.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import ContentSwitcher, Static

from tui.controllers.training import RunsToShow, TrainingController, TrainNote
from tui.link import EngineLink
from tui.plots import Series, curves, density, density_time, formed
from tui.screens.feature_map import open_feature_map
from tui.screens.open_run import OpenRunScreen
from tui.training import Run, RunBook, emergence_series
from tui.widgets.compare_table import CompareTable
from tui.widgets.plot_view import PlotView
from tui.widgets.runs_table import RunsTable
from tui.widgets.train_form import TrainForm
from tui.widgets.view_bar import ViewBar

REDRAW_HZ = 4
VIEWS = [("curves", "c", "Curves"), ("emergence", "e", "Emergence"), ("firing", "f", "Firing"),
         ("compare", "m", "Compare"), ("form", "n", "New run")]
EMERGENCE_VIEWS = ("emergence", "compare")  # the views that show `train.emergence` answers
# (plot id, step-record field, title, log y, floor)
CURVES = (("plot-loss", "loss", "loss", True, None),
          ("plot-ev", "explained_variance", "explained variance", False, None),
          ("plot-l0", "l0", "L0", True, None),
          ("plot-dead", "dead_fraction_window", "quiet fraction", False, 0.0))


class TrainPane(Vertical):
    BINDINGS = [
        Binding("n", "show_view('form')", "New", id="train.new", tooltip="The form that starts a run"),
        Binding("s", "stop_resume", "Stop", id="train.stop_resume",
                tooltip="Stop the selected run's job (checkpointed), or resume a stopped run"),
        Binding("o", "open_run", "Open", id="train.open",
                tooltip="Reopen a run folder, or a folder of side-by-side runs as one comparison"),
        Binding("v", "next_view", "View", show=False, id="train.next_view",
                tooltip="Next view: curves, emergence, firing, compare"),
        Binding("c", "show_view('curves')", "Curves", show=False, id="train.curves",
                tooltip="Loss, explained variance, L0 and quiet fraction (not fired lately; dead is measured at the end) of every shown run"),
        Binding("e", "show_view('emergence')", "Emergence", show=False, id="train.emergence",
                tooltip="Fraction of features formed over training (decoder snapshots matched to the final decoder) of every shown run"),
        Binding("f", "show_view('firing')", "Firing", show=False, id="train.firing",
                tooltip="Feature firing-density histogram of the selected run, and its histograms over training"),
        Binding("m", "show_view('compare')", "Compare", show=False, id="train.compare",
                tooltip="The shown runs side by side with their final evaluation and emergence"),
        Binding("p", "feature_map", "Map", show=False, id="train.map",
                tooltip="Feature map of the selected finished run: its decoder directions in 2-D, clustered"),
        Binding("escape", "leave_form", "Back", show=False, id="train.back", tooltip="Leave the form"),
    ]
    DEFAULT_CSS = """
    TrainPane { height: 1fr; }
    TrainPane #train-info { height: auto; max-height: 5; padding: 0 1; color: $text-muted; }
    TrainPane #train-info.-error { color: $text-error; }
    TrainPane #train-views { height: 1fr; }
    TrainPane #curves { grid-size: 2 2; grid-gutter: 0 1; }
    TrainPane PlotView { padding: 0; }
    TrainPane #emergence-note { height: auto; max-height: 2; color: $text-muted; }
    TrainPane #firing-time { margin-left: 1; }
    """

    def __init__(self, link: EngineLink, **kwargs) -> None:
        super().__init__(**kwargs)
        self.link = link
        self.controller = TrainingController(link, self.post_message)
        self.view = "curves"
        self._drawn = -1
        self._drawn_view = ""
        self._drawn_selected: str | None = None

    def compose(self) -> ComposeResult:
        yield ViewBar(VIEWS, id="train-bar")
        yield RunsTable(id="runs")
        yield Static(self.info, id="train-info")
        with ContentSwitcher(initial="curves", id="train-views"):
            with Grid(id="curves"):
                for plot_id, *_ in CURVES:
                    yield PlotView(id=plot_id)
            with Vertical(id="emergence"):
                yield PlotView(id="emergence-plot")
                yield Static("", id="emergence-note")
            with Horizontal(id="firing"):
                yield PlotView(id="firing-hist")
                yield PlotView(id="firing-time")
            yield CompareTable(id="compare")
            yield TrainForm(self.link.model_spec, id="form")

    def on_mount(self) -> None:
        self.set_interval(1 / REDRAW_HZ, self.flush)

    def on_unmount(self) -> None:
        self.controller.close()

    # ---- what the app and the tests use -------------------------------------------
    @property
    def book(self) -> RunBook:
        return self.controller.book

    @property
    def info(self) -> str:
        """The message line's text."""
        return self.controller.note[0]

    def reconnected(self) -> None:
        """The engine is (again) reachable: find the runs it trains or trained."""
        self.controller.reconnected()

    async def stop_all(self) -> int:
        """Stop every job still training (checkpointed); returns how many were asked."""
        return await self.controller.stop_all()

    def open_run(self, path: str) -> None:
        self.controller.open(path)

    def command(self, what: str) -> None:
        """A palette command: new, stop, resume, open, map, or a view (compare, curves, ...)."""
        # Focus moves into the pane first: a dialog closing gives focus back to
        # where it was, and focus in another tab would switch back to that tab.
        self.runs_table.focus()
        if what == "new":
            self.action_show_view("form")
        elif what == "stop":
            self.controller.stop(self.runs_table.selected)
        elif what == "resume":
            self.controller.resume(self.runs_table.selected, self.form.ranks())
        elif what == "open":
            self.call_after_refresh(self.action_open_run)
        elif what == "map":
            self.action_feature_map()
        else:
            self.action_show_view(what)

    # ---- views --------------------------------------------------------------------
    @property
    def runs_table(self) -> RunsTable:
        return self.query_one(RunsTable)

    @property
    def form(self) -> TrainForm:
        return self.query_one(TrainForm)

    @property
    def selected(self) -> Run | None:
        out = self.runs_table.selected
        return self.book.get(out) if out else None

    def action_show_view(self, view: str) -> None:
        self.view = view
        self.query_one(ViewBar).current = view
        self.query_one(ContentSwitcher).current = view
        self.controller.want_emergence(view in EMERGENCE_VIEWS)
        if view == "form":
            if self.link.model is not None and self.link.model.hooks:
                self.form.set_hooks(self.link.model.hooks)
            self.form.focus_first()
        elif self.form.has_focus_within or self.app.focused is None:
            self.runs_table.focus()
        self.flush(force=True)

    def action_next_view(self) -> None:
        order = [v for v, _, _ in VIEWS if v != "form"]
        self.action_show_view(order[(order.index(self.view) + 1) % len(order)] if self.view in order else "curves")

    def action_leave_form(self) -> None:
        if self.view == "form":
            self.action_show_view("curves")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "leave_form":
            return self.view == "form"
        return True

    def on_train_note(self, message: TrainNote) -> None:
        line = self.query_one("#train-info", Static)
        line.update(Text(message.text))
        line.set_class(message.error, "-error")

    def on_runs_to_show(self, message: RunsToShow) -> None:
        if message.view:
            self.action_show_view(message.view)
        self.show_runs(message.outs)

    def show_runs(self, outs: list[str]) -> None:
        """Redraw now and put the cursor on the first of `outs`."""
        self.flush(force=True)
        if outs:
            self.runs_table.select(outs[0])

    # ---- redrawing ----------------------------------------------------------------
    def flush(self, force: bool = False) -> None:
        """Redraw what changed since the last call (the timer calls this)."""
        selected = self.runs_table.selected
        if not force and self._drawn == self.book.version and self._drawn_view == self.view \
                and self._drawn_selected == selected:
            return
        self._drawn, self._drawn_view, self._drawn_selected = self.book.version, self.view, selected
        self.runs_table.show(self.book.ordered())
        if self.view == "curves":
            self._draw_curves()
        elif self.view == "emergence":
            self._draw_emergence()
        elif self.view == "firing":
            self._draw_firing()
        elif self.view == "compare":
            self.query_one(CompareTable).show([r for r in self.book.ordered() if r.shown])

    def _draw_curves(self) -> None:
        shown = [r for r in self.book.ordered() if r.shown]
        for plot_id, key, title, log_y, floor in CURVES:
            series = [Series(*r.series(key), r.colour) for r in shown]
            label = title + (" (log)" if log_y else "")
            self.query_one(f"#{plot_id}", PlotView).set_draw(
                lambda w, h, s=series, t=label, lg=log_y, fl=floor: curves(s, w, h, t, lg, fl))

    def _draw_emergence(self) -> None:
        shown = [r for r in self.book.ordered() if r.shown]
        have = [r for r in shown if r.emergence is not None]
        series = [Series(*emergence_series(r.emergence), r.colour) for r in have]
        baselines = [(r.emergence.baseline_matched, r.colour) for r in have]
        title = "features formed"
        if have:
            title += f" (cos ≥ {have[0].emergence.threshold:g} to the final decoder) · dotted: random"
        self.query_one("#emergence-plot", PlotView).set_draw(
            lambda w, h: formed(series, baselines, w, h, title))
        note = self._emergence_note(shown)
        line = self.query_one("#emergence-note", Static)
        line.update(Text(note))
        line.display = bool(note)

    def _emergence_note(self, shown: list[Run]) -> str:
        """One line: what is missing, per run (errors, no snapshots, being matched), and
        which runs are matched to their latest snapshot (still training)."""
        notes = []
        for run in shown:
            if run.emergence_error:
                notes.append(f"{run.name}: {run.emergence_error}")
            elif run.out in self.controller.emerging and run.emergence is None:
                notes.append(f"{run.name}: matching its decoder snapshots…")
            elif run.snapshot_step is None and not run.active:
                notes.append(f"{run.name}: no decoder snapshots (trained with snapshot every -1, or before them)")
            elif run.snapshot_step is None:
                notes.append(f"{run.name}: no snapshot yet")
        training = [r.name for r in shown if r.emergence is not None and r.emergence.reference == "latest"]
        if training:
            notes.append(f"{', '.join(training)}: to the latest snapshot until finished")
        return " · ".join(notes) if shown else "no run shown: space shows one"

    def _draw_firing(self) -> None:
        run = self.selected
        if run is None:
            title, hist, colour, points = "firing density: no run selected", None, 39, []
        else:
            hist, colour = run.histogram, run.colour
            never = f" · {hist.never_fired} never fired" if hist else ""
            step = f" · step {run.last.step + 1}" if run.last else ""
            title = f"{run.name}{step}{never}"
            points = [(r.tokens or 0, r.density_histogram) for r in run.histograms]
        self.query_one("#firing-hist", PlotView).set_draw(lambda w, h: density(hist, w, h, title, colour))
        self.query_one("#firing-time", PlotView).set_draw(
            lambda w, h: density_time(points, w, h, "log10 density over training"))

    # ---- the user's asks, handed to the controller ----------------------------------
    def on_runs_table_toggle_shown(self, message: RunsTable.ToggleShown) -> None:
        self.controller.toggle_shown(message.out)
        self.flush()

    def on_train_form_submitted(self, message: TrainForm.Submitted) -> None:
        message.stop()
        job = self.controller.submit(message.values, message.archs, message.out)
        if job is not None:
            self.action_show_view("curves")
            self.show_runs([r.out for r in job.runs])

    def action_stop_resume(self) -> None:
        self.controller.toggle(self.runs_table.selected, self.form.ranks())

    def action_open_run(self) -> None:
        self.app.push_screen(OpenRunScreen(self.controller.last_folder), self._open_chosen)

    def action_feature_map(self) -> None:
        run = self.selected
        if run is None:
            self.notify("no run selected: n starts one, o reopens one", severity="warning", timeout=4)
        elif run.state != "finished":
            self.notify(f"the feature map needs a finished run; {run.name} is {run.state}",
                        severity="warning", timeout=4)
        else:
            open_feature_map(self.app, run.out)

    def _open_chosen(self, path: str | None) -> None:
        if path:
            self.controller.open(path)
