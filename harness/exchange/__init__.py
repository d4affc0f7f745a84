"""Comparing results across labs: signed bundles (bundle.py), lab keys (keys.py), import (importer.py),
where other labs' runs are kept (labs.py)."""
