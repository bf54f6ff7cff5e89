"""A blocking function that sleeps for ``data["seconds"]``: runs in a worker thread."""

import time


def main(event):
    """Block, then return the number of seconds slept."""
    time.sleep(event["data"]["seconds"])
    return event["data"]["seconds"]
