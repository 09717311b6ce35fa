"""Errors that stop a run with a clear message (the CLI prints them without a traceback)."""


class SegoneError(Exception):
    """A failure the user can act on."""


class GateFailed(SegoneError):
    """A quality or volume gate failed: nothing may be published for this date."""


class LandingError(SegoneError):
    """The landing folder for a date is missing or unusable as a whole."""
