"""The failures a user can act on: a bad input, a store or server that cannot be used, a
missing display. Every module raises its own subclass with a one-line message that names the
thing; the CLI prints it as one `error:` line and exits 2."""


class UserError(Exception):
    """A failure the user can act on; the message is one line naming the thing."""
