"""benchmarks/scale.py at its smallest: 4 one-epoch trials through the real engine in a fresh
driver process (a private local Ray, MLflow on SQLite), and its figures agree with each other;
its exclusive timers and its profile summary on controlled inputs."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import scale  # noqa: E402


class Clock:
    """A clock that moves only when told: wall and CPU seconds advance together."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    thread_time = perf_counter


def test_timers_count_each_call_once_and_exclusive_of_the_calls_inside(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(scale, "time", SimpleNamespace(perf_counter=clock.perf_counter,
                                                       thread_time=clock.thread_time))  # fmt: skip

    class Work:
        def outer(self):
            clock.now += 1.0
            self.inner()
            self.inner()

        def inner(self):
            clock.now += 2.0
            self.same_group()

        def same_group(self):
            clock.now += 4.0

    timers = scale.Timers()
    timers.wrap(Work, "outer", "outer")
    timers.wrap(Work, "inner", "inner", group="g")
    timers.wrap(Work, "same_group", "same group", group="g")  # inside inner: counted there
    Work().outer()
    table = timers.figures()
    assert table["outer"] == {"calls": 1, "wall_s": 1.0, "cpu_s": 1.0, "inclusive_s": 13.0}
    assert table["inner"] == {"calls": 2, "wall_s": 12.0, "cpu_s": 12.0, "inclusive_s": 12.0}
    assert "same group" not in table
    Work().same_group()  # alone it is its own
    assert timers.figures()["same group"]["calls"] == 1


def test_profile_keeps_the_sweep_and_its_threads_not_the_imports(tmp_path):
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "<module> (scale.py:9);drive (scale.py:5);_find_and_load (<frozen importlib>:1) 50\n"
        "<module> (scale.py:9);drive (scale.py:7);run_sweep (sweeps/engine.py:80);"
        "step (ray/tune/execution/tune_controller.py:700) 30\n"
        "<module> (scale.py:9);drive (scale.py:7);run_sweep (sweeps/engine.py:80);"
        "finish (sweeps/finish.py:3);log_batch (mlflow/tracking/client.py:9) 10\n"
        "_bootstrap (threading.py:1);run (ray/train/_internal/syncer.py:4) 10\n"
        "<module> (scale.py:9);drive (scale.py:7);run_sweep (sweeps/engine.py:80);"
        "finish (sweeps/finish.py:3);Timers.wrap.<locals>.timed (scale.py:70) 10\n"
        " 40\n"  # native code only
    )
    top = scale.top_functions(raw)
    assert top["samples"] == 60 and top["timers"] == pytest.approx(10 / 60)
    assert dict(top["self"]) == pytest.approx(
        {
            "step (ray/tune/execution/tune_controller.py)": 0.5,
            "log_batch (mlflow/tracking/client.py)": 1 / 6,
            "run (ray/train/_internal/syncer.py)": 1 / 6,
            "finish (sweeps/finish.py)": 1 / 6,  # the timers' samples go to their caller
        }
    )
    inclusive = dict(top["inclusive"])  # the entry frames, run_sweep's and threads', left out
    assert not {"run_sweep (sweeps/engine.py)", "_bootstrap (threading.py)"} & set(inclusive)
    assert inclusive["finish (sweeps/finish.py)"] == pytest.approx(2 / 6)


@pytest.mark.slow
def test_four_trials_through_the_engine_give_figures_that_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path / "cache"))  # measure() sets it: undone
    figures = scale.measure([4], ["random"], tmp_path)
    (run,) = figures["runs"]
    assert (run["trials"], run["search"]) == (4, "random")
    timers = run["timers"]
    # the exclusive categories partition part of the sweep's wall time, never more
    assert sum(t["wall_s"] for t in timers.values()) <= run["wall_s"]
    assert all(t["cpu_s"] <= t["wall_s"] + 0.05 for t in timers.values())
    assert 0 < run["driver_start_s"] and 0 <= run["driver_end_s"]
    assert run["driver_start_s"] + run["driver_end_s"] < run["wall_s"]
    # the driver ends (or checks) every trial's run, and the sweep's own
    assert timers["mlflow: get_run"]["calls"] >= 4
    assert timers["tune: trial created"]["calls"] >= 4
    assert timers["tune: experiment state saved"]["calls"] >= 1
    assert timers["driver: ray.init"]["calls"] == 1
    assert "optuna: ask" not in timers  # random search: Optuna is never asked
    n, slots = run["trials"], figures["slots"]
    overhead = (run["wall_s"] * slots - run["train_per_trial_s"] * n) / n
    assert run["overhead_per_trial_s"] == pytest.approx(overhead)
    parts = run["parts_per_trial_s"]
    assert sum(parts.values()) == pytest.approx(run["overhead_per_trial_s"])
    assert parts["open_run"] > 0 and parts["log"] > 0  # each trial timed its own parts
    assert run["driver_cpu_s"] > 0 and run["driver_peak_rss_mib"] > 100
    assert {"raylet", "gcs_server"} <= set(run["ray_processes_cpu_s"])
    assert run["experiment_state_bytes"] > 0
    text = scale.report(figures | {"mode": "quick"} | scale.verdicts(figures["runs"]))
    assert "| random 4 |" in text and "not measured" in text
