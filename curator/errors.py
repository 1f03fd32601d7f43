"""Mistakes a user can fix: the command line prints them in one message, without a traceback."""


class UserError(Exception):
    """Base of every error whose message tells the user what to change."""


class ConfigError(UserError, ValueError):
    """A setting that cannot work: unknown label, column, family or cluster kind."""


class InputNotFoundError(UserError, FileNotFoundError):
    """dataset.path names nothing readable."""


class SettingTypeError(UserError, TypeError):
    """A Python API argument of the wrong type (the message names the argument and what it takes)."""
