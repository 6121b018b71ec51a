"""The one exception type a user can cause.

Every error that comes from bad input (a missing file, a corrupt model, a cfg with a bad value,
a fold that cannot be done) is a :class:`FoldkitError` whose message names the file, the place
(line, node, layer) and what is wrong. The CLI prints it on one line and exits 2; anything else
is a bug and keeps its traceback.
"""


class FoldkitError(Exception):
    """An error caused by the user's input, with a message fit to print on one line."""
