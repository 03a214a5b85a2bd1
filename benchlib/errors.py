"""The project's own exceptions for bad input; their messages tell the user the fix."""
from __future__ import annotations


class InputError(ValueError):
    """Something the user gave us is wrong; the command line exits 2 with the message."""


class ParamsError(InputError):
    """A params file is wrong; the message says where, what is allowed and the fix."""


class WorkloadError(InputError):
    """The model, its weights, the device or the precision cannot be had as asked."""
