"""The Training pane: start SAE training runs from a form, watch them train, compare them.

The runs table is always on top; under it one view at a time: the metric curves
(loss, explained variance, L0, quiet fraction: not fired in the last window of
training tokens; one line per run, in its colour),
the firing-density histogram of the selected run, the comparison of final
metrics, or the form that starts a run. Each start is one `train.start` job
(several architectures ticked: one job, trained side by side from one model
pass); several jobs run at once. `p` pauses a running job (the engine cancels it
and checkpoints) or resumes a paused one exactly; `o` reopens a run folder and
replays its metrics file.

Notes
- Metric events only update the `RunBook` (a few list appends); a timer redraws
  the table and the visible view at most `REDRAW_HZ` times a second, and only
  when the book's version moved. Keys are never queued behind a redraw storm.
- The engine numbers the runs of a job by position, so each job keeps its runs
  in the order they were sent.
- Pausing cancels the whole job (its runs share one model pass, and the engine
  checkpoints them at the same step), so resuming restarts them together.
- A job that fails before reporting anything (bad settings) leaves no rows
  behind, just its one-line error; later failures keep the runs, marked `error`.
- Training runs in its own process on the engine's side: quitting the app or
  losing the engine leaves it going. At every connection the pane asks the engine
  for its training jobs (`train.list`), follows the live ones (`train.follow`:
  their curves so far, then live) and reads back the ended ones. Pausing is
  `train.stop`; cancelling a follow only stops following.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.markup import escape
from textual.widgets import ContentSwitcher, Static

from tui.client import EngineError, JobCancelled
from tui.link import EngineLink
from tui.plots import Series, curves, density
from tui.screens.open_run import OpenRunScreen
from tui.training import MODEL, OUT, FormError, Job, Run, RunBook, parse_settings, plan
from tui.widgets.compare_table import CompareTable
from tui.widgets.plot_view import PlotView
from tui.widgets.runs_table import RunsTable
from tui.widgets.train_form import TrainForm
from tui.widgets.view_bar import ViewBar

REDRAW_HZ = 4
VIEWS = [("curves", "c", "Curves"), ("firing", "f", "Firing"), ("compare", "m", "Compare"),
         ("form", "n", "New run")]
# (plot id, step-record field, title, log y, floor)
CURVES = (("plot-loss", "loss", "loss", True, None),
          ("plot-ev", "explained_variance", "explained variance", False, None),
          ("plot-l0", "l0", "L0", True, None),
          ("plot-dead", "dead_fraction_window", "quiet fraction", False, 0.0))
IDLE_HINT = "n starts a run · o reopens a run folder"
MAX_LISTED = 20  # the engine's latest training jobs shown at connection


class TrainPane(Vertical):
    BINDINGS = [
        Binding("n", "show_view('form')", "New", id="train.new", tooltip="The form that starts a run"),
        Binding("p", "pause_resume", "Pause", id="train.pause_resume",
                tooltip="Pause the selected run's job (checkpointed), or resume it"),
        Binding("o", "open_run", "Open", id="train.open", tooltip="Reopen a run folder and replay its metrics"),
        Binding("v", "next_view", "View", show=False, id="train.next_view",
                tooltip="Next view: curves, firing, compare"),
        Binding("c", "show_view('curves')", "Curves", show=False, id="train.curves",
                tooltip="Loss, explained variance, L0 and quiet fraction (not fired lately; dead is measured at the end) of every shown run"),
        Binding("f", "show_view('firing')", "Firing", show=False, id="train.firing",
                tooltip="Feature firing-density histogram of the selected run"),
        Binding("m", "show_view('compare')", "Compare", show=False, id="train.compare",
                tooltip="Runs side by side with their final evaluation"),
        Binding("escape", "leave_form", "Back", show=False, id="train.back", tooltip="Leave the form"),
    ]
    DEFAULT_CSS = """
    TrainPane { height: 1fr; }
    TrainPane #train-info { height: 1; padding: 0 1; color: $text-muted; }
    TrainPane #train-info.-error { color: $text-error; }
    TrainPane #train-views { height: 1fr; }
    TrainPane #curves { grid-size: 2 2; grid-gutter: 0 1; }
    TrainPane PlotView { padding: 0; }
    """

    def __init__(self, link: EngineLink, **kwargs) -> None:
        super().__init__(**kwargs)
        self.link = link
        self.book = RunBook()
        self.view = "curves"
        self.info = IDLE_HINT
        self.last_folder = "runs/"
        self._drawn = -1
        self._drawn_view = ""
        self._drawn_selected: str | None = None

    def compose(self) -> ComposeResult:
        yield ViewBar(VIEWS, id="train-bar")
        yield RunsTable(id="runs")
        yield Static(IDLE_HINT, id="train-info")
        with ContentSwitcher(initial="curves", id="train-views"):
            with Grid(id="curves"):
                for plot_id, *_ in CURVES:
                    yield PlotView(id=plot_id)
            yield PlotView(id="firing")
            yield CompareTable(id="compare")
            yield TrainForm(self.link.model_spec, id="form")

    def on_mount(self) -> None:
        self.set_interval(1 / REDRAW_HZ, self.flush)

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

    def say(self, text: str, error: bool = False) -> None:
        """The pane's one-line message (errors in red)."""
        self.info = text
        line = self.query_one("#train-info", Static)
        line.update(escape(text))
        line.set_class(error, "-error")

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
        elif self.view == "firing":
            self._draw_firing()
        elif self.view == "compare":
            self.query_one(CompareTable).show(self.book.ordered())

    def _draw_curves(self) -> None:
        shown = [r for r in self.book.ordered() if r.shown]
        for plot_id, key, title, log_y, floor in CURVES:
            series = [Series(*r.series(key), r.colour) for r in shown]
            label = title + (" (log)" if log_y else "")
            self.query_one(f"#{plot_id}", PlotView).set_draw(
                lambda w, h, s=series, t=label, lg=log_y, fl=floor: curves(s, w, h, t, lg, fl))

    def _draw_firing(self) -> None:
        run = self.selected
        if run is None:
            title, hist, colour = "firing density: no run selected", None, 39
        else:
            hist, colour = run.histogram, run.colour
            never = f" · {hist.never_fired} never fired" if hist else ""
            step = f" · step {run.last.step + 1}" if run.last else ""
            title = f"{run.name}{step}{never}"
        self.query_one("#firing", PlotView).set_draw(lambda w, h: density(hist, w, h, title, colour))

    def on_runs_table_toggle_shown(self, message: RunsTable.ToggleShown) -> None:
        run = self.book.get(message.out)
        if run is not None:
            run.shown = not run.shown
            self.book.touch(run)
            self.flush()

    # ---- starting -----------------------------------------------------------------
    def on_train_form_submitted(self, message: TrainForm.Submitted) -> None:
        message.stop()
        try:
            settings = parse_settings(message.values)
            specs = plan(settings, message.archs, message.out, self._folder_taken)
        except FormError as e:
            self.say(str(e), error=True)
            return
        if self.start(specs):
            self.action_show_view("curves")

    def _folder_taken(self, folder: str) -> bool:
        # Local check only: a remote engine's folders cannot be seen from here, and then
        # the engine's "already holds a run" error says so.
        return folder in self.book.runs or Path(folder).exists()

    def start(self, specs: list[dict], resume: bool = False) -> Job | None:
        """Send one `train.start` for these runs (TrainConfig fields plus `out` each)."""
        busy = self.book.busy([s[OUT] for s in specs])
        if busy:
            self.say(f"{busy[0]} is already training", error=True)
            return None
        job = self.book.start(specs, resume)
        what = ", ".join(r.name for r in job.runs)
        self.say(f"{'resuming' if resume else 'starting'} {what}…")
        self.run_worker(self._train(job, specs), group="train", exit_on_error=False)
        self.flush()
        if self.runs_table.selected is None or not resume:
            self.runs_table.select(job.runs[0].out)
        return job

    def _events(self, job: Job, names: str):
        def on_event(event) -> None:
            if event.kind == "metrics":
                if self.book.metrics(job, event.data) and all(r.state == "running" for r in job.runs):
                    self.say(f"training {names}: p pauses, f shows firing density")
            elif event.kind == "log" and event.data.message:
                self.link.log(f"train: {event.data.message}")
        return on_event

    def _on_start(self, job: Job):
        def on_start(request_id: str) -> None:
            job.request_id = request_id
            if job.cancelling:  # paused while it waited for the model
                self.run_worker(self._cancel(job), group="train-cancel", exit_on_error=False)
        return on_start

    async def _train(self, job: Job, specs: list[dict]) -> None:
        names = ", ".join(r.name for r in job.runs)
        model = specs[0].get(MODEL)
        try:
            result = await self.link.run("train.start", {"runs": specs, "resume": job.resume},
                                         needs_model=model in (None, self.link.model_spec),
                                         on_event=self._events(job, names), on_start=self._on_start(job))
        except JobCancelled:
            await self._cancelled(job, names)
        except asyncio.CancelledError:
            self.book.stopped(job, "cancelled")
            raise
        except EngineError as e:
            if job.resume:
                self.book.stopped(job, "cancelled", str(e))
            elif any(r.steps for r in job.runs):
                self.book.stopped(job, "error", str(e))
            else:
                self.book.forget(job)
            self.say(str(e), error=True)
        else:
            job.engine_job = result.job
            self.book.finished(job, result.runs)
            self.say(f"finished {names}: m compares them")
        self.flush()

    async def _cancelled(self, job: Job, names: str) -> None:
        """The request that followed `job` ended `cancelled`: paused by `p` or ctrl+g (the
        engine stopped it, checkpointed), or only the following was cancelled (the app
        closing): then the run goes on in the engine, found again at the next connection."""
        if job.cancelling:
            self.book.stopped(job, "cancelled")
            self.say(f"paused {names} (checkpointed): p resumes")
        else:
            self.book.stopped(job, "cancelled", "no longer followed; it trains on in the engine")
            self.say(f"stopped following {names}; it trains on (r reconnects)")

    async def _follow(self, job: Job) -> None:
        """Follow a job the engine trains (found at connection): its metrics so far, then live."""
        names = ", ".join(r.name for r in job.runs)
        try:
            result = await self.link.run("train.follow", {"job": job.engine_job},
                                         on_event=self._events(job, names), on_start=self._on_start(job))
        except JobCancelled:
            await self._cancelled(job, names)
        except asyncio.CancelledError:
            raise
        except EngineError as e:
            self.book.stopped(job, "error", str(e))
            self.say(str(e), error=True)
        else:
            self.book.finished(job, result.runs)
            self.say(f"finished {names}: m compares them")
        self.flush()

    # ---- finding runs again ---------------------------------------------------------
    def reconnected(self) -> None:
        """The engine is (again) reachable: show the runs it trains or trained, follow the live ones."""
        self.run_worker(self._reattach(), group="train-attach", exclusive=True, exit_on_error=False)

    async def _reattach(self) -> None:
        client = self.link.client
        if client is None or not client.connected:
            return
        try:
            listing = await client.call("train.list")
        except EngineError as e:
            self.link.log(f"train.list: {e}")
            return
        followed = 0
        for info in listing.jobs[-MAX_LISTED:]:
            known = [self.book.get(self.book.key_of(r)) for r in info.runs]
            if info.state.state in ("starting", "running"):
                if any(run is not None and run.active for run in known):
                    continue  # followed already (a request of this connection)
                job = self.book.followed(info)
                followed += 1
                self.run_worker(self._follow(job), group="train", exit_on_error=False)
                continue
            for summary, run in zip(info.runs, known):
                if run is not None and (run.active or run.final is not None):
                    continue
                try:
                    read = await client.call("train.read", {"path": summary.path})
                except EngineError as e:
                    self.link.log(f"train.read {summary.path}: {e}")
                    continue
                self.book.opened(self.book.key_of(summary), read)
        self.flush()
        if followed:
            self.say(f"following {followed} training job{'s' if followed != 1 else ''} that kept running")

    # ---- pausing and resuming -----------------------------------------------------
    def action_pause_resume(self) -> None:
        run = self.selected
        if run is None:
            self.say("no run selected: n starts one, o reopens one", error=True)
        elif run.active:
            self.pause(run)
        elif run.resumable:
            self.resume(run)
        elif run.state == "finished":
            self.say(f"{run.name} has finished; n starts a new run", error=True)

    def pause(self, run: Run | None = None) -> None:
        run = run or self.selected
        if run is None or run.job is None or not run.active:
            self.say("the selected run is not training", error=True)
            return
        job = run.job
        if job.cancelling:
            return
        job.cancelling = True
        for r in job.runs:
            r.state = "cancelling"
            self.book.touch(r)
        self.say(f"pausing {', '.join(r.name for r in job.runs)}…")
        if job.request_id is not None:
            self.run_worker(self._cancel(job), group="train-cancel", exit_on_error=False)
        self.flush()

    async def _cancel(self, job: Job) -> None:
        await self._stop(job)

    async def _stop(self, job: Job, tries: int = 20) -> bool:
        """Ask the engine to stop the training process of `job` (checkpointed). Right
        after a start the process may not be registered yet: asked again a few times."""
        for attempt in range(tries):
            client = self.link.client
            if client is None or not client.connected:
                self.link.log("train.stop: the engine is not running")
                return False
            params = {"job": job.engine_job} if job.engine_job else {"out": job.runs[0].out}
            try:
                await client.call("train.stop", params)
                return True
            except EngineError as e:  # not started yet, or it has just finished
                if attempt == tries - 1 or not any(r.active for r in job.runs):
                    self.link.log(f"train.stop: {e}")
                    return False
            await asyncio.sleep(0.25)
        return False

    async def stop_all(self) -> int:
        """Stop every job still training (the quit dialog's "stop"); returns how many were asked."""
        jobs = self.book.active_jobs()
        for job in jobs:
            job.cancelling = True
        done = await asyncio.gather(*(self._stop(job, tries=8) for job in jobs))
        return sum(done)

    def resume(self, run: Run | None = None) -> None:
        run = run or self.selected
        if run is None or not run.resumable:
            self.say("the selected run has nothing to resume", error=True)
            return
        self.start(self.book.resume_specs(run), resume=True)

    # ---- reopening ----------------------------------------------------------------
    def action_open_run(self) -> None:
        self.app.push_screen(OpenRunScreen(self.last_folder), self._open_chosen)

    def _open_chosen(self, path: str | None) -> None:
        if path:
            self.open_run(path)

    def open_run(self, path: str) -> None:
        path = path.rstrip("/") or path
        self.last_folder = path
        run = self.book.get(path)
        if run is not None and run.active:
            self.say(f"{run.name} is training; it is already here", error=True)
            return
        self.say(f"reading {path}…")
        self.run_worker(self._open(path), group="train-open", exit_on_error=False)

    async def _open(self, path: str) -> None:
        try:
            result = await self.link.run("train.read", {"path": path})
        except EngineError as e:
            self.say(str(e), error=True)
            return
        run = self.book.opened(path, result)
        self.flush()
        self.runs_table.select(run.out)
        live = result.state is not None and result.state.state in ("starting", "running")
        done = ("finished" if run.final is not None else "still training (r reconnects to follow it)" if live
                else "not finished: p resumes it")
        self.say(f"opened {run.name}: {len(run.steps)} steps, {done}")
        self.flush()

    # ---- the palette --------------------------------------------------------------
    def command(self, what: str) -> None:
        """A palette command: new, pause, resume, open, compare, curves, firing."""
        # Focus moves into the pane first: a dialog closing gives focus back to
        # where it was, and focus in another tab would switch back to that tab.
        self.runs_table.focus()
        if what == "new":
            self.action_show_view("form")
        elif what == "pause":
            self.pause()
        elif what == "resume":
            self.resume()
        elif what == "open":
            self.call_after_refresh(self.action_open_run)
        else:
            self.action_show_view(what)
