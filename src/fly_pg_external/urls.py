"""The connection details each kind of client needs, from the internal URL and the TLS settings.

Clients read `sslmode` and `sslrootcert` differently, so one URL cannot suit them all:

- libpq (psql, psycopg, and drivers built on it) takes `sslrootcert=system` from version 16 to
  mean "the system's trusted roots" (`SSL_CERT_FILE`/`SSL_CERT_DIR` move them), and refuses it
  with any sslmode weaker than verify-full. libpq 15 and older open a file named "system".
- node-postgres (pg-connection-string 2.x) treats require and verify-ca as verify-full unless
  the URL says `uselibpqcompat=true`, and reads `sslrootcert` as a file path, so `system` would
  crash it (brianc/node-postgres#3101). Without `sslrootcert` it verifies against Node's own CA
  store (which `NODE_EXTRA_CA_CERTS` extends).
- pgjdbc takes no credentials in our URL (tools pass them apart, e.g. Flyway's -user and
  -password), reads `sslrootcert` as a PEM file, and with `DefaultJavaSSLFactory` verifies
  against the JVM's trust store, its "system" store.

Every part is percent-encoded but RFC 3986's unreserved characters (connstr.py), which each of
them decodes exactly, with one exception: node-postgres's database name (`NODE_PATH_SAFE`).
tests/clients/test_url_corpus.py reads each output back with its client's own parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .connstr import ConnString, encode
from .domain import SslMode

SYSTEM = "system"
JAVA_TRUST_STORE_FACTORY = "org.postgresql.ssl.DefaultJavaSSLFactory"

Params = tuple[tuple[str, str], ...]

# pg-connection-string reads the database name with decodeURI, which leaves the escapes of
# `;/:@&=+$,` (and of `?` and `#`) undecoded. The first ones are legal raw in a URL path, so
# node-database-url writes them raw. A name holding `?` or `#` cannot be written for it (raw,
# either would end the path): node-postgres gets the escape instead, and the login fails with
# "database does not exist" rather than reaching another database.
NODE_PATH_SAFE = ";/:@&=+$,"


@dataclass(frozen=True)
class Tls:
    """How a client must check the server: `sslrootcert` is `system` or a CA file's path on the
    machine that connects."""

    sslmode: SslMode = "require"
    sslrootcert: str = SYSTEM

    @property
    def verifies(self) -> bool:
        return self.sslmode != "require"

    @property
    def system_roots(self) -> bool:
        return self.sslrootcert == SYSTEM


def libpq_params(tls: Tls) -> Params:
    """`sslmode=require` alone (a root file would make libpq verify), else the roots too."""
    if not tls.verifies:
        return (("sslmode", tls.sslmode),)
    return (("sslmode", tls.sslmode), ("sslrootcert", tls.sslrootcert))


def node_params(tls: Tls) -> Params:
    """libpq's meaning of each sslmode (`uselibpqcompat`), and no `sslrootcert=system`."""
    roots = (("sslrootcert", tls.sslrootcert),) if tls.verifies and not tls.system_roots else ()
    return (("sslmode", tls.sslmode), *roots, ("uselibpqcompat", "true"))


def jdbc_url(host: str, port: int, database: str, tls: Tls) -> str:
    """pgjdbc's URL: no user or password in it, so it holds no secret."""
    query: list[tuple[str, str]] = [("sslmode", tls.sslmode)]
    if tls.verifies:
        if tls.system_roots:
            query.append(("sslfactory", JAVA_TRUST_STORE_FACTORY))
        else:
            query.append(("sslrootcert", tls.sslrootcert))
    params = "&".join(f"{encode(k)}={encode(v)}" for k, v in query)
    return f"jdbc:postgresql://{host}:{port}/{encode(database)}?{params}"


@dataclass(frozen=True)
class ClientUrls:
    """Every output that carries how to connect; `libpq`, `node` and `password` are secret."""

    libpq: str = field(repr=False)
    node: str = field(repr=False)
    jdbc: str
    password: str = field(repr=False)
    redacted: str  # the libpq URL as people see it: password and secret values as ***

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.libpq, self.node, self.password) if s]


def client_urls(conn: ConnString, host: str, port: int, tls: Tls) -> ClientUrls:
    return ClientUrls(
        libpq=conn.external(host, port, libpq_params(tls)),
        node=conn.external(host, port, node_params(tls), path_safe=NODE_PATH_SAFE),
        jdbc=jdbc_url(host, port, conn.database, tls),
        password=conn.password,
        redacted=conn.redacted(host, port, libpq_params(tls)),
    )
