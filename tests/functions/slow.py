"""An async function that sleeps for ``data["seconds"]``, to test time limits and quotas."""

import anyio


async def main(event):
    """Sleep, then return the number of seconds slept."""
    await anyio.sleep(event["data"]["seconds"])
    return event["data"]["seconds"]
