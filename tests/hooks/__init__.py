"""Tests of directory hooks, plugins, events and the dispatcher."""
