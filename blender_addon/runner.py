"""One pipeline process: started with its output piped, read by a thread, drained by its owner.

Plain Python without bpy. Blender's data may only be touched on its main thread, so the reader thread does
nothing but move stdout lines into a queue; the owner (the modal operator's timer, or a synchronous loop)
takes events out with `poll` and does everything else.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading

from .protocol import DoneEvent, ErrorEvent, Event, parse_line

# How long a cancelled pipeline gets to stop by itself (removing its temporary files) before it is killed. It
# usually stops at once; inside a compiled kernel (fusion, baking) an interrupt waits for the kernel's return,
# a few seconds on a busy machine, and a kill then would leave a hidden temporary folder behind.
CANCEL_GRACE_S = 10.0


class PipelineError(Exception):
    """The job failed; the message is the pipeline's own where it gave one."""


class PipelineRun:
    def __init__(self, argv: list[str]) -> None:
        self.cancelled = False
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._ended = False
        self._outcome: DoneEvent | ErrorEvent | None = None
        # stderr goes to a file rather than a pipe: nobody has to drain it while the job runs, and its tail
        # is what explains a crash that printed no error event.
        self._stderr = tempfile.TemporaryFile()
        try:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
                text=True, encoding="utf-8", errors="replace", bufsize=1, **_own_process_group())
        except OSError as exc:
            self._stderr.close()
            raise PipelineError(f"cannot start {argv[0]!r} ({exc.strerror or exc}); set how to run lyra-assets "
                                "in the add-on's preferences") from exc
        self._reader = threading.Thread(target=self._read, name="lyra-assets stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of output

    @property
    def ended(self) -> bool:
        """True once the process has closed its output and every line has been taken out by `poll`."""
        return self._ended

    def poll(self, timeout: float | None = 0.0) -> list[Event]:
        """The events printed since the last call.

        timeout=0 returns at once (the modal timer); None waits until there is at least one line or the
        output ends (the synchronous path)."""
        events: list[Event] = []
        block = timeout != 0.0
        while not self._ended:
            try:
                line = self._lines.get(block=block, timeout=timeout)
            except queue.Empty:
                break
            block = False  # after the first line, take only what is already there
            if line is None:
                self._ended = True
                break
            event = parse_line(line)
            if event is None:
                continue
            if isinstance(event, (DoneEvent, ErrorEvent)):
                self._outcome = event
            events.append(event)
        return events

    def outputs(self) -> dict[str, str]:
        """After the output has ended: the files the build wrote, or PipelineError saying why there are none."""
        if not self._ended:
            raise RuntimeError("the pipeline is still running")
        status = self.process.wait()
        if self.cancelled:
            raise PipelineError("cancelled")
        if isinstance(self._outcome, ErrorEvent):
            raise PipelineError(self._outcome.message)
        if status != 0:
            # A crash or a usage error prints no error event: its last stderr line says what went wrong.
            last = self._stderr_tail()
            raise PipelineError(f"lyra-assets stopped with exit status {status}" + (f": {last}" if last else ""))
        if not isinstance(self._outcome, DoneEvent):
            raise PipelineError("lyra-assets finished without naming its outputs")
        return self._outcome.outputs

    def wait(self, on_event=None) -> None:
        """Block until the output ends, passing each event to on_event; then `outputs()` says how it went."""
        while not self._ended:
            for event in self.poll(timeout=None):
                if on_event is not None:
                    on_event(event)

    def cancel(self) -> None:
        """Stop the pipeline and everything it started (ffmpeg, for one); returns once they have exited."""
        self.cancelled = True
        if self.process.poll() is None:
            _interrupt(self.process)
            try:
                self.process.wait(CANCEL_GRACE_S)
            except subprocess.TimeoutExpired:
                _kill(self.process)
                self.process.wait()
        self._reader.join()
        self.poll()  # take what is left, so that `ended` is true

    def close(self) -> None:
        self._stderr.close()

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        lines = [line.strip() for line in self._stderr.read().decode("utf-8", "replace").splitlines()]
        return next((line for line in reversed(lines) if line), "")


# A process group of its own lets cancel reach the pipeline's children too.
if sys.platform == "win32":
    def _own_process_group() -> dict:
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}

    def _interrupt(process: subprocess.Popen) -> None:
        process.send_signal(signal.CTRL_BREAK_EVENT)

    def _kill(process: subprocess.Popen) -> None:
        process.kill()
else:
    def _own_process_group() -> dict:
        return {"start_new_session": True}

    def _interrupt(process: subprocess.Popen) -> None:
        # SIGINT rather than SIGTERM: Python turns it into KeyboardInterrupt, so the pipeline's cleanup of
        # temporary files runs; ffmpeg also finishes cleanly on it.
        _signal_group(process, signal.SIGINT)

    def _kill(process: subprocess.Popen) -> None:
        _signal_group(process, signal.SIGKILL)

    def _signal_group(process: subprocess.Popen, signum: int) -> None:
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:  # already gone
            pass


def run_quick(argv: list[str], timeout: float = 60.0) -> str:
    """Stdout of a short command (`presets list`), or PipelineError with its own last words."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, encoding="utf-8",
                              errors="replace", timeout=timeout)
    except OSError as exc:
        raise PipelineError(f"cannot start {argv[0]!r} ({exc.strerror or exc}); set how to run lyra-assets "
                            "in the add-on's preferences") from exc
    except subprocess.TimeoutExpired as exc:
        raise PipelineError(f"{' '.join(argv)} did not answer within {timeout:.0f} s") from exc
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        raise PipelineError(lines[-1] if lines else f"{' '.join(argv)} exited with status {done.returncode}")
    return done.stdout
