"""kws-daemon: always-on keyword spotting for Linux."""

__version__ = "0.1.0"
