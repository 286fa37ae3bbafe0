"""libpq_uri.parse_uri against libpq itself: psycopg's PQconninfoParse is the oracle, key by key."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from fly_pg_external.libpq_uri import KEYWORDS, UriError, parse_uri

Outcome = dict[str, bytes] | str


def libpq(uri: bytes) -> Outcome:
    """Every parameter libpq's PQconninfoParse sets from `uri`, as bytes; "error" if it refuses."""
    try:
        options = pq.Conninfo.parse(uri)
    except Exception:  # psycopg.OperationalError: libpq's "invalid ..." message
        return "error"
    return {o.keyword.decode(): o.val for o in options if o.val is not None}


def ours(uri: bytes) -> Outcome:
    try:
        parsed = parse_uri(uri.decode("utf-8", "surrogateescape"))
    except UriError:
        return "error"
    return {k: v.encode("utf-8", "surrogateescape") for k, v in parsed.params.items()}


PW = "p@ss w0rd/:?&=+%€"
CORPUS = [
    # what the action hands out, and the spellings of its password
    f"postgres://app_user:{quote(PW, safe='')}@my-db.fly.dev:5432/app_db?sslmode=require",
    "postgres://u:p%20w@h/db?sslmode=verify-full&sslrootcert=system",
    "postgres://u:p+w@h/db",  # + is a plus
    "postgres://u:p%2Bw@h/db",
    "postgres://u:100%25@h/db",
    "postgres://u:a%26b%3Dc@h/db",
    "postgres://u:a&b=c@h/db",  # & and = are literal before the query
    "postgres://u:p%3Aw@h/db",
    "postgres://u:p:w:x@h/db",  # the password runs to the @
    "postgres://u%40corp:p@h/db",
    "postgres://u:%C3%A9t%C3%A9@h/db",  # UTF-8, percent-encoded
    "postgres://ü:été€@h/dß",  # the same, raw
    "postgres://u:%E2%85%A8@h/%E6%97%A5%E6%9C%AC",
    "postgres://u:%FF%FE@h/db",  # not UTF-8
    # options, application_name, client_encoding
    "postgres://u:p@h/db?options=-c%20search_path%3Dapp",
    "postgres://u:p@h/db?options=-c+search_path%3Dapp",
    "postgres://u:p@h/db?options=-csearch_path=app",  # a second = in the value
    "postgres://u:p@h/db?options=-c%20statement_timeout%3D5s%20-c%20x.y%3Dz",
    "postgres://u:p@h/db?application_name=ci%20job&client_encoding=UTF8",
    "postgres://u:p@h/db?application_name=",
    "postgres://u:p@h/db?application_name=a&application_name=b",  # the last one wins
    "postgres://u:p@h/db?user=other&password=other&dbname=other",  # the query wins
    "postgres://u:p@h/db?password=",
    "postgres://u:p@h/db?sslmode=require&",
    "postgres://u:p@h/db?sslmode=require&&application_name=x",
    "postgres://u:p@h/db?",
    "postgres://u:p@h/db?&",
    "postgres://u:p@h/db?sslmode",
    "postgres://u:p@h/db?ssl=true",
    "postgres://u:p@h/db?ssl=false",
    "postgres://u:p@h/db?requiressl=1",
    "postgres://u:p@h/db?requiressl=0",
    "postgres://u:p@h/db?%73slmode=require",
    "postgres://u:p@h/db?schema=public",  # Prisma's; not libpq's
    "postgres://u:p@h/db?sslmode=require&pool=5",
    # hosts, ports, databases
    "postgres://u:p@[::1]:5432/db",
    "postgres://u:p@[2001:db8::1]/db",
    "postgres://u:p@[::1]",
    "postgres://u:p@[]/db",
    "postgres://u:p@[::1/db",
    "postgres://u:p@[::1]x/db",
    "postgres://u:p@h1:1,h2:2,[::1]:3/db",
    "postgres://u:p@h1,h2:2/db",
    "postgres://u:p@h/",
    "postgres://u:p@h",
    "postgres://u:p@/db",
    "postgres://u:p@h:/db",
    "postgres://u:p@h:54x32/db",
    "postgres://h?application_name=a@b/c",  # the @ ends the user information, even after ?
    "postgres://u:p@h/db/extra",
    "postgres://u:p@h/db%2Fx",
    "postgres://u:p@h/%20",
    "postgres://@h/db",
    "postgres://:p@h/db",
    "postgres://u:@h/db",
    "postgresql://u:p@h/db",
    "postgres://",
    "postgresql:///db",
    # percent-encoding errors
    "postgres://u:%zz@h/db",
    "postgres://u:%4@h/db",
    "postgres://u:p%@h/db",
    "postgres://u:p@h/db%00",
    "postgres://u:p@h/db?options=%",
    "postgres://u:p@h/db?op%74ions=x",
    # not a URI to libpq
    "POSTGRES://u:p@h/db",
    "postgres:/h/db",
    "mysql://u:p@h/db",
]


@pytest.mark.parametrize("uri", CORPUS)
def test_the_corpus_parses_as_libpq_parses_it(uri: str) -> None:
    raw = uri.encode()
    assert ours(raw) == libpq(raw)


@pytest.mark.parametrize("uri", [u for u in CORPUS if libpq(u.encode()) != "error"])
def test_conninfo_to_dict_agrees_key_by_key(uri: str) -> None:
    """The same through psycopg's public conninfo_to_dict (values as text)."""
    try:
        expected = conninfo_to_dict(uri)
    except UnicodeDecodeError:
        pytest.skip("psycopg decodes values as UTF-8; the bytes are compared above")
    assert parse_uri(uri).params == expected


def test_the_keywords_are_libpqs() -> None:
    """The parameters libpq accepts in a URI are those PQconndefaults lists."""
    assert {o.keyword.decode() for o in pq.Conninfo.get_defaults()} == KEYWORDS


def test_unknown_keywords_can_be_skipped_and_named() -> None:
    parsed = parse_uri("postgres://u:p@h/db?schema=public&sslmode=require&x=1", unknown="skip")
    assert parsed.params == {"user": "u", "password": "p", "host": "h", "dbname": "db",
                             "sslmode": "require"}  # fmt: skip
    assert parsed.skipped == ("schema", "x")


@pytest.mark.parametrize(
    "uri",
    [
        "postgres://u:s3cr%zzet@h/db",
        "postgres://u:s3cr%00et@h/db",
        "postgres://u:p@h/db?password=s3cr%4get",
    ],
)
def test_errors_never_quote_the_password(uri: str) -> None:
    with pytest.raises(UriError) as err:
        parse_uri(uri)
    assert "s3cr" not in str(err.value)
    assert "password" in str(err.value)


def test_non_utf8_bytes_come_back_exactly() -> None:
    password = parse_uri("postgres://u:%FF%C3%A9@h").params["password"]
    assert password.encode("utf-8", "surrogateescape") == b"\xff\xc3\xa9"


# -- generated URIs --------------------------------------------------------------------------

_PIECES = [
    "%20", "%25", "%26", "%3D", "%2B", "%40", "%3A", "%2F", "%3F", "%2C", "%5B", "%5D", "%C3%A9",
    "%FF", "%E2%82%AC", "%zz", "%4", "%", "%00", "+", " ", "@", ":", "/", "?", "&", "=", "[", "]",
    ",", "é", "€", "Ⅸ", "a", "b", "z", "0", "9", "-", ".", "_", "~", "'", '"', "\\", "#",
]  # fmt: skip
_text = st.lists(st.sampled_from(_PIECES), max_size=8).map("".join)
_keyword = st.one_of(
    st.sampled_from(sorted(KEYWORDS)),
    st.sampled_from(["ssl", "requiressl", "schema", "x", "", "%73slmode", "user%00"]),
    _text,
)
_pair = st.one_of(
    st.tuples(_keyword, _text).map("=".join),
    st.tuples(_keyword, _text, _text).map("=".join),
    _keyword,
)
_host = st.one_of(
    _text,
    st.sampled_from(["h", "my-db.fly.dev", "127.0.0.1", "[::1]", "[2001:db8::1]", "[]", "[::1"]),
)
_netloc = st.tuples(_host, st.one_of(st.just(""), _text.map(":".__add__))).map("".join)


@st.composite
def uris(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["postgres://", "postgresql://"]))
    userinfo = draw(
        st.one_of(
            st.just(""),
            _text.map(lambda u: u + "@"),
            st.tuples(_text, _text).map(lambda up: f"{up[0]}:{up[1]}@"),
        )
    )
    netlocs = ",".join(draw(st.lists(_netloc, min_size=1, max_size=3)))
    path = draw(st.one_of(st.just(""), _text.map("/".__add__)))
    query = draw(
        st.one_of(st.just(""), st.lists(_pair, max_size=4).map(lambda p: "?" + "&".join(p)))
    )
    return prefix + userinfo + netlocs + path + query


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(uris())
def test_generated_uris_parse_as_libpq_parses_them(uri: str) -> None:
    raw = uri.encode()
    assert ours(raw) == libpq(raw)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=20).map("".join))
def test_anything_after_the_prefix_parses_as_libpq_parses_it(rest: str) -> None:
    raw = ("postgres://" + rest).encode()
    assert ours(raw) == libpq(raw)
