"""Timing rounds on demand, for `edgebench compare BASE.onnx CURRENT.onnx` (reports/side_by_side.py).

A side-by-side comparison alternates two models in many short rounds. On a local device and on an SSH board
(devices/ssh_rounds.py) each model keeps ONE runner process for the whole comparison (deploy/runner.py
--rounds-from-stdin): a round costs only its inferences, so rounds can be short and many, and the two halves
of a round pair run within a fraction of a second of each other. Measured here (OCR detector at 640x640, core 0, 2026-11-28): a fresh runner per round
gave 16 rounds of 6 in 47 s with round ratios of the same model spread 0.83-1.13x; one process per model gave
48 rounds of 2 (plus one warm-up each) in 40 s, spread 0.88-1.12x, and a bootstrap interval of +-1.5% instead
of +-4%. Other devices (emulated, adb) start a fresh runner per round (FreshRunnerRounds), slower but the same
contract: round(runs, warmup) -> samples, then finish() -> the Measurement of all rounds.
"""
from __future__ import annotations

import dataclasses
import json
import queue
import subprocess
import threading

from edgebench.deploy.runner import ROUND_READY, ROUND_TAG
from edgebench.devices.protocol import measurement_from_output, runner_args
from edgebench.types import EdgebenchError, Measurement, RunSpec


class FreshRunnerRounds:
    """Any device: each round is one ordinary run of the runner."""

    RUNNER = "a fresh runner per round"

    def __init__(self, device, bundle, spec: RunSpec):
        self.device, self.bundle, self.spec = device, bundle, spec
        self.rounds: list[list[int]] = []
        self.last: Measurement | None = None

    def round(self, runs: int, warmup: int) -> list[int]:
        m = self.device.run(self.bundle, dataclasses.replace(self.spec, runs=runs, warmup=warmup, min_time_s=0.0))
        if not m.ok:
            raise EdgebenchError(m.error)
        self.rounds.append(list(m.samples_ns))
        self.last = m
        return self.rounds[-1]

    def finish(self) -> Measurement:
        if self.last is None:
            raise EdgebenchError("no round was timed")
        return dataclasses.replace(self.last, samples_ns=[s for r in self.rounds for s in r])

    def close(self) -> None:
        pass


class ProcessRounds:
    """One runner process that times rounds on request. `proc` is a started `runner.py ... --rounds-from-stdin`
    shaped like subprocess.Popen in text mode (stdin, stdout, stderr, wait, kill, poll): a local process, or
    a remote one on an SSH channel (devices/ssh_rounds.py). `on_close` releases what the device holds for it."""

    RUNNER = "one process per file"

    def __init__(self, name, provenance, proc, timeout_s: float, facts: dict | None = None, on_close=None):
        self.name, self.provenance, self.timeout_s = name, provenance, timeout_s
        self.facts, self.on_close, self.proc = facts or {}, on_close, proc
        self.lines: queue.Queue = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.ended = False
        self.pumps = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True),
                      threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True)]
        for t in self.pumps:
            t.start()
        try:
            self._expect(ROUND_READY)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _pump(stream, put) -> None:
        try:
            for line in iter(stream.readline, ""):
                put(line)
        except Exception:  # noqa: BLE001 - a read error on a dropped link (paramiko) is the stream's end
            pass
        finally:
            put(None)

    def _next_line(self) -> str | None:
        if self.ended:
            return None
        try:
            line = self.lines.get(timeout=self.timeout_s)
        except queue.Empty:
            self.proc.kill()
            raise EdgebenchError(f"runner on {self.name} gave no answer within {self.timeout_s:g} s") from None
        if line is None:
            self.ended = True
        else:
            self.stdout.append(line)
        return line

    def _expect(self, tag: str) -> str:
        while True:
            line = self._next_line()
            if line is None:  # the runner ended: its own result says why
                m = self.finish()
                raise EdgebenchError(f"the runner on {self.name} stopped answering: "
                                     f"{m.error or 'it ended without a result'}")
            if line.startswith(tag):
                return line[len(tag):]

    def round(self, runs: int, warmup: int) -> list[int]:
        try:
            self.proc.stdin.write(f"{int(runs)} {int(warmup)}\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it ended; _expect reports why
        return [int(s) for s in json.loads(self._expect(ROUND_TAG))]

    def finish(self) -> Measurement:
        """End the rounds and read the runner's result (every sample; the round sizes in extra)."""
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        while self._next_line() is not None:
            pass
        try:
            rc = self.proc.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = None
        for t in self.pumps:
            t.join(timeout=5)
        m = measurement_from_output(self.name, self.provenance, "".join(self.stdout),
                                    "".join(line for line in self.stderr if line), rc)
        m.device_facts.update(self.facts)
        return m

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.on_close:
            self.on_close()
            self.on_close = None


def open_rounds(device, bundle, spec: RunSpec):
    """The device's own rounds session when it has one (local, SSH), else a fresh runner per round."""
    opener = getattr(device, "open_rounds", None)
    return opener(bundle, spec) if opener else FreshRunnerRounds(device, bundle, spec)


def rounds_args(spec: RunSpec) -> list[str]:
    """The runner's arguments for rounds on demand (no accuracy pass, no profile)."""
    spec = dataclasses.replace(spec, eval=False, profile=False, min_time_s=0.0)
    return [*runner_args(spec), "--rounds-from-stdin"]
