"""Shared pytest setup for the Python suite. Keep it minimal: put fixtures in the test files."""
import os

# Tests draw figures but never show them: the non-interactive backend, set before any test
# module imports matplotlib.
os.environ["MPLBACKEND"] = "Agg"
