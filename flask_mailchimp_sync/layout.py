"""The host's layout around the extension's pages: its blocks, its context, its messages.

The pages extend ``MAILCHIMP_SYNC_BASE_TEMPLATE`` and fill its ``title`` and ``content``
blocks. Jinja silently drops a block its layout does not render, so a layout with other
block names would give staff an empty page: :func:`check_layout` refuses it instead,
naming the missing blocks and the bridge template that fixes it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flask import current_app, flash
from jinja2 import Environment, TemplateNotFound, nodes

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .extension import MailchimpSync

#: The blocks of the host's layout the pages fill.
REQUIRED_BLOCKS = ("title", "content")

#: Flash categories by kind of message; these are the names Bootstrap's alerts use.
DEFAULT_FLASH_CATEGORIES = {
    "success": "success",
    "info": "info",
    "warning": "warning",
    "error": "danger",
}


def template_context(extension: MailchimpSync) -> dict[str, Any]:
    """What the pages' templates (and the host's layout around them) see."""
    base = current_app.config["MAILCHIMP_SYNC_BASE_TEMPLATE"]
    check_layout(current_app.jinja_env, base)
    context: dict[str, Any] = {}
    for processor in extension.context_processors:
        context.update(processor() or {})
    context["mailchimp_sync_base"] = base
    return context


def flash_message(message: str, kind: str) -> None:
    """Flash *message* in the host's category for *kind* (success, info, warning, error)."""
    categories = {**DEFAULT_FLASH_CATEGORIES, **_configured_categories()}
    flash(message, categories[kind])


def _configured_categories() -> dict[str, str]:
    return dict(current_app.config.get("MAILCHIMP_SYNC_FLASH_CATEGORIES") or {})


#: Layouts found complete, per Jinja environment: name -> the template object checked.
_checked: weakref.WeakKeyDictionary[Environment, dict[str, Any]] = weakref.WeakKeyDictionary()


def check_layout(env: Environment, name: str) -> None:
    """Raise :class:`ConfigurationError` when the layout *name* renders no ``title`` or
    ``content`` block. Checked again only when Jinja reloads the template."""
    try:
        template = env.get_template(name)
    except TemplateNotFound:
        raise ConfigurationError(
            f"MAILCHIMP_SYNC_BASE_TEMPLATE is {name!r}, but no template folder of the app "
            "has it. Set it to your layout's template name, as render_template knows it."
        ) from None
    checked = _checked.setdefault(env, {})
    if checked.get(name) is template:
        return
    rendered = rendered_blocks(env, name)
    missing = [block for block in REQUIRED_BLOCKS if rendered is not None and block not in rendered]
    if missing:
        raise ConfigurationError(_missing_blocks_message(name, missing))
    checked[name] = template


def _missing_blocks_message(name: str, missing: list[str]) -> str:
    return (
        f"The layout {name!r} (MAILCHIMP_SYNC_BASE_TEMPLATE) has no block "
        + " and no block ".join(repr(block) for block in missing)
        + ", so the Mailchimp pages would render empty. Add the block(s) to it, or point "
        "MAILCHIMP_SYNC_BASE_TEMPLATE at a bridge template that puts them into your "
        f"layout's own blocks:\n  {{% extends {name!r} %}}\n"
        "  {% block your_title_block %}{% block title %}{% endblock %}{% endblock %}\n"
        "  {% block your_main_block %}{% block content %}{% endblock %}{% endblock %}\n"
        "(README: 'Your layout')."
    )


def rendered_blocks(env: Environment, name: str) -> set[str] | None:
    """The blocks a page extending the template *name* can fill: those its chain of
    layouts actually renders. ``None`` when the chain cannot be read statically (an
    ``{% extends %}`` of a variable): then nothing is refused."""
    chain = []  # the template, its parent, ... up to the root layout
    while True:
        source, _filename, _uptodate = env.loader.get_source(env, name)  # type: ignore[union-attr]
        tree = env.parse(source, name)
        chain.append(tree)
        extends = tree.find(nodes.Extends)
        if extends is None:
            break
        if not isinstance(extends.template, nodes.Const):
            return None
        name = extends.template.value
    # A block renders with its most derived definition, and so do the blocks inside it.
    definitions = {}
    for tree in reversed(chain):
        definitions.update({block.name: block for block in tree.find_all(nodes.Block)})
    found: set[str] = set()
    waiting = list(_outer_blocks(chain[-1]))
    while waiting:
        block = waiting.pop()
        if block.name not in found:
            found.add(block.name)
            waiting.extend(_outer_blocks(definitions[block.name]))
    return found


def _outer_blocks(node: nodes.Node) -> Iterator[nodes.Block]:
    """The blocks inside *node* that no other block inside it encloses."""
    for child in node.iter_child_nodes():
        if isinstance(child, nodes.Block):
            yield child
        else:
            yield from _outer_blocks(child)
