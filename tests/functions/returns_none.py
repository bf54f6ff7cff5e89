"""Returns None, which the platform sends as ``"data": null``."""


def main(event):
    """Return nothing."""
