"""User-facing errors: one line, naming the field or file and the fix.

The CLI prints these without a traceback; anything else is a bug.
"""


class MinisirError(Exception):
    """A problem the user can fix (bad recipe, missing file, corrupt archive...)."""


class RecipeError(MinisirError):
    """The recipe is invalid; the message names the field path."""


class ModelNotFound(MinisirError):
    """A model or embedder could not be resolved; the message says what to install or pass."""


class ArchiveError(MinisirError):
    """The archive is unusable or disagrees with the recipe; nothing was written."""


class ContextOverflow(MinisirError):
    """A prompt does not fit the sampler's context window."""
