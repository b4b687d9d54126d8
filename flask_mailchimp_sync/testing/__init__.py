"""Helpers for testing with flask-mailchimp-sync, in this project and in host apps.

:class:`~.emulator.MailchimpEmulator` is a local, faithful stand-in for Mailchimp's
Marketing API v3; point ``MAILCHIMP_SYNC_API_URL`` at its ``api_url``.
"""

from __future__ import annotations

from .emulator import MailchimpEmulator
from .jobs import stop_jobs, wait_for_jobs

__all__ = ["MailchimpEmulator", "stop_jobs", "wait_for_jobs"]
