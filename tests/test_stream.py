"""Live output: lines reach the controller's terminal while the trial still runs, under -n 2 too."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pytest_xp.schedule.live import Progress

WAITER = """
import time
from pathlib import Path
from pytest_xp import trial

@trial(1, {"x": [1, 2]})
def wait_for_file(x, xp):
    flag = Path(__file__).parent / f"go-{x}"
    print(f"waiting for {flag.name}", flush=True)
    xp.log(0, progress=0.5)
    for _ in range(1200):  # bounded: 120 s at most
        if flag.exists():
            return {"saw_file": True}
        time.sleep(0.1)
    return {"saw_file": False}
"""

#: How long the test waits for a streamed line before giving up (bounded, not a timing assertion).
LINE_WAIT_S = 100


def _reader(stream: object, lines: queue.Queue[str | None]) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        lines.put(line.rstrip("\n"))
    lines.put(None)


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--xp-stream"], {}), ([], {"MLX_STREAM_ALL": "1"})],
    ids=["option", "MLX_STREAM_ALL"],
)
def test_lines_reach_the_terminal_while_the_trial_runs(
    pytester: pytest.Pytester, args: list[str], env: dict[str, str]
) -> None:
    pytester.makepyfile(xp_wait=WAITER)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "xp_wait.py", *args]
    environ = {**os.environ, **env}
    environ.pop("PYTEST_XDIST_WORKER", None)
    process = subprocess.Popen(
        command, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environ
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_reader, args=(process.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        waiting = {"go-1", "go-2"}
        while waiting:
            line = lines.get(timeout=LINE_WAIT_S)
            assert line is not None, "pytest ended before streaming the line:\n" + "\n".join(seen)
            seen.append(line)
            for name in list(waiting):
                if "[wait_for_file[x_" in line and line.endswith(f"] waiting for {name}"):
                    (pytester.path / name).touch()  # only now does the trial go on
                    waiting.discard(name)
        assert process.wait(timeout=LINE_WAIT_S) == 0
        while (line := lines.get(timeout=LINE_WAIT_S)) is not None:
            seen.append(line)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
    assert "[wait_for_file[x_1] metric] step 0: progress=0.5" in seen, seen
    assert "[wait_for_file[x_1]] waiting for go-1" in seen, seen  # on a line of its own
    assert any("2 passed" in line for line in seen), seen


def test_single_combination_trials_stream_by_default_under_n0(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_one="""
        import sys
        from pytest_xp import trial

        @trial(1, {})
        def single(xp):
            print("from the only combination")
            print("an error line", file=sys.stderr)
            xp.log(3, loss=0.25)
            return {}

        @trial(1, {"x": [1, 2]})
        def many(x):
            print("not streamed without --xp-stream")
            return {}
        """
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.stdout.fnmatch_lines(
        [
            "[[]single[]] from the only combination",
            "[[]single stderr[]] an error line",
            "[[]single metric[]] step 3: loss=0.25",
        ]
    )
    assert "not streamed" not in result.stdout.str()
    streamed = pytester.runpytest("-p", "no:xdist", "--xp-rerun", "--stream-all", "-k", "many")
    streamed.stdout.fnmatch_lines(["[[]many[[]x_1[]][]] not streamed without --xp-stream"])


def test_status_line_names_the_slowest_running_and_an_eta() -> None:
    progress = Progress(total=10, workers=2, done=4, durations=[10.0, 10.0, 10.0, 10.0])
    progress.running = {"m.py::train[a]": 100.0, "m.py::train[b]": 50.0}
    progress.last_metric["m.py::train[b]"] = "step 7: loss=0.3"
    line = progress.status(now=170.0)
    assert line == (
        "pytest-xp status: 4 done, 2 running, 4 queued; slowest running train[b] for 2m00s (step 7: loss=0.3); ETA ~25s"
    )
    assert Progress(total=3).status(now=0.0) == "pytest-xp status: 0 done, 0 running, 3 queued"


def test_the_output_still_reaches_pytest_capture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_fail="""
        from pytest_xp import trial

        @trial(1, {})
        def boom():
            print("printed before failing")
            raise ValueError("boom")
        """
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.stdout.fnmatch_lines(
        ["[[]boom[]] printed before failing", "*Captured stdout call*", "printed before failing"]
    )
    assert Path(pytester.path / "xp_fail.py").exists()
