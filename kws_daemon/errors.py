"""The one exception type whose message is shown to the user as a one-line error."""


class KwsError(Exception):
    """A problem the user can fix (bad config, unreadable file, missing device); no traceback."""

    exit_code = 1


class ConfigError(KwsError):
    exit_code = 2


class UsageError(KwsError):
    """A command-line argument the command cannot take."""

    exit_code = 2
