from __future__ import annotations


def test_connect_with_audiences_then_status_then_disconnect(runner, mailchimp_account, emulator):
    result = runner.invoke(
        args=[
            "mailchimp", "connect",
            "--api-key", mailchimp_account.api_key,
            "--consignor-audience", mailchimp_account.customers.id,
            "--customer-audience", mailchimp_account.customers.id,
        ]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Connected to Marigold Consignment (us6)." in result.output
    status = runner.invoke(args=["mailchimp", "status"]).output
    assert (
        f"consignor (Consignor): audience Customers [{mailchimp_account.customers.id}], tag 'Consignor'"
        in status
    )
    assert (
        f"customer (Customer): audience Customers [{mailchimp_account.customers.id}], tag 'Customer'"
        in status
    )
    assert "Last sync: never" in status
    assert mailchimp_account.api_key.split("-")[0] not in status

    assert runner.invoke(args=["mailchimp", "disconnect"]).exit_code == 0
    assert "Mailchimp: not connected." in runner.invoke(args=["mailchimp", "status"]).output


def test_malformed_key_fails_with_the_forms_message_and_no_request(runner, emulator):
    result = runner.invoke(args=["mailchimp", "connect", "--api-key", "abc-us6"])
    assert result.exit_code != 0
    assert "32 hexadecimal characters, a dash and the data center" in result.output
    assert emulator.state.requests == []


def test_rejected_key_fails(runner, mailchimp_account):
    result = runner.invoke(args=["mailchimp", "connect", "--api-key", "e" * 32 + "-us6"])
    assert result.exit_code != 0 and "Mailchimp rejected this API key" in result.output
    assert "not connected" in runner.invoke(args=["mailchimp", "status"]).output


def test_unknown_audience_fails_and_saves_nothing(runner, mailchimp_account):
    result = runner.invoke(
        args=[
            "mailchimp",
            "connect",
            "--api-key",
            mailchimp_account.api_key,
            "--audience",
            "customer=qqqqqqqqqq",
        ]
    )
    assert result.exit_code != 0
    assert (
        "customer audience: This Mailchimp account has no audience with the ID 'qqqqqqqqqq'"
        in result.output
    )
    assert "not connected" in runner.invoke(args=["mailchimp", "status"]).output


def test_unknown_role_is_a_usage_error(runner, mailchimp_account):
    result = runner.invoke(
        args=[
            "mailchimp",
            "connect",
            "--api-key",
            mailchimp_account.api_key,
            "--audience",
            "vendor=abc",
        ]
    )
    assert result.exit_code == 2 and "No contact source has the role vendor" in result.output


def test_key_from_the_environment(runner, mailchimp_account):
    result = runner.invoke(
        args=["mailchimp", "connect"], env={"MAILCHIMP_API_KEY": mailchimp_account.api_key}
    )
    assert result.exit_code == 0, result.output


def test_audience_must_be_role_equals_id(runner, mailchimp_account):
    result = runner.invoke(
        args=["mailchimp", "connect", "--api-key", mailchimp_account.api_key, "--audience", "abc"]
    )
    assert result.exit_code == 2
    assert "'abc' is not ROLE=ID; write e.g. customer=a1b2c3d4e5." in result.output


def test_audience_for_any_role_and_the_role_flags_as_aliases(runner, mailchimp_account):
    result = runner.invoke(
        args=[
            "mailchimp", "connect", "--api-key", mailchimp_account.api_key,
            "--audience", f"customer={mailchimp_account.customers.id}",
            "--consignor-audience", mailchimp_account.consignors.id,
        ]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"  consignor: Consignors [{mailchimp_account.consignors.id}]" in result.output
    assert f"  customer: Customers [{mailchimp_account.customers.id}]" in result.output
    assert "Audiences in this account" not in result.output


def test_connect_without_audiences_lists_the_accounts_audiences(runner, mailchimp_account):
    result = runner.invoke(args=["mailchimp", "connect", "--api-key", mailchimp_account.api_key])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-4:] == [
        "Audiences in this account:",
        f"  {mailchimp_account.consignors.id}  Consignors (0 members)",
        f"  {mailchimp_account.customers.id}  Customers (0 members)",
        "Choose them with: flask mailchimp connect --audience consignor=ID "
        "--audience customer=ID (or on the Mailchimp page).",
    ]
