"""sessiongate: a chat-agent gateway whose sessions always end well."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sessiongate")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
