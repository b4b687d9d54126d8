"""Run the emulator as a process: ``python -m flask_mailchimp_sync.testing.emulator``.

Prints one JSON line with the API URL and the keys of the accounts it holds, then
serves until interrupted. Arrange and inspect it over ``/_emulator/...``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from .faults import Faults
from .server import MailchimpEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of requests that fail")
    parser.add_argument("--account", default="Test Shop", help="name of the account to create")
    parser.add_argument("--api-key", default=None, help="its API key (default: a random one)")
    parser.add_argument("--audience", action="append", default=[], help="an audience to create")
    args = parser.parse_args(argv)

    faults = Faults(latency=args.latency, error_rate=args.error_rate)
    emulator = MailchimpEmulator(port=args.port, faults=faults).bind()
    account, audiences = emulator.add_account_with_audiences(
        args.account, *args.audience, api_key=args.api_key
    )
    print(
        json.dumps(
            {
                "api_url": emulator.api_url,
                "api_key": account.api_key,
                "audiences": {a.name: a.id for a in audiences},
            }
        ),
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        emulator.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
