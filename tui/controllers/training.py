"""The Training pane's controller: the runs it knows, and the engine requests that start,
follow, stop, resume and reopen them. Plain Python on asyncio (no widgets), so its
tests run without a screen (`tests/tui/test_training_controller.py`).

The pane hands it what the user asked for (`submit`, `toggle`, `stop`, `resume`,
`open`, `reconnected`, `stop_all`); it asks the engine through `EngineLink` and
posts two typed messages back: `TrainNote`, the pane's message line, and
`RunsToShow`, the runs to put the cursor on (and the view to show them in). The
runs themselves are in `book` (`tui.training.RunBook`), which the pane's redraw
timer reads: metric events (10 a second per run) never become a message each.

Words (the same as the engine's run files and `saescope train`)
- `stopped`: asked to stop (s, ctrl+g, the quit dialog's "stop"); the engine
  checkpoints the run and `s` resumes it exactly. `stopping`: asked, not yet
  stopped. Nothing is "paused" or "cancelled": only requests are cancelled.
- `unfollowed`: the run trains on in its own process, but this app lost the
  engine that followed it; the next connection follows it again.

Notes
- The engine numbers the runs of a job by position, so each job keeps its runs
  in the order they were sent.
- Stopping stops the whole job (its runs share one model pass, and the engine
  checkpoints them at the same step), so resuming restarts them together.
- A job that fails before reporting anything (bad settings, a folder that holds
  a run) leaves no rows behind, just its error; later failures keep the runs,
  marked `failed`. A new start never touches a run already in the book: a folder
  shown in the table is refused here, before the engine is asked.
- Training runs in its own process on the engine's side: quitting the app or
  losing the engine leaves it going. At every connection the controller asks the
  engine for its training jobs (`train.list`), follows the live ones
  (`train.follow`: their curves so far, then live) and reads back the ended ones.
  Stopping is `train.stop`; the request that follows the job then replies
  `cancelled`, whoever asked for the stop.
- Ranks (data-parallel processes on the engine's machine) belong to a job, not to
  its runs: a start sends the form's, and so does a resume (`s`), whatever the job
  ran on before. `ranks` is left out of `train.start` at one. The message line
  says "on N ranks" for a job of more than one (the table's columns are full at
  80 columns).
- Reopening asks `train.scan` first: a run folder is one run; a folder of runs
  trained side by side (`<out>/<arch>`) opens all of them as one comparison:
  only their curves drawn, the compare view shown.
- Requests run as asyncio tasks owned here; `close()` (the pane going away)
  cancels them.
- Feature emergence (`train.emergence`) is asked only while a view that shows it
  is on screen (`want_emergence`), for the shown runs whose snapshots moved since
  their last answer (`Run.emergence_due`): at most one request per run in flight,
  and one every `EMERGENCE_EVERY_S` (the engine matches every snapshot again each
  time); snapshots that arrive meanwhile are asked for when it answers. A request
  is cancelled (in the engine too) when its run is hidden, starts over, or no view
  shows emergence any more. A finished run reopened from its folder is asked once
  (the engine caches its answer, which also colours its feature map).
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Coroutine

from textual.message import Message

from tui.client import EngineError, EngineGone, JobCancelled
from tui.link import EngineLink
from tui.train_settings import (BATCH_FIELD, RANKS_FIELD, FormError, check_ranks, parse_ranks, parse_settings,
                                 plan)
from tui.training import MODEL, OUT, Job, Run, RunBook

IDLE_HINT = "n starts a run · o reopens a run folder"
MAX_LISTED = 20  # the engine's latest training jobs shown at connection
STOP_TRIES = 20  # right after a start the job may not be registered yet: `train.stop` is asked again
STOP_RETRY_S = 0.25
EMERGENCE_EVERY_S = 2.0  # at most one `train.emergence` a run this often: it rematches every snapshot


@dataclass
class TrainNote(Message):
    """The pane's message line: what happened, or an error (shown in full, wrapped)."""

    bubble: ClassVar[bool] = False
    text: str
    error: bool = False


@dataclass
class RunsToShow(Message):
    """Put the cursor on the first of these runs; `view` ("compare", ...): switch to it."""

    bubble: ClassVar[bool] = False
    outs: list[str]
    view: str = ""


def _names(runs: list[Run]) -> str:
    return ", ".join(r.name for r in runs)


def _job(job: Job) -> str:
    """The job's runs for the message line, with its ranks when more than one."""
    return _names(job.runs) + (f" on {job.ranks} ranks" if job.ranks > 1 else "")


def _how(run: Run) -> str:
    """How a reopened run stands, for the message line."""
    if run.state == "unfollowed":
        return "still training in the engine (r reconnects to follow it)"
    if run.state == "failed":
        return f"failed ({run.error})" if run.error else "failed"
    return "stopped: s resumes it" if run.state == "stopped" else run.state


class TrainingController:
    def __init__(self, link: EngineLink, post: Callable[[Message], object]) -> None:
        self.link, self._post = link, post
        self.book = RunBook()
        self.note = (IDLE_HINT, False)
        """The latest message line: (text, error)."""
        self.last_folder = "runs/"
        """The folder the open dialog starts with: the last one opened."""
        self._tasks: set[asyncio.Task] = set()
        self._attach: asyncio.Task | None = None
        self.emergence_wanted = False
        """A view that shows feature emergence is on screen."""
        self.emerging: dict[str, tuple[Run, int, asyncio.Task]] = {}
        """The `train.emergence` requests in flight: run folder -> (run, its generation, task)."""
        self.emergence_every = EMERGENCE_EVERY_S

    def say(self, text: str, error: bool = False) -> None:
        """Set the pane's message line (errors go to the log as well, where nothing is cut)."""
        self.note = (text, error)
        if error:
            self.link.log(f"training: {text}")
        self._post(TrainNote(text, error))

    # ---- tasks --------------------------------------------------------------------
    def _spawn(self, work: Coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            self.link.log(f"training: {type(e).__name__}: {e}")  # a bug: logged, the app goes on

    def close(self) -> None:
        """Cancel every request in flight (the pane is going away)."""
        for task in list(self._tasks):
            task.cancel()

    # ---- starting -----------------------------------------------------------------
    def submit(self, values: dict[str, str], archs: list[str], out: str) -> Job | None:
        """The form's text: check it, name the folders, start; None (with an error note) when refused."""
        values = dict(values)
        ranks_text = values.pop(RANKS_FIELD, "")
        try:
            settings = parse_settings(values)
            ranks = parse_ranks(ranks_text)
            check_ranks(settings, ranks)
            specs = plan(settings, archs, out, self._folder_taken)
        except FormError as e:
            self.say(str(e), error=True)
            return None
        return self.start(specs, ranks=ranks)

    def _folder_taken(self, folder: str) -> bool:
        # Local check only: a remote engine's folders cannot be seen from here, and then
        # the engine's "already holds a run" error says so.
        return folder in self.book.runs or Path(folder).exists()

    def start(self, specs: list[dict], resume: bool = False, ranks: int = 1) -> Job | None:
        """Send one `train.start` for these runs (`TrainSettings` fields plus `out` each),
        trained on `ranks` data-parallel processes."""
        outs = [s[OUT] for s in specs]
        if busy := self.book.busy(outs):
            self.say(f"{busy[0]} is already training", error=True)
            return None
        held = [self.book.runs[o] for o in outs if o in self.book.runs]
        if held and not resume:
            run = held[0]
            then = "s resumes it, or choose another out folder" if run.resumable else "choose another out folder"
            self.say(f"{run.out} already holds a run (in the table, {run.state}): {then}", error=True)
            return None
        job = self.book.start(specs, resume, ranks)
        self.sync_emergence()  # a run started over in a known folder: its old request is stale
        self.say(f"{'resuming' if resume else 'starting'} {_job(job)}…")
        model = specs[0].get(MODEL)
        params: dict = {"runs": specs, "resume": resume}
        if ranks != 1:  # left out at one: an engine from before `ranks` takes it as it was
            params[RANKS_FIELD] = ranks
        self._spawn(self._run_job(job, "train.start", params,
                                  needs_model=model in (None, self.link.model_spec)))
        return job

    def _on_event(self, job: Job) -> Callable:
        def on_event(event) -> None:
            if event.kind == "metrics":
                if self.book.metrics(job, event.data) and all(r.state == "running" for r in job.runs):
                    self.say(f"training {_job(job)}: s stops · e emergence · f firing density")
                if event.data.record.kind == "snapshot":
                    self.sync_emergence()
            elif event.kind == "log" and event.data.message:
                self.link.log(f"train: {event.data.message}")
        return on_event

    def _on_start(self, job: Job) -> Callable[[str], None]:
        def on_start(request_id: str) -> None:
            job.request_id = request_id
            if job.stopping:  # asked to stop while it waited for the model
                self._spawn(self._stop(job))
        return on_start

    async def _run_job(self, job: Job, method: str, params: dict, needs_model: bool = False) -> None:
        """Run the request that trains (`train.start`) or follows (`train.follow`) `job`
        to its end, and record how it ended."""
        who = _job(job)
        try:
            result = await self.link.run(method, params, needs_model=needs_model,
                                         on_event=self._on_event(job), on_start=self._on_start(job))
        except JobCancelled:  # the run stopped (asked here, or by another client), checkpointed
            self.book.ended(job, "stopped")
            self.say(f"stopped {who} (checkpointed): s resumes")
        except asyncio.CancelledError:  # the pane went away: the run trains on
            self.book.ended(job, "unfollowed", "no longer followed; it trains on in the engine")
            raise
        except EngineGone as e:
            if job.request_id is None:  # never sent
                self._failed(job, method, e)
            else:  # its own process trains on; the next connection follows it
                self.book.ended(job, "unfollowed", str(e))
                self.say(f"lost the engine while following {who}; it trains on, and the next "
                         "connection follows it (r restarts the engine)", error=True)
        except EngineError as e:
            self._failed(job, method, e)
        else:
            job.engine_job = result.job
            self.book.finished(job, result.runs)
            self.say(f"finished {who}: m compares them · p maps the selected one's features")
            self.sync_emergence()  # now measured against the final decoder

    def _failed(self, job: Job, method: str, e: EngineError) -> None:
        if method == "train.start" and job.resume:
            self.book.ended(job, "stopped", str(e))  # as it was: still resumable
        elif method == "train.follow" or any(r.steps for r in job.runs):
            self.book.ended(job, "failed", str(e))
        else:
            self.book.forget(job)
            self.sync_emergence()
        self.say(str(e), error=True)

    # ---- stopping and resuming ----------------------------------------------------
    def toggle(self, out: str | None, ranks: str = "") -> None:
        """The `s` key: stop the run's job when it trains, resume it (on `ranks`, the
        form's text) when it is stopped."""
        run = self.book.get(out) if out else None
        if run is None:
            self.say("no run selected: n starts one, o reopens one", error=True)
        elif run.active:
            self.stop(out)
        elif run.resumable:
            self.resume(out, ranks)
        elif run.state == "finished":
            self.say(f"{run.name} has finished; n starts a new run", error=True)
        elif run.state == "unfollowed":
            self.say(f"{run.name} trains on in the engine, not followed here: r reconnects to follow it",
                     error=True)

    def stop(self, out: str | None) -> None:
        """Stop the job of the run in `out` at its next step, checkpointed."""
        run = self.book.get(out) if out else None
        if run is None or run.job is None or not run.active:
            self.say("the selected run is not training", error=True)
            return
        job = run.job
        if job.stopping:
            return
        job.stopping = True
        for r in job.runs:
            r.state = "stopping"
            self.book.touch(r)
        self.say(f"stopping {_job(job)} at the next step (checkpointed)…")
        if job.request_id is not None:
            self._spawn(self._stop(job))

    async def _stop(self, job: Job, tries: int = STOP_TRIES) -> bool:
        """Ask the engine to stop the training process of `job`. Right after a start the
        process may not be registered yet: asked again a few times."""
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
            await asyncio.sleep(STOP_RETRY_S)
        return False

    async def stop_all(self) -> int:
        """Stop every job still training (the quit dialog's "stop", ctrl+g); returns how many were asked."""
        jobs = self.book.active_jobs()
        for job in jobs:
            job.stopping = True
        done = await asyncio.gather(*(self._stop(job, tries=8) for job in jobs))
        return sum(done)

    def resume(self, out: str | None, ranks: str = "") -> Job | None:
        """Resume the stopped run in `out`, with the other unfinished runs of its job, on
        `ranks` (the form's text; empty: one) data-parallel processes, whatever it ran on
        before: the run's config does not depend on them."""
        run = self.book.get(out) if out else None
        if run is None or not run.resumable:
            self.say("the selected run has nothing to resume", error=True)
            return None
        try:
            n = parse_ranks(ranks)
            check_ranks({BATCH_FIELD: run.config.batch_size}, n)
        except FormError as e:
            self.say(f"{e} (a resume uses the form's ranks)", error=True)
            return None
        return self.start(self.book.resume_specs(run), resume=True, ranks=n)

    def toggle_shown(self, out: str) -> None:
        run = self.book.get(out)
        if run is not None:
            run.shown = not run.shown
            self.book.touch(run)
            self.sync_emergence()

    # ---- reopening ----------------------------------------------------------------
    def open(self, path: str) -> None:
        """Reopen a run folder, or a folder of side-by-side runs as one comparison."""
        path = path.rstrip("/") or path
        self.last_folder = path
        run = self.book.get(path)
        if run is not None and run.active:
            self.say(f"{run.name} is training; it is already here", error=True)
            return
        self.say(f"reading {path}…")
        self._spawn(self._open(path))

    async def _open(self, path: str) -> None:
        try:
            found = await self.link.run("train.scan", {"path": path})
            reads = {}
            for out in found.runs:
                known = self.book.get(out)
                if known is None or not known.active:  # one training here is live already
                    reads[out] = await self.link.run("train.read", {"path": out})
        except EngineError as e:
            self.say(str(e), error=True)
            return
        for out, read in reads.items():
            self.book.opened(out, read)
        runs = [self.book.runs[out] for out in found.runs]
        if len(runs) > 1:
            self.book.show_only(found.runs)
        self.sync_emergence()
        if len(runs) == 1:
            self._post(RunsToShow(found.runs))
            self.say(f"opened {runs[0].name}: {len(runs[0].steps)} steps, {_how(runs[0])}")
            return
        self._post(RunsToShow(found.runs, "compare"))
        states = collections.Counter(r.state for r in runs)
        how = ", ".join(f"{n} {state}" for state, n in states.items())
        self.say(f"opened {path}: {len(runs)} side-by-side runs ({how}) · c curves · space shows others")

    # ---- feature emergence --------------------------------------------------------
    def want_emergence(self, wanted: bool) -> None:
        """A view that shows emergence came on screen (ask what is due) or went (cancel)."""
        if wanted != self.emergence_wanted:
            self.emergence_wanted = wanted
            self.sync_emergence()

    def sync_emergence(self) -> None:
        """Cancel the requests nobody needs any more; ask for every shown run whose
        emergence is due and has none in flight."""
        for out, (run, generation, task) in list(self.emerging.items()):
            if not (self.emergence_wanted and run.shown and self.book.get(out) is run
                    and run.generation == generation):
                task.cancel()  # the client tells the engine to cancel the job
                del self.emerging[out]
        if not self.emergence_wanted:
            return
        for run in self.book.ordered():
            if run.shown and run.emergence_due and run.out not in self.emerging:
                self.emerging[run.out] = (run, run.generation, self._spawn(self._emergence(run)))
                self.book.touch(run)  # its note says it is being matched

    async def _emergence(self, run: Run) -> None:
        """Ask for `run`'s emergence until it is no longer due, at most once every
        `emergence_every` seconds (a run may snapshot every step); cancelled by `sync_emergence`.

        Sent on the client, not as a tracked job: a refresh every few seconds per run
        would keep the status bar (and the footer, redrawn with it) busy; errors are the
        run's note instead."""
        loop = asyncio.get_running_loop()
        while run.emergence_due:
            started, key = loop.time(), run.emergence_key
            client = self.link.client
            try:
                if client is None or not client.connected:
                    raise EngineGone("the engine is not running")
                result = await client.call("train.emergence", {"path": run.out})
            except EngineGone as e:  # still due: asked again at the next connection
                run.set_emergence(run.emergence_for, None, str(e))
                break
            except EngineError as e:  # kept until the next snapshot
                run.set_emergence(key, None, str(e))
                self.link.log(f"train.emergence {run.out}: {e}")
            else:
                run.set_emergence(key, result)
            finally:
                self.book.touch(run)
            if run.emergence_due:  # snapshots that arrived meanwhile
                await asyncio.sleep(max(0.0, self.emergence_every - (loop.time() - started)))
        entry = self.emerging.get(run.out)
        if entry is not None and entry[2] is asyncio.current_task():
            del self.emerging[run.out]

    # ---- finding runs again -------------------------------------------------------
    def reconnected(self) -> None:
        """The engine is (again) reachable: show the runs it trains or trained, follow the live ones."""
        if self._attach is not None:
            self._attach.cancel()
        self._attach = self._spawn(self._reattach())

    async def _reattach(self) -> None:
        client = self.link.client
        if client is None or not client.connected:
            return
        try:
            listing = await client.call("train.list")
        except EngineError as e:
            self.link.log(f"train.list: {e}")
            return
        followed: list[Job] = []
        for info in listing.jobs[-MAX_LISTED:]:
            known = [self.book.get(self.book.key_of(r)) for r in info.runs]
            if info.state.state in ("starting", "running"):
                if any(run is not None and run.active for run in known):
                    continue  # followed already (a request of this connection)
                job = self.book.followed(info)
                followed.append(job)
                self._spawn(self._run_job(job, "train.follow", {"job": job.engine_job}))
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
        self.sync_emergence()
        if followed:
            n = len(followed)
            self.say(f"following {n} training job{'s' if n != 1 else ''} that kept running: "
                     + "; ".join(_job(job) for job in followed))
