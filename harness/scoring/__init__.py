"""Scoring: everything that turns val_bpb numbers into comparisons, decisions and rankings.

- ``stats``       Welch's t-test in pure Python, Student's t CDF, sample summaries (``welch``, ``summarize``)
- ``decision``    the keep/discard rule of a submission against its reference (``keep_or_discard``)
- ``baselines``   the per-class baselines file: load, save, merge, add samples (``Baselines``)
- ``normalize``   a result against its own class's baseline: Δ, z, relative change, speed factor
- ``leaderboard`` grouping runs by submission (and class) and ranking them (``Row``, ``rank``, ``best_by_mean``);
                  ``harness.store.ResultStore`` queries its index and hands the rows to it

Nothing here touches a GPU, a container or the result store's files: plain numbers and rows in, verdicts out.
"""
