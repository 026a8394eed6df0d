"""A fake clock for the step-time calibration of budgeted runs (``ndeconv.train.budget``)."""

import types

import ndeconv.train.budget as budget_mod


def fake_clock(monkeypatch, step_times: list[float]) -> list:
    """Calibration's clock: during the k-th calibration every reading is ``step_times[k]`` later
    than the last (the last value repeats). The timed steps still run, only their duration is
    made exact. Returns the learners calibrated so far."""
    clock = {"now": 0.0, "step": step_times[0]}
    calibrations: list = []
    real = budget_mod.measure_step_seconds

    def perf_counter() -> float:
        clock["now"] += clock["step"]
        return clock["now"]

    def measure(learn, *args, **kwargs):
        clock["step"] = step_times[min(len(calibrations), len(step_times) - 1)]
        calibrations.append(learn)
        return real(learn, *args, **kwargs)

    monkeypatch.setattr(budget_mod, "time", types.SimpleNamespace(perf_counter=perf_counter))
    monkeypatch.setattr(budget_mod, "measure_step_seconds", measure)
    return calibrations
