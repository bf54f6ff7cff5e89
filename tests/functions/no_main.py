"""A module without ``main``: invoking it is a failure reply, not a 404."""

VALUE = 1
