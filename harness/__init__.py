"""harness: a containerized, reproducible benchmark harness for autoresearch-style train.py candidates."""

__version__ = "0.1.0"
