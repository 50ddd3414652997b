"""Errors a user can fix. The CLI prints their message on one line and exits with code 2."""


class UserError(Exception):
    """Bad input: an unknown name, a malformed file, an unreachable server.

    The message names the problem and what would be valid, in one line.
    """
