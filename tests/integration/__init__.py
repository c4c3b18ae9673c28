"""Tests against real external servers."""
