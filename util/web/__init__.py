"""The page for people (a Blueprint): ``/diagnose``, its templates and static files."""

from util.web.pages import web

__all__ = ["web"]
