"""The demo's Mailchimp: the project's emulator, with an account that looks lived-in."""

from __future__ import annotations

from dataclasses import dataclass

from flask_mailchimp_sync.testing import MailchimpEmulator
from flask_mailchimp_sync.testing.emulator import Audience

from .models import Customer, CustomerPreferences, db

#: Printed by the demo; only the local emulator knows it.
DEMO_API_KEY = "de305d5475b4431badb2eb6b9e546014-us6"


@dataclass
class DemoMailchimp:
    emulator: MailchimpEmulator
    api_key: str
    consignors: Audience
    customers: Audience

    def preload(self) -> None:
        """Members the shop did not put there (needs the shop's app context).

        A few shop customers who opted in at the till already unsubscribed in Mailchimp:
        a sync must report them as blocked, never subscribe them again. Two people signed
        up on a Mailchimp form and are not in the shop at all.
        """
        opted_in = db.session.execute(
            db.select(Customer.email)
            .join(CustomerPreferences)
            .where(CustomerPreferences.accepts_marketing.is_(True), Customer.email.like("%@%.%"))
            .order_by(Customer.id.desc())
            .limit(4)
        ).scalars()
        for email in opted_in:
            self.emulator.state.add_member(self.customers.id, email, "unsubscribed")
        for email in ("newsletter.fan@hearth.io", "walk.by@inkwell.org"):
            self.emulator.state.add_member(self.customers.id, email, "subscribed")


def start_demo_mailchimp() -> DemoMailchimp:
    emulator = MailchimpEmulator().start()
    account, (consignors, customers) = emulator.add_account_with_audiences(
        "Marigold Consignment", "Marigold Consignors", "Marigold Customers", api_key=DEMO_API_KEY
    )
    return DemoMailchimp(emulator, account.api_key, consignors, customers)
