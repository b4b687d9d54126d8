"""What the extension lets into the logs: no member address, name or secret at INFO.

mailchimp3 logs every request it makes at INFO, with its JSON body: member addresses and
names, and the webhook URL with its secret. :func:`setup` (called by ``init_app``) sets
that logger to WARNING, unless the host configured it (a level or a handler of its own).
The extension's own log lines pass through :class:`RedactSecrets`; a host may add the
same filter to other loggers, such as its server's access log, which records the
webhook's URL.
"""

from __future__ import annotations

import logging
import re

MAILCHIMP3_LOGGERS = ("mailchimp3", "mailchimp3.client")
PACKAGE = __name__.rpartition(".")[0]

_API_KEY = re.compile(r"\b[0-9a-f]{32}-(us[0-9]{1,3})\b")
_WEBHOOK_SECRET = re.compile(r"(/webhook/)[A-Za-z0-9_-]+")
#: The local part of an address (the domain says little about a person, and helps).
_LOCAL_PART = re.compile(r"[^\s@<>()\[\],;:'\"/]+@(?=[^\s@]+\.)")


def redact(text: str) -> str:
    """*text* without API keys, webhook secrets or the local parts of addresses."""
    text = _API_KEY.sub(r"••••-\1", text)
    text = _WEBHOOK_SECRET.sub(r"\1••••", text)
    return _LOCAL_PART.sub("•••@", text)


class RedactSecrets(logging.Filter):
    """A logging filter that passes every record, with secrets and addresses redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if redact(message) != message:
            record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text: the traceback is redacted once, here.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def setup() -> None:
    """Quiet mailchimp3 unless the host configured it; redact the extension's own lines."""
    if not any(_configured(logging.getLogger(name)) for name in MAILCHIMP3_LOGGERS):
        logging.getLogger(MAILCHIMP3_LOGGERS[-1]).setLevel(logging.WARNING)
    names = [n for n in logging.root.manager.loggerDict if n.startswith(f"{PACKAGE}.")]
    for name in [PACKAGE, *names]:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


def _configured(logger: logging.Logger) -> bool:
    return logger.level != logging.NOTSET or bool(logger.handlers)
