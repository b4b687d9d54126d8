"""The pages inside a host's own layout: its blocks, its variables, its flash styles."""

from __future__ import annotations

import pytest
from jinja2 import DictLoader

from flask_mailchimp_sync import ConfigurationError

from .helpers import make_host

PAGE = "/preferences/integrations/mailchimp/"

#: A Bootstrap-style layout whose blocks are not the extension's.
LAYOUT = """<!doctype html><html><head><title>{% block page_title %}Shop{% endblock %}</title>
{% block styles %}{% endblock %}</head><body>
<nav>{% for label, href in nav_items %}<a href="{{ href }}">{{ label }}</a>{% endfor %}</nav>
{% for category, message in get_flashed_messages(with_categories=true) %}
<div class="alert alert-{{ category }}">{{ message }}</div>{% endfor %}
<main>{% block main %}{% endblock %}</main></body></html>"""

#: The README's bridge: the extension's blocks inside the layout's own.
BRIDGE = """{% extends "layout.html" %}
{% block page_title %}{% block title %}{% endblock %}{% endblock %}
{% block main %}{% block content %}{% endblock %}{% endblock %}"""


@pytest.fixture
def host(tmp_path):
    app, db, mailchimp = make_host(tmp_path)
    app.config.update(TESTING=True, WTF_CSRF_ENABLED=False)
    app.jinja_loader = DictLoader({"layout.html": LAYOUT, "bridge.html": BRIDGE})  # type: ignore[assignment]
    mailchimp.authorize(lambda: True)
    mailchimp.init_app(app)
    with app.app_context():
        db.create_all()
    return app, mailchimp


def test_a_layout_without_the_blocks_fails_naming_them(host):
    app, _mailchimp = host
    app.config["MAILCHIMP_SYNC_BASE_TEMPLATE"] = "layout.html"
    with pytest.raises(ConfigurationError) as refused:
        app.test_client().get(PAGE)
    message = str(refused.value)
    assert "The layout 'layout.html' (MAILCHIMP_SYNC_BASE_TEMPLATE) has no block 'title' and " \
        "no block 'content', so the Mailchimp pages would render empty." in message  # fmt: skip
    assert "{% block title %}{% endblock %}" in message and "README" in message


@pytest.mark.parametrize(
    ("source", "missing"),
    [
        (  # the content bridged, the title forgotten
            '{% extends "layout.html" %}'
            "{% block main %}{% block content %}{% endblock %}{% endblock %}",
            "has no block 'title', so",
        ),
        (  # Jinja drops a top-level block its parents never render: an empty page
            '{% extends "layout.html" %}{% block title %}{% endblock %}'
            "{% block content %}{% endblock %}",
            "has no block 'title' and no block 'content'",
        ),
    ],
)
def test_a_bridge_that_does_not_reach_the_layouts_blocks_is_refused(host, source, missing):
    app, _mailchimp = host
    app.jinja_loader.mapping["half.html"] = source  # type: ignore[union-attr]
    app.config["MAILCHIMP_SYNC_BASE_TEMPLATE"] = "half.html"
    with pytest.raises(ConfigurationError, match=missing):
        app.test_client().get(PAGE)


def test_the_bridge_puts_the_page_into_the_layouts_blocks(host):
    app, mailchimp = host
    app.config["MAILCHIMP_SYNC_BASE_TEMPLATE"] = "bridge.html"

    @mailchimp.context_processor
    def menu():
        return {"nav_items": [("Orders", "/orders"), ("Mailchimp", PAGE)]}

    page = app.test_client().get(PAGE).get_data(as_text=True)
    assert "<title>Mailchimp · Integrations</title>" in page
    main = page.split("<main>")[1]
    assert 'id="mailchimp-sync-title">Mailchimp</h1>' in main and "Not connected" in main
    assert '<a href="/orders">Orders</a>' in page  # the host's menu, from its own variable


def test_an_unknown_layout_name_says_which_setting(host):
    app, _mailchimp = host
    app.config["MAILCHIMP_SYNC_BASE_TEMPLATE"] = "layuot.html"
    with pytest.raises(ConfigurationError, match=r"MAILCHIMP_SYNC_BASE_TEMPLATE is 'layuot\.html'"):
        app.test_client().get(PAGE)


def test_flash_categories_default_to_bootstraps_and_can_be_renamed(host):
    app, _mailchimp = host
    app.config["MAILCHIMP_SYNC_BASE_TEMPLATE"] = "bridge.html"
    client = app.test_client()
    client.post(PAGE + "disconnect")  # not connected: nothing to do, and it says so
    assert '<div class="alert alert-info">Mailchimp is not connected' in client.get(PAGE).get_data(
        True
    )
    client.post(PAGE + "sync")  # not connected: refused with a warning
    assert '<div class="alert alert-warning">Connect a Mailchimp account first.' in client.get(
        PAGE
    ).get_data(True)

    app.config["MAILCHIMP_SYNC_FLASH_CATEGORIES"] = {"warning": "notice"}
    client.post(PAGE + "sync")
    assert '<div class="alert alert-notice">Connect' in client.get(PAGE).get_data(True)


def test_the_default_layout_shows_the_category(host):
    app, _mailchimp = host
    client = app.test_client()
    client.post(PAGE + "disconnect")
    assert '<p class="flash flash-info" role="status">Mailchimp is not connected' in client.get(
        PAGE
    ).get_data(True)
