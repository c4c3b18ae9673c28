"""The OpenViking provider against the real OpenViking server."""
