"""Blinker signals for hosts. The sender is always the real Flask app.

::

    from flask_mailchimp_sync.signals import member_archived

    @member_archived.connect_via(app)
    def note(app, audience_id, email):
        app.logger.info("%s archived in Mailchimp", email)
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A sync, preview or real-time delivery started. Sender: the app; kwargs: ``run``.
sync_started = _signals.signal("mailchimp-sync-started")

#: A sync, preview or real-time delivery finished (or failed). Sender: the app; kwargs: ``run``.
sync_finished = _signals.signal("mailchimp-sync-finished")

#: A member was added to or updated in Mailchimp. Sender: the app; kwargs:
#: ``audience_id``, ``email``, ``status`` (Mailchimp's, e.g. ``subscribed``).
member_upserted = _signals.signal("mailchimp-member-upserted")

#: A member was archived in Mailchimp because the shop's flag went off or the contact
#: went away. Sender: the app; kwargs: ``audience_id``, ``email``.
member_archived = _signals.signal("mailchimp-member-archived")

#: Real-time changes could not be delivered and will be retried. Sender: the app;
#: kwargs: ``error`` (a sentence), ``pending`` (changes still waiting).
delivery_failed = _signals.signal("mailchimp-delivery-failed")

#: Someone unsubscribed or bounced in Mailchimp (by webhook or reconcile) and the
#: shop's flag was turned off. Sender: the app; kwargs: ``audience_id``, ``email``,
#: ``status`` (``unsubscribed`` or ``cleaned``), ``contacts`` (flags turned off).
unsubscribe_received = _signals.signal("mailchimp-unsubscribe-received")
