"""The runner's profiling pass (a session of its own, never the timed one) stops early on a slow model: the
profiler writes an event per node and run, and reading 50 runs of a large graph back cost more than its timed
runs. Never fewer than min_runs, never more than runs."""
import time

from edgebench.deploy.runner import profile_pass


class _Backend:
    def __init__(self, seconds_per_run):
        self.seconds, self.runs, self.profiled = seconds_per_run, 0, None

    def prepare(self, feed):
        def infer():
            time.sleep(self.seconds)
            self.runs += 1
        return infer

    def end_profile(self):
        return [{"op": "Gemm", "count": self.runs}]


def _pass(seconds_per_run, **kw):
    backend = _Backend(seconds_per_run)

    def open_backend(threads, profile=False):
        backend.profiled = profile
        return backend
    rows = profile_pass(open_backend, 1, None, **kw)
    return backend, rows


def test_a_quick_model_is_profiled_over_every_run():
    backend, rows = _pass(0.0)
    assert backend.profiled and rows == [{"op": "Gemm", "count": 50}]


def test_a_slow_model_stops_after_the_budget_but_not_before_min_runs():
    backend, rows = _pass(0.03, budget_s=0.1, min_runs=5)  # 4 runs pass the budget; the 5th is the floor
    assert backend.runs == 5 and rows[0]["count"] == 5
    backend, _ = _pass(0.03, budget_s=0.1, min_runs=2)
    assert 2 <= backend.runs < 50  # stops soon after 0.1 s (about 4 runs), whatever the machine adds to a sleep
