"""msgapi: a small, fast REST service for short messages."""

__version__ = "1.0.0"


def create_app(config=None):
    """The WSGI app (``waitress-serve --call msgapi:create_app``); see ``msgapi.app.create_app``."""
    from .app import create_app as _create_app

    return _create_app(config)


__all__ = ["__version__", "create_app"]
