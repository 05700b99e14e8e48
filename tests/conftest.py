"""Shared pytest configuration of the test suite: the markers the tests use beyond pyproject.toml's."""

from __future__ import annotations


def pytest_configure(config) -> None:
    """Register ``notebook_runs``: ``@pytest.mark.notebook_runs("theory_checks", ...)`` names the notebook runs
    (``notebooks/run_all.py``'s RUNS) a test of tests/test_notebooks.py reads, so that the session's runs
    execute together, several at once, before the first of those tests."""
    config.addinivalue_line(
        "markers", "notebook_runs(*names): the notebook runs the test reads (executed once per session)")
