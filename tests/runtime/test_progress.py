from __future__ import annotations

import io

from rich.console import Console

from runtime.progress import RunProgress, TrainProgress


def test_progress_counts_resumed_and_new_problems() -> None:
    out = io.StringIO()
    progress = RunProgress(total=4, done=1, correct=1, enabled=True,
                           console=Console(file=out, force_terminal=True, width=120))
    with progress:
        progress.update({"correct": False})
        progress.update({"correct": True})
    assert (progress.done, progress.correct) == (3, 2)
    text = out.getvalue()
    assert "3/4" in text and "acc 66.7%" in text


def test_train_progress_shows_steps_and_recent_mean_losses() -> None:
    out = io.StringIO()
    with TrainProgress(enabled=True, console=Console(file=out, force_terminal=True, width=120),
                       window=2) as bar:
        bar.update(11, 40, {"lm": 9.0, "value": 9.0})  # resumed at step 10 of 40
        bar.update(12, 40, {"lm": 1.0, "value": 0.5})
        bar.update(13, 40, {"lm": 3.0, "value": 0.25})
    text = out.getvalue()
    assert "13/40" in text
    assert "lm 2.000  value 0.375" in text  # the mean of the last two steps, not of all three
