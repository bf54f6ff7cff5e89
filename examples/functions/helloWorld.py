"""The platform's sample cloud function, in Python: greets the caller by name.

Invoke it with ``{"function_name": "helloWorld", "data": {"name": "MinApp"}}``; the reply's
``data`` is ``"hello MinApp"``.
"""

from typing import Any


def main(event: dict[str, Any]) -> str:
    """Return ``"hello <name>"`` for ``event["data"]["name"]``."""
    return f"hello {event['data']['name']}"
