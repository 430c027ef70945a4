"""The fixtures of testing.py for the tests beside it (testing_test), found by name."""

from tests.entrypoint.testing import launch, squid_available, workspace

__all__ = ["launch", "squid_available", "workspace"]
