"""Raises, to check the code-1 failure reply."""


def _helper(message):
    raise ValueError(message)


def main(event):
    """Raise ValueError with the payload's ``message``."""
    _helper(event["data"]["message"])
