"""Scoring agent branches in CI (`harness ci score`, `harness ci status`).

    gitwalk.py   the repository through git's plumbing: branches, merge base, commits, a file at a commit
    walk.py      the walk: each changed commit refused, cached or scored, decided against the last kept one
    model.py     what the walk found (CiReport, BranchResult, CommitResult) and the exit code it means
    report.py    JUnit XML, the markdown summary, terminal lines
    status.py    the table from stored results alone
"""
