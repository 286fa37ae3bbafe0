"""Each URL output, read by its own client's parser, says exactly what the internal URL said.

Over a corpus of awkward user names, passwords, database names and query values (spaces, `+`,
`%`, `&`, `=`, `#`, `?`, `/`, `@`, `:`, non-ASCII, empty values, repeated keys), some written
percent-encoded and some raw as people write them, the internal URL is read as libpq reads it
(psycopg's `conninfo_to_dict`, i.e. `PQconninfoParse`): that reading is the oracle. Each output is
then read by the parser of the client it is for: libpq for `database-url`, pg-connection-string
(node-postgres's) for `node-database-url`, pgjdbc's `Driver.parseURL` for `jdbc-url`. Every
parameter must come back equal; only host, port and the TLS parameters are the action's own.

node and java each parse the whole corpus in one process. Without them (and only outside CI),
their tests skip, saying what to install; with `CI` set, a missing tool fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote

import pytest
from psycopg.conninfo import conninfo_to_dict

from fly_pg_external.connstr import parse_conn_string
from fly_pg_external.urls import ClientUrls, Tls, client_urls

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
PARSE_JS = NODE_DIR / "parse.js"
PARSE_JAVA = HERE / "java" / "ParseUrls.java"
PGJDBC_JAR = Path("/usr/share/java/postgresql.jar")

APP, HOST, PORT = "my-db", "db.example.com", 15432
# The parameters the action sets itself; every other one must read back as the internal URL's.
TLS_KEYS = frozenset({"sslmode", "sslrootcert", "uselibpqcompat", "sslfactory"})
AWKWARD = " +%&=#?/@:"


def enc(text: str) -> str:
    return quote(text, safe="")


def internal(user: str, password: str, database: str = "", query: str = "") -> str:
    """An internal URL written as a careful person would: each part percent-encoded."""
    path = f"/{enc(database)}" if database else ""
    return f"postgres://{enc(user)}:{enc(password)}@{APP}.flycast:5432{path}?sslmode=disable{query}"


def params(*pairs: tuple[str, str]) -> str:
    return "".join(f"&{enc(k)}={enc(v)}" for k, v in pairs)


@dataclass(frozen=True)
class Case:
    id: str
    url: str


CASES = [
    Case("plain", internal("app_user", "s3cret", "app_db")),
    Case(
        "delimiters-everywhere",
        internal(
            f"u{AWKWARD}x",
            f"p{AWKWARD}w",
            f"d{AWKWARD.replace('?', '').replace('#', '')}b",
            params(("application_name", f"a{AWKWARD}n"), ("options", "-c search_path=app")),
        ),
    ),
    Case(
        "non-ascii",
        internal("üser", "pässwörd—日本", "dätäbase", params(("application_name", "café ☕"))),
    ),
    Case("percent-sequences", internal("u%41", "p%2Fw%", "d%20b", params(("options", "%3D%")))),
    Case("empty-values", internal("u", "p", "", params(("application_name", ""), ("options", "")))),
    # libpq keeps the last of a repeated key, and so does pg-connection-string: the action keeps
    # every occurrence in order, so the last still wins in each.
    Case(
        "repeated-keys",
        internal(
            "u", "p", "db", params(("application_name", "first"), ("application_name", "2nd"))
        ),
    ),
    Case(
        "secret-query-values",
        internal("u", "p", "db", params(("password", "q+p w&x"), ("sslpassword", "s=k#y?"))),
    ),
    # As people write them: raw `+` (libpq reads a plus sign, not a space; a raw space it refuses),
    # raw non-ASCII, lower-case escapes, raw `@ / ? #` inside a query value.
    Case(
        "raw-plus-and-spaces",
        "postgres://a+b:p+w%20x@my-db.flycast/d+b?application_name=c+d%20e&options=-c%20x%3dy",
    ),
    Case("lower-case-escapes", "postgres://u%c3%bc:p%2fw%40x@my-db.internal:5432/d%2fb"),
    Case(
        "raw-delimiters-in-a-query-value",
        "postgres://u:p@top2.nearest.of.my-db.internal/db?application_name=me@ci/x?y#z",
    ),
    Case("raw-non-ascii", "postgres://ü:päß@my-db.flycast/dä?application_name=日本語"),
    Case("no-database", "postgres://postgres:pw@my-db.flycast:5432"),
    # node-postgres reads the path with decodeURI, which leaves %3F and %23 encoded, and a raw
    # `?` or `#` would end the path: such a database name cannot be written for it (see
    # NODE_CANNOT). libpq and pgjdbc read it exactly.
    Case("database-with-question-mark-and-hash", internal("u", "p", "a?b#c")),
]
NODE_CANNOT = {"database-with-question-mark-and-hash": {"database": "a%3Fb%23c"}}


def libpq_reads(url: str) -> dict[str, str]:
    return dict(conninfo_to_dict(url))


@pytest.fixture(scope="module")
def rootcert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CA file whose path needs encoding; node-postgres reads the file the URL names."""
    directory = tmp_path_factory.mktemp("certs") / "my certs+100%"
    directory.mkdir()
    path = directory / "ca #1.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    return str(path)


@dataclass(frozen=True)
class Built:
    case: Case
    tls: Tls
    urls: ClientUrls

    @property
    def id(self) -> str:
        return f"{self.case.id}-{self.tls.sslmode}"

    def expected(self) -> dict[str, str]:
        """The internal URL as libpq reads it, at the external host and port, with the
        action's TLS parameters."""
        want = {k: v for k, v in libpq_reads(self.case.url).items() if k not in TLS_KEYS}
        want |= {"host": HOST, "port": str(PORT), "sslmode": self.tls.sslmode}
        if self.tls.verifies:
            want["sslrootcert"] = self.tls.sslrootcert
        return want


@pytest.fixture(scope="module")
def built(rootcert: str) -> list[Built]:
    out = []
    for case in CASES:
        conn = parse_conn_string(case.url, app=APP, external_host=HOST)
        for tls in (Tls("require"), Tls("verify-full", rootcert)):
            out.append(Built(case, tls, client_urls(conn, HOST, PORT, tls)))
    return out


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"`{name}` is missing (install the Debian package {package})"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must check every client's parser")
    pytest.skip(f"{reason}: this client's reading of the corpus is not checked")


# -- libpq -------------------------------------------------------------------------------------


def test_libpq_reads_database_url_as_the_internal_url(built: list[Built]) -> None:
    wrong = {}
    for b in built:
        got = libpq_reads(b.urls.libpq)
        if got != b.expected():
            wrong[b.id] = (b.expected(), got)
    assert not wrong, json.dumps(wrong, ensure_ascii=False, indent=1)


def test_libpq_reads_the_redacted_url_with_only_safe_values(built: list[Built]) -> None:
    """The URL shown to people still parses, with the same user, database and safe values."""
    for b in built:
        got, want = libpq_reads(b.urls.redacted), b.expected()
        assert got["password"] == "***", b.id
        for key in ("user", "dbname", "host", "port", "sslmode", "application_name"):
            assert got.get(key) == want.get(key), (b.id, key)
        for key in ("options", "sslpassword"):
            assert got.get(key) in (None, "***"), (b.id, key)


# -- node-postgres -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_reads(built: list[Built]) -> list[dict[str, object]]:
    node = tool("node", "nodejs")
    if not (NODE_DIR / "node_modules" / "pg-connection-string" / "package.json").exists():
        reason = "node-postgres is not installed: make tests/clients/node/node_modules/.installed"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    proc = subprocess.run(
        [node, str(PARSE_JS)],
        input=json.dumps([b.urls.node for b in built]),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=NODE_DIR,
    )
    results: list[dict[str, object]] = json.loads(proc.stdout)
    return results


def node_differences(b: Built, read: dict[str, object]) -> dict[str, tuple[object, object]]:
    """What pg-connection-string read differently from libpq's reading of the internal URL."""
    assert "config" in read, f"{b.id}: {read}"
    config = read["config"]
    assert isinstance(config, dict)
    want: dict[str, object] = dict(b.expected())
    want["database"] = want.pop("dbname", None)
    want["uselibpqcompat"] = "true"
    if not b.tls.verifies:
        want.pop("sslrootcert", None)
    return {k: (v, config.get(k)) for k, v in want.items() if config.get(k) != v}


def test_node_postgres_reads_node_database_url_as_the_internal_url(
    built: list[Built], node_reads: list[dict[str, object]]
) -> None:
    wrong = {}
    for b, read in zip(built, node_reads, strict=True):
        diff = node_differences(b, read)
        cannot = NODE_CANNOT.get(b.case.id, {})
        if {k: got for k, (_, got) in diff.items()} != cannot:
            wrong[b.id] = diff
    assert not wrong, json.dumps(wrong, ensure_ascii=False, indent=1)


# -- pgjdbc ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pgjdbc_reads(built: list[Built]) -> list[dict[str, str] | None]:
    java = tool("java", "default-jre-headless")
    if not PGJDBC_JAR.exists():
        reason = f"{PGJDBC_JAR} is missing (install the Debian package libpostgresql-jdbc-java)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    proc = subprocess.run(
        [java, "-cp", str(PGJDBC_JAR), str(PARSE_JAVA)],
        input="".join(b.urls.jdbc + "\n" for b in built),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        check=True,
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == len(built), proc.stdout + proc.stderr
    return [
        None if line == "null" else dict(parse_qsl(line, keep_blank_values=True)) for line in lines
    ]


def test_pgjdbc_reads_jdbc_url_as_the_internal_url(
    built: list[Built], pgjdbc_reads: list[dict[str, str] | None]
) -> None:
    """jdbc-url carries no credentials and no libpq parameters (pgjdbc names its own), so what
    must read back is the database, the host and port, and the TLS settings."""
    wrong = {}
    for b, got in zip(built, pgjdbc_reads, strict=True):
        expected = b.expected()
        want = {"PGHOST": HOST, "PGPORT": str(PORT), "sslmode": b.tls.sslmode}
        if "dbname" in expected:
            want["PGDBNAME"] = expected["dbname"]
        if b.tls.verifies:
            want["sslrootcert"] = b.tls.sslrootcert
        if got != want:
            wrong[b.id] = (want, got)
    assert not wrong, json.dumps(wrong, ensure_ascii=False, indent=1)


def test_the_corpus_is_awkward_enough(built: list[Built]) -> None:
    """Every awkward character reaches every part the corpus claims to cover."""
    read = [libpq_reads(c.url) for c in CASES]
    for part in ("user", "password", "dbname", "application_name"):
        values = "".join(r.get(part, "") for r in read)
        missing = [c for c in AWKWARD if c not in values]
        assert not missing, (part, missing)
    assert any(not r.get("dbname") for r in read) and any(r.get("options") == "" for r in read)
