"""Test and benchmark support for the entrypoint package (never shipped in the image)."""
