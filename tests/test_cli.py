from __future__ import annotations

KEY = "0123456789abcdef0123456789abcdef-us6"


def test_status_when_nothing_is_connected(runner):
    result = runner.invoke(args=["mailchimp", "status"])
    assert result.exit_code == 0, result.output
    assert "Mailchimp: not connected." in result.output
    assert "consignor (Consignor): no audience chosen" in result.output
    assert "customer (Customer): no audience chosen" in result.output


def test_status_names_the_account_and_audiences_but_never_the_key(app, db, runner):
    from example_app import mailchimp

    store = mailchimp.settings_store()
    store.save_account(KEY, account_id="acc1", account_name="Marigold Consignment")
    store.set_audience("customer", "a1b2c3d4e5", name="Marigold Customers", tag="Customer")
    db.session.commit()
    result = runner.invoke(args=["mailchimp", "status"])
    assert result.exit_code == 0, result.output
    assert "connected to Marigold Consignment (us6), key ••••-us6" in result.output
    assert "customer (Customer): audience Marigold Customers [a1b2c3d4e5]" in result.output
    assert "consignor (Consignor): no audience chosen" in result.output
    assert KEY.split("-")[0] not in result.output


def test_set_audience_replaces_and_removes(app, db):
    from example_app import mailchimp

    store = mailchimp.settings_store()
    store.set_audience("customer", "aaaaaaaaaa", name="One")
    store.set_audience("customer", "bbbbbbbbbb", name="Two")
    db.session.commit()
    assert [(a.role, a.audience_id) for a in store.get().audiences] == [("customer", "bbbbbbbbbb")]
    store.set_audience("customer", None)
    db.session.commit()
    assert store.get().audiences == []
