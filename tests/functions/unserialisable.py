"""Returns a value JSON cannot encode."""


def main(event):
    """Return a set."""
    return {1, 2, 3}
