"""The Training pane's controller without a screen: a scripted stand-in for the engine
link answers its requests, and the messages it posts are collected in a list.

What is checked: bad form values and refused starts leave the runs as they were and
say the whole error; stop and resume speak of "stopped" only; a folder of side-by-side
runs reopens as one comparison; a lost engine leaves a run `unfollowed`; a new
connection follows the live jobs and reads back the ended ones; feature emergence is
asked per snapshot, one request a run, and cancelled when nobody needs it; the form's
ranks go with a start or a resume (left out at one), bad ones refused before asking,
and a followed job keeps the engine's count.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from engine.protocol import (Emergence, EmergencePoint, RunEval, RunFolders, RunMetrics, RunRead, RunState,
                             RunSummary, TrainJobInfo, TrainJobs, TrainRecord, TrainResult, TrainSettings,
                             TrainStopping)
from tui.client import EngineError, EngineGone, JobCancelled
from tui.controllers.training import RunsToShow, TrainingController, TrainNote

TINY = {"d_sae": "32", "k": "4", "tokens": "2048", "batch_size": "256", "hook": "blocks.0.hook_mlp_out"}


def step(i: int) -> TrainRecord:
    return TrainRecord("step", i, tokens=(i + 1) * 256, loss=100.0 - i, explained_variance=i / 10, l0=4.0)


def metrics(run: int, i: int):
    return SimpleNamespace(kind="metrics", data=RunMetrics(run, step(i)))


def read(out: str, steps: int = 3, finished: bool = True, state: str = "finished") -> RunRead:
    return RunRead(path=out, config=TrainSettings(hook="h", tokens=1024, batch_size=256),
                   records=[step(i) for i in range(steps)], eval=RunEval(out, l0=4.0) if finished else None,
                   state=RunState(state))


class FakeLink:
    """`EngineLink` as the controller uses it: `run`, `client.call`, `log`, `model_spec`.
    `answers[method]` is an async function (params, on_event) -> result, or raises."""

    model_spec = "default"

    def __init__(self, **answers) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict]] = []
        self.logs: list[str] = []
        self.client = SimpleNamespace(connected=True, call=self._call)

    def log(self, text: str) -> None:
        self.logs.append(text)

    async def run(self, method, params=None, *, needs_model=False, on_event=None, on_start=None):
        self.calls.append((method, params or {}))
        if on_start is not None:
            on_start(str(len(self.calls)))
        return await self.answers[method](params or {}, on_event)

    async def _call(self, method, params=None):
        self.calls.append((method, params or {}))
        return await self.answers[method](params or {}, None)


def controller(link: FakeLink) -> tuple[TrainingController, list]:
    posted: list = []
    return TrainingController(link, posted.append), posted


def notes(posted: list) -> list[str]:
    return [m.text for m in posted if isinstance(m, TrainNote)]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_bad_values_and_refused_starts_keep_the_runs_and_say_the_whole_error():
    long = ("/a/rather/long/path/to/runs/topk-b0-mlp_out-1 already holds a run: resume it, or choose "
            "another folder")

    async def refuse(params, on_event):
        raise EngineError(long)

    async def main():
        link = FakeLink(**{"train.start": refuse})
        c, posted = controller(link)
        c.book.opened("runs/kept", read("runs/kept"))
        assert c.submit({**TINY, "d_sae": "abc"}, ["topk"], "x") is None
        assert c.note == ("d_sae: 'abc' is not a whole number", True) and link.calls == []

        # A folder in the table: refused here, the run untouched.
        assert c.submit(TINY, ["topk"], "runs/kept") is None
        assert c.note[1] and "runs/kept already holds a run (in the table, finished)" in c.note[0]
        assert link.calls == [] and len(c.book.get("runs/kept").steps) == 3

        # The engine refuses: the new row goes, the others stay, the message is whole.
        assert c.submit(TINY, ["topk"], "/a/rather/long/path/to/runs/topk-b0-mlp_out-1") is not None
        await settle()
        assert [r.out for r in c.book.ordered()] == ["runs/kept"]
        assert c.book.get("runs/kept").state == "finished"
        assert c.note == (long, True) and posted[-1] == TrainNote(long, True)
        assert any(long in line for line in link.logs)  # errors reach the log as well

    asyncio.run(main())


def test_stop_and_resume_say_stopped_and_nothing_else():
    stopped = asyncio.Event()
    starts: list[dict] = []

    async def start(params, on_event):
        starts.append(params)
        for i in range(3):
            on_event(metrics(0, i))
            on_event(metrics(1, i))
        await stopped.wait()
        raise JobCancelled("cancelled")

    async def stop(params, on_event):
        stopped.set()
        return TrainStopping(job="j1", state="running")

    async def main():
        link = FakeLink(**{"train.start": start, "train.stop": stop})
        c, posted = controller(link)
        job = c.submit(TINY, ["topk", "relu"], "pair")
        assert [r.out for r in job.runs] == ["pair/topk", "pair/relu"]
        await settle()
        assert [r.state for r in job.runs] == ["running", "running"] and len(job.runs[1].steps) == 3
        c.toggle("pair/relu")  # the `s` key on a training run: stop its job
        assert [r.state for r in job.runs] == ["stopping", "stopping"]
        await settle()
        assert ("train.stop", {"out": "pair/topk"}) in link.calls
        assert [r.state for r in job.runs] == ["stopped", "stopped"] and all(r.resumable for r in job.runs)
        assert c.note == ("stopped topk, relu (checkpointed): s resumes", False)

        stopped.clear()
        c.toggle("pair/topk")  # and again: resume the whole job
        await settle()
        assert starts[-1] == {"runs": [{"out": "pair/topk"}, {"out": "pair/relu"}], "resume": True}
        assert [r.state for r in job.runs] == ["running", "running"]
        everything = " ".join(notes(posted)) + " ".join(r.state for r in c.book.ordered())
        assert "paus" not in everything and "cancel" not in everything
        c.close()
        await settle()

    asyncio.run(main())


def test_a_folder_of_side_by_side_runs_reopens_as_one_comparison():
    async def scan(params, on_event):
        assert params == {"path": "runs/pair"}  # the trailing slash is dropped
        return RunFolders(path="runs/pair", runs=["runs/pair/relu", "runs/pair/topk"])

    async def read_one(params, on_event):
        return read(params["path"], finished=params["path"].endswith("topk"),
                    state="finished" if params["path"].endswith("topk") else "stopped")

    async def main():
        link = FakeLink(**{"train.scan": scan, "train.read": read_one})
        c, posted = controller(link)
        c.book.opened("runs/other", read("runs/other"))
        c.open("runs/pair/")
        await settle()
        relu, topk, other = c.book.get("runs/pair/relu"), c.book.get("runs/pair/topk"), c.book.get("runs/other")
        assert (relu.state, topk.state) == ("stopped", "finished")
        assert relu.shown and topk.shown and not other.shown  # only the comparison's curves
        assert RunsToShow(["runs/pair/relu", "runs/pair/topk"], "compare") in posted
        assert c.note[0].startswith("opened runs/pair: 2 side-by-side runs (1 stopped, 1 finished)")
        assert c.last_folder == "runs/pair"

    asyncio.run(main())


def test_one_run_folder_reopens_as_itself_and_an_unknown_one_is_an_error():
    async def scan(params, on_event):
        if params["path"] == "nowhere":
            raise EngineError("nowhere does not exist")
        return RunFolders(path=params["path"], runs=[params["path"]])

    async def read_one(params, on_event):
        return read(params["path"], finished=False, state="stopped")

    async def main():
        link = FakeLink(**{"train.scan": scan, "train.read": read_one})
        c, posted = controller(link)
        c.open("runs/solo")
        await settle()
        assert c.book.get("runs/solo").state == "stopped" and c.book.get("runs/solo").resumable
        assert RunsToShow(["runs/solo"]) in posted
        assert c.note == ("opened solo: 3 steps, stopped: s resumes it", False)
        c.open("nowhere")
        await settle()
        assert c.note == ("nowhere does not exist", True) and len(c.book) == 1

    asyncio.run(main())


def test_a_lost_engine_leaves_the_run_unfollowed():
    async def start(params, on_event):
        on_event(metrics(0, 0))
        raise EngineGone("the engine is not running (killed by SIGKILL)")

    async def main():
        link = FakeLink(**{"train.start": start})
        c, _ = controller(link)
        job = c.submit(TINY, ["topk"], "solo")
        await settle()
        assert job.runs[0].state == "unfollowed" and not job.runs[0].active and not job.runs[0].resumable
        assert c.note[1] and "it trains on" in c.note[0]
        c.toggle("solo")
        assert "not followed here" in c.note[0]

    asyncio.run(main())


def test_a_new_connection_follows_live_jobs_and_reads_back_ended_ones():
    settings = TrainSettings(hook="h", tokens=1024, batch_size=256)
    live = TrainJobInfo("j-live", RunState("running"), 0.0, False,
                        [RunSummary("runs/a", "/abs/runs/a", settings, RunState("running"))])
    ended = TrainJobInfo("j-old", RunState("stopped"), 0.0, False,
                         [RunSummary("runs/b", "/abs/runs/b", settings, RunState("stopped"))])

    async def listing(params, on_event):
        return TrainJobs(jobs=[ended, live])

    async def follow(params, on_event):
        assert params == {"job": "j-live"}
        on_event(metrics(0, 0))
        return TrainResult(job="j-live", runs=[RunEval("/abs/runs/a", l0=4.0)])

    async def read_one(params, on_event):
        return read(params["path"], finished=False, state="stopped")

    async def main():
        link = FakeLink(**{"train.list": listing, "train.follow": follow, "train.read": read_one})
        c, _ = controller(link)
        c.reconnected()
        await settle()
        a, b = c.book.get("/abs/runs/a"), c.book.get("/abs/runs/b")
        assert a.state == "finished" and a.final == RunEval("/abs/runs/a", l0=4.0)
        assert b.state == "stopped" and len(b.steps) == 3
        assert c.note[0].startswith("finished a")
        assert not [line for line in link.logs if "Error" in line]

    asyncio.run(main())


def snapshot(run: int, done: int):
    return SimpleNamespace(kind="metrics", data=RunMetrics(run, TrainRecord("snapshot", done - 1, tokens=done * 256)))


def emergence(path: str, formed: list[float], reference: str = "latest") -> Emergence:
    points = [EmergencePoint(2 * i, 512 * i, f, f, f, 1.0) for i, f in enumerate(formed)]
    return Emergence(path=path, arch="topk", d_sae=32, reference=reference, reference_step=2 * len(formed),
                     method="hungarian", threshold=0.9, points=points, baseline_matched=0.0,
                     baseline_mean_cosine=0.1, emergence_step=[], first_fired_step=[])


def test_emergence_is_asked_per_snapshot_one_request_a_run_and_cancelled_when_not_needed():
    """Asked only while a view shows it; one request per run in flight, asked again when
    snapshots came meanwhile; a hidden run's and a left view's requests cancelled; an
    error kept as the run's note until its next snapshot."""
    asked: list[tuple[str, asyncio.Future]] = []
    events: list = []
    finish = asyncio.Event()

    async def start(params, on_event):
        events.append(on_event)
        for run in (0, 1):
            on_event(metrics(run, 0))
            on_event(snapshot(run, 1))
        await finish.wait()
        return TrainResult(job="j1", runs=[RunEval("pair/topk"), RunEval("pair/relu")])

    async def emerge(params, on_event):
        answer = asyncio.get_running_loop().create_future()
        asked.append((params["path"], answer))
        return await answer

    async def main():
        link = FakeLink(**{"train.start": start, "train.emergence": emerge})
        c, _ = controller(link)
        c.emergence_every = 0.0  # (2 s between a run's requests in the app)
        job = c.submit(TINY, ["topk", "relu"], "pair")
        topk, relu = job.runs
        await settle()
        assert asked == [] and topk.emergence_due  # no view shows it yet
        c.want_emergence(True)
        await settle()
        assert [p for p, _ in asked] == ["pair/topk", "pair/relu"]
        events[0](snapshot(0, 3))  # while both are in flight: nothing more asked
        events[0](snapshot(1, 3))
        await settle()
        assert len(asked) == 2
        asked[0][1].set_result(emergence("pair/topk", [0.0, 0.5]))
        await settle()
        assert topk.emergence.points[-1].formed == 0.5 and [p for p, _ in asked][2:] == ["pair/topk"]
        asked[1][1].set_exception(EngineError("pair/relu has no decoder snapshots"))
        await settle()
        assert relu.emergence is None and relu.emergence_error == "pair/relu has no decoder snapshots"
        assert [p for p, _ in asked][3:] == ["pair/relu"]  # its snapshot 3 came meanwhile: asked again

        c.toggle_shown("pair/relu")  # hidden: its request goes
        await settle()
        assert asked[3][1].cancelled() and not asked[2][1].cancelled()
        c.want_emergence(False)  # no view shows it: the rest goes too
        await settle()
        assert asked[2][1].cancelled() and not c.emerging

        c.want_emergence(True)  # back: what is still due is asked, once
        await settle()
        assert [p for p, _ in asked][4:] == ["pair/topk"]
        asked[4][1].set_result(emergence("pair/topk", [0.0, 0.5, 0.75]))
        await settle()
        assert len(asked) == 5 and not topk.emergence_due
        finish.set()  # finished: matched against the final decoder, asked once more
        await settle()
        assert topk.state == "finished" and [p for p, _ in asked][5:] == ["pair/topk"]
        asked[5][1].set_result(emergence("pair/topk", [0.0, 0.5, 1.0], "final"))
        await settle()
        assert topk.emergence.reference == "final" and len(asked) == 6 and not c.emerging
        c.close()
        await settle()

    asyncio.run(main())



def test_ranks_go_with_the_job_on_start_resume_and_follow():
    starts: list[dict] = []
    stopped = asyncio.Event()

    async def start(params, on_event):
        starts.append(params)
        on_event(metrics(0, 0))
        await stopped.wait()
        raise JobCancelled("cancelled")

    async def stop(params, on_event):
        stopped.set()
        return TrainStopping(job="j1", state="running")

    settings = TrainSettings(hook="h", tokens=1024, batch_size=256)
    live = TrainJobInfo("j-live", RunState("running"), 0.0, False,
                        [RunSummary("runs/a", "/abs/runs/a", settings, RunState("running"))], ranks=2)

    async def listing(params, on_event):
        return TrainJobs(jobs=[live])

    async def follow(params, on_event):
        on_event(metrics(0, 0))
        await asyncio.Event().wait()

    async def stop_it(c: TrainingController, out: str) -> None:
        c.toggle(out)
        await settle()
        assert c.book.get(out).state == "stopped"
        stopped.clear()

    async def main():
        link = FakeLink(**{"train.start": start, "train.stop": stop, "train.list": listing, "train.follow": follow})
        c, posted = controller(link)
        # One rank (and an empty field): `ranks` left out (an older engine takes it as it was).
        for text, out in (("1", "one"), ("", "empty")):
            c.submit({**TINY, "ranks": text}, ["topk"], out)
            await settle()
            assert starts[-1] == {"runs": [{**TINY, "d_sae": 32, "k": 4, "tokens": 2048, "batch_size": 256,
                                            "arch": "topk", "out": out}], "resume": False}
            assert c.note[0].startswith(f"training {out}: s stops")
            await stop_it(c, out)
        # Refused before asking: the batch does not split, or the count is out of range.
        for text, why in (("3", "ranks: the batch size (256) must divide evenly over 3 ranks"),
                          ("0", "ranks: '0' is not a whole number from 1 to 64"),
                          ("65", "ranks: '65' is not a whole number from 1 to 64"),
                          ("abc", "ranks: 'abc' is not a whole number")):
            assert c.submit({**TINY, "ranks": text}, ["topk"], "two") is None
            assert c.note == (why, True)
        assert len(starts) == 2 and c.book.get("two") is None

        job = c.submit({**TINY, "ranks": "2"}, ["topk"], "two")
        assert job.ranks == 2 and c.note == ("starting two on 2 ranks…", False)
        await settle()
        assert starts[-1]["ranks"] == 2 and "ranks" not in starts[-1]["runs"][0]
        assert c.note[0] == "training two on 2 ranks: s stops · e emergence · f firing density"
        await stop_it(c, "two")

        # A resume takes the form's ranks, whatever the job ran on before.
        c.toggle("two", "3")
        refused = "ranks: the batch size (256) must divide evenly over 3 ranks (a resume uses the form's ranks)"
        assert c.note == (refused, True)
        assert c.book.get("two").state == "stopped" and len(starts) == 3
        c.toggle("two", "4")
        await settle()
        assert starts[-1] == {"runs": [{"out": "two"}], "resume": True, "ranks": 4}
        assert c.book.get("two").job.ranks == 4 and "resuming two on 4 ranks…" in notes(posted)
        await stop_it(c, "two")
        c.toggle("two", "")  # empty: one rank, left out
        await settle()
        assert starts[-1] == {"runs": [{"out": "two"}], "resume": True} and c.book.get("two").job.ranks == 1

        # A job found at connection keeps the engine's count.
        c.reconnected()
        await settle()
        a = c.book.get("/abs/runs/a")
        assert a.job.ranks == 2 and a.state == "running"
        assert "following 1 training job that kept running: a on 2 ranks" in notes(posted)
        assert c.note[0] == "training a on 2 ranks: s stops · e emergence · f firing density"
        c.close()
        await settle()

    asyncio.run(main())
