"""Errors shared by every layer.

Owns :class:`UserError`, the one exception that means "the user's input is wrong": every command
catches it at the top and prints it as one line (exit 2), never as a traceback. It lives at the
bottom of the package so that any module can raise it without importing the command line.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (config, arguments): reported as one line, exit 2."""
