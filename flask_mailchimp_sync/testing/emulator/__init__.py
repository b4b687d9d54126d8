"""A local emulator of Mailchimp's Marketing API v3 (see :class:`MailchimpEmulator`)."""

from __future__ import annotations

from .entities import Account, Audience, Member
from .errors import ApiError
from .faults import KINDS as FAULT_KINDS
from .faults import Faults
from .server import MailchimpEmulator
from .state import EmulatorState

__all__ = [
    "FAULT_KINDS",
    "Account",
    "ApiError",
    "Audience",
    "EmulatorState",
    "Faults",
    "MailchimpEmulator",
    "Member",
]
