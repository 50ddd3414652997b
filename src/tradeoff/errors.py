"""Errors the CLI prints on one line: bad input a user can fix (`UserError`, exit code 2), and
a run that could not go on although its input was good (`RunFailed`, exit code 1)."""


class UserError(Exception):
    """Bad input: an unknown name, a malformed file, an unreachable server.

    The message names the problem and what would be valid, in one line.
    """


class PromptRefused(ValueError):
    """A model's chat template refuses a conversation (it calls `raise_exception`, as Mistral's
    does for a system turn): the request's to mend, not a failure of the model (`serve`: 400)."""


class RunFailed(Exception):
    """A run stopped by a failure that is not its input's (a Ray worker lost for good): the
    message says what failed and how to continue (what completed is stored)."""
