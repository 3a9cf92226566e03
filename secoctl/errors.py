"""Errors a user can act on: printed as one line each, exit code 2, never a traceback."""


class UserError(Exception):
    exit_code = 2
