"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

from decathlon.generate import SuitePaths, generate_suite


@pytest.fixture(scope="session")
def mini_suite(tmp_path_factory: pytest.TempPathFactory) -> SuitePaths:
    """The generated suite, written once per test session into a pytest temporary folder.

    Generated with the default parameters, so it matches ``decathlon.domains.suite_domains("mini")``
    (class counts, split sizes, 36 px images). Tests must not modify it.
    """
    return generate_suite(tmp_path_factory.mktemp("mini-suite"), seed=0)
