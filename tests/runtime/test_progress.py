from __future__ import annotations

import io

from rich.console import Console

from runtime.progress import RunProgress


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
