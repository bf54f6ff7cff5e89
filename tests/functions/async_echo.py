"""An ``async def main`` that returns the event, to check coroutine functions run."""

import anyio.lowlevel


async def main(event):
    """Return *event* after yielding to the event loop once."""
    await anyio.lowlevel.checkpoint()
    return event
