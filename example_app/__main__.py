"""The demo: ``python -m example_app``.

Creates and seeds the shop's database, starts a local Mailchimp emulator with a demo
account (unless ``MAILCHIMP_SYNC_API_URL`` points somewhere already), and serves the
shop on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os

from flask_mailchimp_sync import RedactSecrets

from . import create_app
from .demo_mailchimp import start_demo_mailchimp
from .models import db
from .seed import DEMO_STAFF_EMAIL, DEMO_STAFF_PASSWORD, seed


def main() -> None:
    port = int(os.environ.get("PORT", "5000"))
    api_url = os.environ.get("MAILCHIMP_SYNC_API_URL")
    demo = None if api_url else start_demo_mailchimp()
    if demo is not None:
        api_url = demo.emulator.api_url
        key_line = f"{demo.api_key}  (a local Mailchimp emulator at {demo.emulator.url})"
    else:
        key_line = f"a key for the Mailchimp API at {api_url}"

    app = create_app({"MAILCHIMP_SYNC_API_URL": api_url})
    with app.app_context():
        if demo is not None:
            # The emulator starts empty each time, so the shop starts afresh with it.
            db.drop_all()
        db.create_all()
        seed()
        if demo is not None:
            demo.preload()

    print(
        "\n  Marigold Consignment is running.\n"
        f"  Open:          http://127.0.0.1:{port}/\n"
        f"  Staff login:   {DEMO_STAFF_EMAIL} / {DEMO_STAFF_PASSWORD}\n"
        f"  Mailchimp key: {key_line}\n",
        flush=True,
    )
    # The server's request log shows the webhook's URL, secret included: redact it.
    logging.getLogger("werkzeug").addFilter(RedactSecrets())
    app.run(host="127.0.0.1", port=port, use_reloader=False)


if __name__ == "__main__":
    main()
