"""The sync engine: the shop's contacts, through the consent rules, into Mailchimp.

- :mod:`.planner`: the consent rules, pure; :mod:`.members`: a member and its outcomes.
- :mod:`.staging`, :mod:`.select`: the shop's contacts, staged and chosen in the database.
- :mod:`.ledger`: what the shop knows of each member, and which contact is which.
- :mod:`.pull`: Mailchimp's side, read; :mod:`.shop`: Mailchimp's word written back.
- :mod:`.sender`: requests out, answers in; :mod:`.recorder`: outcomes recorded.
- :mod:`.runner`: a Sync or Preview; :mod:`.delivery`: a real-time delivery.
- :mod:`.outbox`, :mod:`.locks`: the outbox's bookkeeping, one sync per audience.
"""
