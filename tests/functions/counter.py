"""Counts its calls in module-level state, to show that modules stay warm between jobs."""

_calls = 0


def main(event):
    """Return how many times this module's main() has been called."""
    global _calls
    _calls += 1
    return _calls
