"""The entrypoint tests' shared pytest fixtures (defined in entrypoint/testing.py), found by name."""

from tests.entrypoint.testing import launch, squid_available, workspace

__all__ = ["launch", "squid_available", "workspace"]
