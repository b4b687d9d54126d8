from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_mailchimp_sync import ConfigurationError, Contact, MailchimpSync, MergeField
from flask_mailchimp_sync.sources import ContactSource


@pytest.fixture
def host(tmp_path):
    """A host with three differently shaped contact models."""
    db = SQLAlchemy()

    class Consignor(db.Model):  # one full-name column, flag on the row
        id = sa.Column(sa.Integer, primary_key=True)
        name = sa.Column(sa.String(200))
        email = sa.Column(sa.String(255))
        opted_in = sa.Column(sa.Boolean)
        phone = sa.Column(sa.String(40))

    class Customer(db.Model):  # first/last names, flag on a related row
        id = sa.Column(sa.Integer, primary_key=True)
        first = sa.Column(sa.String(100))
        last = sa.Column(sa.String(100))
        email = sa.Column(sa.String(255))
        # By class, not name: a later test configuring every mapper must not need to find
        # this Prefs by name once it has gone.
        prefs = db.relationship(lambda: Prefs, uselist=False)

    class Prefs(db.Model):
        customer_id = sa.Column(sa.ForeignKey("customer.id"), primary_key=True)
        marketing = sa.Column(sa.Boolean, nullable=False)

    class Buyer(db.Model):  # string primary key, no names at all
        code = sa.Column(sa.String(20), primary_key=True)
        mail = sa.Column(sa.String(255))

    app = Flask("sources")
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path}/s.db"
    db.init_app(app)
    with app.app_context():
        db.create_all()
        yield db, Consignor, Customer, Prefs, Buyer


def contacts(source: ContactSource, db, chunk_size: int = 1000) -> list[Contact]:
    return list(source.iter_contacts(db.session, chunk_size=chunk_size))


def test_single_full_name_column_split_by_callables(host):
    db, Consignor, *_ = host
    db.session.add_all(
        [
            Consignor(name="Ada Lovelace", email="ada@mailbox.shop", opted_in=True, phone="555"),
            Consignor(name="Cher", email=" CHER@Mailbox.shop ", opted_in=False),
        ]
    )
    db.session.commit()
    source = MailchimpSync(db=db).add_source(
        Consignor,
        role="consignor",
        email="email",
        marketing="opted_in",
        first_name=lambda c: c.name.partition(" ")[0],
        last_name=lambda c: c.name.partition(" ")[2],
        merge_fields=lambda c: {"PHONE": c.phone or ""},
    )
    ada, cher = contacts(source, db)
    assert ada == Contact(
        source="consignor:consignor",
        role="consignor",
        key="1",
        email="ada@mailbox.shop",
        first_name="Ada",
        last_name="Lovelace",
        marketing=True,
        merge_fields={"PHONE": "555"},
    )
    assert (cher.first_name, cher.last_name, cher.marketing) == ("Cher", None, False)
    assert cher.email == "CHER@Mailbox.shop"  # trimmed; normalising is the sync's job


def test_flag_on_a_related_table_by_attribute_path(host):
    db, _c, Customer, Prefs, _b = host
    db.session.add_all(
        [
            Customer(first="Ben", last="Baker", email="ben@x.shop", prefs=Prefs(marketing=True)),
            Customer(first="Cleo", last="Chen", email="cleo@x.shop", prefs=Prefs(marketing=False)),
            Customer(first="Dev", last="Diaz", email="dev@x.shop"),  # no preferences row yet
        ]
    )
    db.session.commit()
    source = MailchimpSync(db=db).add_source(
        Customer,
        role="customer",
        email="email",
        marketing="prefs.marketing",
        first_name="first",
        last_name="last",
    )
    assert [(c.first_name, c.marketing) for c in contacts(source, db)] == [
        ("Ben", True),
        ("Cleo", False),
        ("Dev", False),  # no row is not consent
    ]


def test_flag_on_a_related_table_by_correlated_subquery(host):
    db, _c, Customer, Prefs, _b = host
    db.session.add_all(
        [
            Customer(email="a@x.shop", prefs=Prefs(marketing=True)),
            Customer(email="b@x.shop", prefs=Prefs(marketing=False)),
        ]
    )
    db.session.commit()
    flag = sa.select(Prefs.marketing).where(Prefs.customer_id == Customer.id).scalar_subquery()
    source = MailchimpSync(db=db).add_source(
        Customer, role="customer", email=sa.func.upper(Customer.email), marketing=flag
    )
    assert [(c.email, c.marketing) for c in contacts(source, db)] == [
        ("A@X.SHOP", True),
        ("B@X.SHOP", False),
    ]


def test_string_primary_keys_and_no_names(host):
    db, *_, Buyer = host
    db.session.add_all([Buyer(code="b-2", mail="two@x.shop"), Buyer(code="b-1", mail="")])
    db.session.commit()
    source = MailchimpSync(db=db).add_source(
        Buyer, role="buyer", email="mail", marketing=lambda buyer: True
    )
    assert [(c.key, c.email, c.first_name) for c in contacts(source, db)] == [
        ("b-1", None, None),
        ("b-2", "two@x.shop", None),
    ]


@pytest.mark.parametrize("flag", [None, 0, "", "yes", "true", 2, 0.0])
def test_only_an_explicit_true_is_consent(host, flag):
    db, Consignor, *_ = host
    db.session.add(Consignor(name="X", email="x@x.shop"))
    db.session.commit()
    source = MailchimpSync(db=db).add_source(
        Consignor, role="consignor", email="email", marketing=lambda c: flag
    )
    assert contacts(source, db)[0].marketing is False


def test_streams_in_chunks_with_one_query_per_chunk(host):
    db, _c, Customer, Prefs, _b = host
    db.session.add_all(
        Customer(email=f"c{n}@x.shop", prefs=Prefs(marketing=n % 2 == 0)) for n in range(25)
    )
    db.session.commit()
    source = MailchimpSync(db=db).add_source(
        Customer, role="customer", email="email", marketing="prefs.marketing"
    )
    statements: list[str] = []
    sa.event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    found = contacts(source, db, chunk_size=10)
    assert [c.key for c in found] == [str(n) for n in range(1, 26)]
    assert sum(c.marketing for c in found) == 13
    # three chunks, each one query: each flag is looked up by key in the same query
    assert len(statements) == 3 and "FROM prefs" in statements[0]


def test_a_callable_field_reads_instances_with_their_related_rows_per_chunk(host):
    db, _c, Customer, Prefs, _b = host
    db.session.add_all(
        Customer(email=f"c{n}@x.shop", prefs=Prefs(marketing=True)) for n in range(25)
    )
    db.session.commit()
    source = MailchimpSync(db=db).add_source(
        Customer, role="customer", email="email", marketing="prefs.marketing",
        first_name=lambda customer: customer.email.split("@")[0],
    )  # fmt: skip
    statements: list[str] = []
    sa.event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    found = contacts(source, db, chunk_size=10)
    assert [c.first_name for c in found][:2] == ["c0", "c1"]
    # three chunks, each one query for customers and one for their preferences
    assert len(statements) == 6


@pytest.mark.parametrize(
    "fields",
    [
        {"email": "email", "marketing": "prefs.marketing", "first_name": "first"},
        {"email": "email", "marketing": "prefs.marketing", "last_name": "last"},
    ],
)
def test_plain_columns_read_what_the_instances_hold(host, fields):
    """Read as columns or through instances, every contact is the same (a missing
    related row reads as no consent either way)."""
    db, _c, Customer, Prefs, _b = host
    db.session.add_all(
        [Customer(first=" Ada ", last="", email="ada@x.shop", prefs=Prefs(marketing=True)),
         Customer(first=None, last="Baker", email=" BEN@x.shop", prefs=None),
         Customer(first="Cleo", last="Chen", email=None, prefs=Prefs(marketing=False))]
    )  # fmt: skip
    db.session.commit()
    source = MailchimpSync(db=db).add_source(Customer, role="customer", **fields)
    assert source._plain_query() is not None
    as_columns = contacts(source, db)
    source._plain = False  # what reading the instances gives
    db.session.expire_all()
    assert contacts(source, db) == as_columns and len(as_columns) == 3
    assert source.contacts_by_keys(db.session, ["2", "9"]) == [as_columns[1]]


def test_typed_merge_fields_read_as_columns_hold_what_the_instances_hold(host):
    """Typed merge fields from columns, a related column or SQL are read as plain
    columns and formatted as when read through the instances (notes included)."""
    db, _c, Customer, Prefs, _b = host
    db.session.add_all(
        [Customer(first="Ada", last="A" * 300, email="ada@x.shop", prefs=Prefs(marketing=True)),
         Customer(first=None, last="Baker", email="ben@x.shop", prefs=None)]
    )  # fmt: skip
    db.session.commit()
    source = MailchimpSync(db=db).add_source(
        Customer, role="customer", email="email", marketing="prefs.marketing",
        merge_fields={
            "INITIAL": MergeField("Initial", "text", sa.func.substr(Customer.first, 1, 1)),
            "OPTIN": MergeField("Opted in", "number", "prefs.marketing"),
            "SURNAME": MergeField("Surname", "text", "last"),
        },
    )  # fmt: skip
    assert source._plain_query() is not None
    as_columns = contacts(source, db)
    source._plain = False  # what reading the instances gives
    db.session.expire_all()
    assert contacts(source, db) == as_columns
    ada = as_columns[0]
    assert ada.merge_fields["INITIAL"] == "A" and len(ada.merge_fields["SURNAME"]) == 255
    assert ada.notes == ("SURNAME was cut to Mailchimp's limit of 255 characters.",)


@pytest.mark.parametrize(
    "extra",
    [
        {"tags": lambda c: {"Customer"}},
        {"merge_fields": lambda c: {"NICK": c.first}},
        {"merge_fields": {"NICK": MergeField("Nickname", "text", lambda c: c.first)}},
    ],
)
def test_computed_tags_and_callables_are_read_through_the_instances(host, extra):
    db, _c, Customer, _p, _b = host
    source = MailchimpSync(db=db).add_source(
        Customer, role="customer", email="email", marketing="prefs.marketing", **extra
    )
    assert source._plain_query() is None


def test_get_contact_reads_one_row(host):
    db, Consignor, *_ = host
    db.session.add(Consignor(name="Ada", email="ada@x.shop", opted_in=True))
    db.session.commit()
    source = MailchimpSync(db=db).add_source(
        Consignor, role="consignor", email="email", marketing="opted_in"
    )
    assert source.get_contact(db.session, 1).email == "ada@x.shop"
    assert source.get_contact(db.session, 2) is None


def test_bad_registrations_say_what_is_wrong(host):
    db, Consignor, Customer, _Prefs, _b = host
    mailchimp = MailchimpSync(db=db)
    with pytest.raises(ValueError, match=r"'prefs\.\.marketing' is not an attribute path"):
        mailchimp.add_source(Customer, role="customer", email="email", marketing="prefs..marketing")
    with pytest.raises(TypeError, match="attribute name, a SQL expression or a callable"):
        mailchimp.add_source(Consignor, role="consignor", email=42, marketing="opted_in")
    with pytest.raises(ValueError, match="role"):
        mailchimp.add_source(Consignor, role="  ", email="email", marketing="opted_in")
    with pytest.raises(TypeError, match="not a mapped"):
        mailchimp.add_source(dict, role="x", email="email", marketing="opted_in")
    with pytest.raises(TypeError, match="merge_fields"):
        mailchimp.add_source(
            Consignor, role="consignor", email="email", marketing="opted_in", merge_fields=["X"]
        )
    with pytest.raises(TypeError, match="must be declared with MergeField"):
        mailchimp.add_source(
            Consignor, role="consignor", email="email", marketing="opted_in",
            merge_fields={"PHONE": "phone"},
        )  # fmt: skip
    mailchimp.add_source(Consignor, role="consignor", email="email", marketing="opted_in")
    with pytest.raises(ValueError, match="already registered"):
        mailchimp.add_source(Consignor, role="consignor", email="email", marketing="opted_in")
    mailchimp.add_source(Customer, role="customer", email="email", marketing="prefs.marketing")
    assert mailchimp.roles == ["consignor", "customer"]


def test_composite_primary_keys_are_refused(tmp_path):
    db = SQLAlchemy()

    class Pair(db.Model):
        a = sa.Column(sa.Integer, primary_key=True)
        b = sa.Column(sa.Integer, primary_key=True)
        email = sa.Column(sa.String(255))

    with pytest.raises(ValueError, match="single-column primary key"):
        MailchimpSync(db=db).add_source(Pair, role="pair", email="email", marketing="email")


def test_paths_are_checked_at_first_use_naming_the_attribute(host):
    db, Consignor, Customer, *_ = host
    typo = MailchimpSync(db=db).add_source(
        Consignor, role="consignor", email="mail", marketing="opted_in"
    )
    with pytest.raises(ConfigurationError, match="Consignor has no attribute 'mail'"):
        contacts(typo, db)
    through_a_column = MailchimpSync(db=db).add_source(
        Customer, role="customer", email="email", marketing="first.marketing"
    )
    with pytest.raises(ConfigurationError, match=r"Customer\.first is not a relationship"):
        through_a_column.watches()


def test_a_flag_on_a_backref_declared_by_the_consent_model(tmp_path):
    """The host registers the source before the model declaring the backref exists."""
    db = SQLAlchemy()

    class Member(db.Model):
        id = sa.Column(sa.Integer, primary_key=True)
        email = sa.Column(sa.String(255))

    mailchimp = MailchimpSync(db=db)
    source = mailchimp.add_source(
        Member, role="customer", email="email", marketing="marketing.accepts_marketing"
    )

    class Consent(db.Model):  # added later, in another module, by the integrator
        id = sa.Column(sa.Integer, primary_key=True)
        member_id = sa.Column(sa.ForeignKey("member.id"), unique=True, nullable=False)
        accepts_marketing = sa.Column(sa.Boolean, nullable=False)
        member = db.relationship(Member, backref=db.backref("marketing", uselist=False))

    app = Flask("backref")
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path}/b.db"
    db.init_app(app)
    with app.app_context():
        db.create_all()
        db.session.add_all([Member(email="no-row@x.shop"), Member(email="yes@x.shop")])
        db.session.add(Consent(member_id=2, accepts_marketing=True))
        db.session.commit()
        assert [(c.email, c.marketing) for c in contacts(source, db)] == [
            ("no-row@x.shop", False),
            ("yes@x.shop", True),
        ]
        assert {w.model for w in source.watches()} == {Member, Consent}


def test_typed_merge_fields_read_every_way_and_tags_are_computed(host):
    db, _c, Customer, Prefs, _b = host
    db.session.add_all(
        [
            Customer(
                id=1, first="Ben", last="Baker", email="ben@x.shop", prefs=Prefs(marketing=True)
            ),
            Customer(id=2, first="Cleo", last="Chen", email="cleo@x.shop"),
        ]
    )
    db.session.commit()
    source = MailchimpSync(db=db).add_source(
        Customer,
        role="customer",
        email="email",
        marketing="prefs.marketing",
        merge_fields={
            "INITIALS": MergeField(
                "Initials", "text", sa.func.upper(sa.func.substr(Customer.first, 1, 1))
            ),
            "OPTIN": MergeField("Opted in", "number", "prefs.marketing"),
            "NUMBER": MergeField("Customer number", "number", "id"),
            "SURNAME": MergeField("Surname", "text", lambda c: c.last),
        },
        tags=lambda c: {"Has prefs"} if c.prefs else set(),
    )
    ben, cleo = contacts(source, db)
    assert ben.merge_fields == {"INITIALS": "B", "OPTIN": "True", "NUMBER": 1, "SURNAME": "Baker"}
    assert ben.tags == {"Has prefs"}
    assert cleo.merge_fields == {"INITIALS": "C", "NUMBER": 2, "SURNAME": "Chen"}
    assert cleo.tags == frozenset()
    assert source.get_contact(db.session, 1) == ben
