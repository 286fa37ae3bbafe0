"""The action's URL outputs work in the clients people use, verifying what each cell promises.

Rows are the action's TLS configurations (`sslmode`, `sslrootcert`), columns the clients, each
with the output meant for it: psql on Debian's libpq 15 and on a libpq >= 16, psycopg 3 and
asyncpg with `database-url`, node-postgres with `node-database-url`, pgjdbc with `jdbc-url` plus
`user` and `password`. The server is the simulator's pg_tls proxy, whose certificates its test CA
issues (`Simulator.ca_cert_path`); reached as `localhost`, which the certificate names, and never
as `127.0.0.1`, which it does not.

Every client runs in a process of its own, with an environment made here and `HOME` an empty
directory (no `~/.postgresql/root.crt` helps it). It trusts the test CA the way a user's system
store would: `SSL_CERT_FILE` (libpq, OpenSSL, Python), `NODE_EXTRA_CA_CERTS` (Node), a PKCS12
trust store made with `keytool` (the JVM). Each cell connects and runs `select current_user`;
then a verify-full cell refuses a wrong hostname, a verify-* cell refuses a CA it was not given,
and a `require` cell connects trusting nothing.

The outputs come from the action itself: one real `expose` run per simulator, then one
`dry-run: true` run per configuration. A missing output or a URL of the wrong shape fails the
cell as such, before any client runs. Nothing here is skipped: a missing client fails, naming
the package that installs it (`.ci/run` and `make test` install them all).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pytest

from flysim import PostgresServer, Simulator
from flysim.proxy import CertificateAuthority

from action_run import TOKEN, run_main_step, run_post_step, step_state

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
PYTHON_CLIENT = HERE / "python" / "connect.py"
JAVA_CLIENT = HERE / "java" / "Connect.java"
PGJDBC_JAR = Path("/usr/share/java/postgresql.jar")
PSYCOPG_LIBS = "psycopg_binary.libs"

APP, USER, PASSWORD, DB = "my-db", "app_user", "s3cr3t/p@ss:w0rd", "app_db"
INTERNAL = f"postgres://{USER}:{quote(PASSWORD, safe='')}@{APP}.flycast:5432/{DB}?sslmode=disable"
HOST, WRONG_HOST = "localhost", "127.0.0.1"  # the certificate names localhost, no IP address
DEFAULT_JAVA_FACTORY = "org.postgresql.ssl.DefaultJavaSSLFactory"
STOREPASS = "changeit"


# -- the matrix ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One configuration of the action: its `sslmode` and where `sslrootcert` points."""

    id: str
    sslmode: str
    rootcert: str  # "" (require), "system" or "path" (the test CA's file)


REQUIRE = Config("require", "require", "")
VERIFY_CA_PATH = Config("verify-ca-path", "verify-ca", "path")
VERIFY_FULL_SYSTEM = Config("verify-full-system", "verify-full", "system")
VERIFY_FULL_PATH = Config("verify-full-path", "verify-full", "path")
CONFIGS = (REQUIRE, VERIFY_CA_PATH, VERIFY_FULL_SYSTEM, VERIFY_FULL_PATH)


@dataclass(frozen=True)
class Client:
    """A client, the output it uses, and how its refusals read."""

    id: str
    output: str
    hostname_error: str  # a regex: the certificate does not name the host
    untrusted_error: str  # a regex: the chain does not lead to a trusted CA


LIBPQ_HOSTNAME = rf'does not match host name "{re.escape(WRONG_HOST)}"'
LIBPQ_UNTRUSTED = r"certificate verify failed"
PSQL15 = Client("psql-libpq15", "database-url", LIBPQ_HOSTNAME, LIBPQ_UNTRUSTED)
PSQL16 = Client("psql-libpq16+", "database-url", LIBPQ_HOSTNAME, LIBPQ_UNTRUSTED)
PSYCOPG = Client("psycopg", "database-url", LIBPQ_HOSTNAME, LIBPQ_UNTRUSTED)
ASYNCPG = Client(
    "asyncpg",
    "database-url",
    rf"SSLCertVerificationError.*IP address mismatch.*'{re.escape(WRONG_HOST)}'",
    r"SSLCertVerificationError.*unable to get local issuer certificate",
)
NODE_PG = Client(
    "node-pg",
    "node-database-url",
    rf"ERR_TLS_CERT_ALTNAME_INVALID.*IP: {re.escape(WRONG_HOST)} is not in the cert's list",
    r"UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
)
PGJDBC = Client(
    "pgjdbc",
    "jdbc-url",
    rf"The hostname {re.escape(WRONG_HOST)} could not be verified",
    r"PKIX path (building|validation) failed",
)
CLIENTS = (PSQL15, PSQL16, PSYCOPG, ASYNCPG, NODE_PG, PGJDBC)


def cells(configs: tuple[Config, ...]) -> list[object]:
    """(client, config) pairs as `<client>-<config>` ids; libpq 15 cannot use
    `sslrootcert=system` (see `test_libpq15_reads_sslrootcert_system_as_a_file`)."""
    return [
        pytest.param(client, config, id=f"{client.id}-{config.id}")
        for client in CLIENTS
        for config in configs
        if not (client is PSQL15 and config.rootcert == "system")
    ]


# -- the action's outputs --------------------------------------------------------------------


@dataclass(frozen=True)
class Trust:
    """What a client trusts besides its own defaults: nothing, or one CA (its PEM file)."""

    ca: str | None = None


class Matrix:
    """One simulator, exposed by a real run of the action, and what the cells share: the
    outputs of each configuration (a `mode: connect` run, made on first use), the two CAs, the
    libpq >= 16 for psql."""

    def __init__(self, sim: Simulator, base: dict[str, str], scratch: Path) -> None:
        self.sim, self.base, self.scratch = sim, base, scratch
        self.test_ca = Trust(sim.ca_cert_path)
        self.other_ca = Trust(CertificateAuthority("another CA").write(str(scratch)))

    @functools.cache  # noqa: B019 - one Matrix per module, kept for its whole life
    def outputs(self, config: Config) -> dict[str, str]:
        inputs = {**self.base, "mode": "connect", "sslmode": config.sslmode}
        if config.rootcert == "path":
            inputs["sslrootcert"] = self.sim.ca_cert_path
        result = run_main_step(self.sim, self.scratch / config.id, inputs)
        assert result.code == 0, f"the {config.id} run failed:\n{result.log}"
        return result.outputs

    @functools.cache  # noqa: B019 - as above
    def truststore(self, ca: str) -> str:
        """A PKCS12 trust store holding `ca`, made by `keytool`, for
        `-Djavax.net.ssl.trustStore`."""
        keytool = need("keytool", "default-jre-headless")
        path = self.scratch / f"{Path(ca).stem}.p12"
        argv = [keytool, "-importcert", "-noprompt", "-alias", "ca", "-file", ca]
        argv += ["-storetype", "PKCS12", "-keystore", str(path), "-storepass", STOREPASS]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
        return str(path)

    @functools.cached_property
    def libpq16_path(self) -> str:
        """`LD_LIBRARY_PATH` for psql on a libpq >= 16: a directory whose `libpq.so.5` is the
        libpq psycopg-binary bundles, then the wheel's library folder (libpq's dependencies).
        Checked: psql then loads it, and it reports version 16 or later."""
        spec = importlib.util.find_spec("psycopg_binary")
        assert spec and spec.origin, "psycopg-binary is missing: pip install -e '.[dev]'"
        libs = Path(spec.origin).parent.parent / PSYCOPG_LIBS
        found = sorted(libs.glob("libpq-*.so.5*"))
        assert found, f"no libpq in {libs}: pip install -e '.[dev]' (psycopg[binary])"
        directory = self.scratch / "libpq16"
        directory.mkdir()
        (directory / "libpq.so.5").symlink_to(found[0])
        path = f"{directory}:{libs}"
        ldd = subprocess.run(
            ["ldd", str(psql_binary())],
            env={"PATH": os.environ["PATH"], "LD_LIBRARY_PATH": path},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"libpq.so.5 => {directory}/libpq.so.5" in ldd, ldd
        assert libpq_version(path) >= 160000, f"{found[0]} is older than libpq 16"
        return path


@pytest.fixture(scope="module")
def matrix(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    pg_server.create_database(USER, PASSWORD, DB)
    sim = Simulator(postgres=pg_server, token=TOKEN, restart_seconds=0.05, check_grace_seconds=0.05)
    sim.add_app(APP, machines=2, legacy=True)
    sim.start()
    try:
        base = {"app": APP, "database-url": INTERNAL, "host": HOST, "ip-versions": "v4 v6"}
        scratch = tmp_path_factory.mktemp("matrix")
        exposed = run_main_step(sim, scratch / "expose", base)
        assert exposed.code == 0, exposed.log
        assert sim.public_endpoint(APP) == ("127.0.0.1", 5432), sim.listener_errors
        yield Matrix(sim, base, scratch)
    finally:
        sim.stop()


def client_url(client: Client, config: Config, m: Matrix) -> str:
    """The output `client` uses, checked against the interface: missing or wrongly shaped, the
    cell fails here, saying so."""
    outputs = m.outputs(config)
    url = outputs.get(client.output, "")
    assert url, f"the action set no `{client.output}` output (it set: {sorted(outputs)})"
    ca = m.sim.ca_cert_path
    want = {"sslmode": config.sslmode}
    if config.rootcert == "path":
        want["sslrootcert"] = ca
    if client.output == "jdbc-url":
        assert url.startswith(f"jdbc:postgresql://{HOST}:5432/{DB}?"), url
        assert USER not in url.split("?")[0] and quote(PASSWORD, safe="") not in url, url
        if config.rootcert == "system":
            want["sslfactory"] = DEFAULT_JAVA_FACTORY
        for name in ("user", "password"):
            assert outputs.get(name), f"the action set no `{name}` output for pgjdbc"
    else:
        parts = urlsplit(url)
        assert (parts.hostname, parts.port, parts.path) == (HOST, 5432, f"/{DB}"), url
        if client.output == "node-database-url":
            want["uselibpqcompat"] = "true"  # `require` as libpq means it, not verify-full
        elif config.rootcert == "system":
            want["sslrootcert"] = "system"
    tls = {k: v for k, v in parse_qsl(urlsplit(url).query) if k.startswith(("ssl", "uselibpq"))}
    assert tls == want, f"`{client.output}` for {config.id} should carry {want}: {url}"
    return url


# -- running a client ------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    argv: list[str]
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"$ {' '.join(self.argv)}\nexit {self.code}\n{self.stdout}{self.stderr}"


def need(tool: str, package: str) -> str:
    """The tool's path; the test fails (never skips) when it is missing, naming the package."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"`{tool}` is missing: install the Debian package {package} (.ci/run does)")
    return path


def psql_binary() -> Path:
    """The psql executable `psql` runs (Debian's `psql` is a wrapper script that runs
    /usr/lib/postgresql/<version>/bin/psql)."""
    psql = Path(need("psql", "postgresql-client")).resolve()
    if psql.read_bytes()[:4] == b"\x7fELF":
        return psql
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"), key=lambda p: int(p.parts[-3]))
    assert found, "no /usr/lib/postgresql/<version>/bin/psql"
    return found[-1]


def libpq_version(library_path: str | None) -> int:
    """`PQlibVersion()` of the `libpq.so.5` a program loads with this `LD_LIBRARY_PATH`."""
    code = "import ctypes; print(ctypes.CDLL('libpq.so.5').PQlibVersion())"
    env = {
        "PATH": os.environ["PATH"],
        **({"LD_LIBRARY_PATH": library_path} if library_path else {}),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@dataclass(frozen=True)
class Session:
    """What a client does once logged in, when not `select current_user`: one statement, then
    a query whose first value it prints; and the outputs its login comes from (pgjdbc's `user`
    and `password`), when not those of the cell's configuration."""

    setup: str
    query: str
    outputs: dict[str, str]


def run_client(
    client: Client,
    config: Config,
    url: str,
    *,
    trust: Trust,
    m: Matrix,
    home: Path,
    session: Session | None = None,
) -> Attempt:
    """The client, in a process of its own: `url`, the trust given, `HOME` an empty directory."""
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}
    if session is not None:
        env |= {"CLIENT_SETUP": session.setup, "CLIENT_QUERY": session.query}
    if client in (PSQL15, PSQL16, PSYCOPG, ASYNCPG) and trust.ca:
        env["SSL_CERT_FILE"] = trust.ca
    if client in (PSQL15, PSQL16):
        argv = [need("psql", "postgresql-client"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        statements = [session.setup, session.query] if session else ["select current_user"]
        for statement in statements:
            argv += ["-c", statement]
        argv += ["-c", r"\conninfo", url]
        env["PGCONNECT_TIMEOUT"] = "10"
        if client is PSQL16:
            env["LD_LIBRARY_PATH"] = m.libpq16_path
    elif client in (PSYCOPG, ASYNCPG):
        argv = [sys.executable, str(PYTHON_CLIENT), client.id, url]
        if client is ASYNCPG:
            assert_importable("asyncpg")
            if config.rootcert == "system":
                argv.append("--ssl-default-context")  # the recipe: ssl=create_default_context()
    elif client is NODE_PG:
        argv = [need("node", "nodejs"), str(NODE_DIR / "connect.js"), url]
        if not (NODE_DIR / "node_modules" / "pg" / "package.json").exists():
            pytest.fail(
                "node-postgres is not installed: `make test` runs npm ci in tests/clients/node"
            )
        if trust.ca:
            env["NODE_EXTRA_CA_CERTS"] = trust.ca
    else:
        outputs = session.outputs if session else m.outputs(config)
        env |= {"PGUSER": outputs["user"], "PGPASSWORD": outputs["password"]}
        if not PGJDBC_JAR.exists():
            pytest.fail(
                f"{PGJDBC_JAR} is missing: install the Debian package libpostgresql-jdbc-java"
            )
        argv = [need("java", "default-jre-headless"), f"-Duser.home={home}"]
        if trust.ca:
            argv += [f"-Djavax.net.ssl.trustStore={m.truststore(trust.ca)}"]
            argv += [f"-Djavax.net.ssl.trustStorePassword={STOREPASS}"]
        argv += ["-cp", str(PGJDBC_JAR), str(JAVA_CLIENT), url]
    proc = subprocess.run(
        argv, env=env, cwd=home, capture_output=True, text=True, timeout=90, check=False
    )
    return Attempt(argv, proc.returncode, proc.stdout, proc.stderr)


def assert_importable(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is missing: pip install -e '.[dev]' (it is a dev dependency)")


def assert_connected(client: Client, attempt: Attempt) -> None:
    """Logged in as the database's user, over TLS where the client can tell."""
    assert attempt.code == 0, str(attempt)
    if client in (PSQL15, PSQL16):
        lines = attempt.stdout.splitlines()
        assert lines[0] == USER, str(attempt)
        assert "SSL connection (protocol: TLSv1." in attempt.stdout, str(attempt)
    elif client is PGJDBC:
        assert attempt.stdout.strip() == USER, str(attempt)
    else:
        result = json.loads(attempt.stdout)
        assert result["user"] == USER, str(attempt)
        assert result.get("tls", True), str(attempt)
        if client is PSYCOPG:
            assert result["libpq"] >= 160000, str(attempt)


def assert_refused(attempt: Attempt, error: str) -> None:
    assert attempt.code != 0, f"connected, but should have been refused:\n{attempt}"
    assert re.search(error, attempt.stderr), f"refused, but not for /{error}/:\n{attempt}"


def with_host(url: str, host: str) -> str:
    if url.startswith("jdbc:"):
        changed = url.replace(f"//{HOST}:", f"//{host}:", 1)
    else:
        parts = urlsplit(url)
        changed = urlunsplit(parts._replace(netloc=parts.netloc.replace(f"@{HOST}:", f"@{host}:")))
    assert changed != url, url
    return changed


def with_rootcert(url: str, rootcert: str) -> str:
    head, _, query = url.partition("?")
    params = [(k, rootcert if k == "sslrootcert" else v) for k, v in parse_qsl(query)]
    assert ("sslrootcert", rootcert) in params, url
    return f"{head}?{urlencode(params, safe='/')}"


def trusted_for(config: Config, m: Matrix) -> Trust:
    """What the client trusts: the test CA as its system store for `sslrootcert=system`;
    nothing for a path (the URL names the file) or for `require` (nothing is verified)."""
    return m.test_ca if config.rootcert == "system" else Trust()


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize(("client", "config"), cells(CONFIGS))
def test_client_connects(client: Client, config: Config, matrix: Matrix, tmp_path: Path) -> None:
    url = client_url(client, config, matrix)
    attempt = run_client(
        client, config, url, trust=trusted_for(config, matrix), m=matrix, home=tmp_path
    )
    assert_connected(client, attempt)


@pytest.mark.parametrize(("client", "config"), cells((VERIFY_FULL_SYSTEM, VERIFY_FULL_PATH)))
def test_wrong_hostname_is_refused(
    client: Client, config: Config, matrix: Matrix, tmp_path: Path
) -> None:
    url = with_host(client_url(client, config, matrix), WRONG_HOST)
    attempt = run_client(
        client, config, url, trust=trusted_for(config, matrix), m=matrix, home=tmp_path
    )
    assert_refused(attempt, client.hostname_error)


@pytest.mark.parametrize(
    ("client", "config"), cells((VERIFY_CA_PATH, VERIFY_FULL_SYSTEM, VERIFY_FULL_PATH))
)
def test_untrusted_ca_is_refused(
    client: Client, config: Config, matrix: Matrix, tmp_path: Path
) -> None:
    """The client trusts another CA instead of the test CA: as its system store for
    `sslrootcert=system`, as the URL's `sslrootcert` for a path."""
    url = client_url(client, config, matrix)
    if config.rootcert == "system":
        trust = matrix.other_ca
    else:
        assert matrix.other_ca.ca is not None
        url, trust = with_rootcert(url, matrix.other_ca.ca), Trust()
    attempt = run_client(client, config, url, trust=trust, m=matrix, home=tmp_path)
    assert_refused(attempt, client.untrusted_error)


def test_libpq15_reads_sslrootcert_system_as_a_file(matrix: Matrix, tmp_path: Path) -> None:
    """Why the README says `sslrootcert=system` needs libpq >= 16: Debian 12's libpq 15 looks
    for a file named "system", even while the system store trusts the server's CA."""
    if libpq_version(None) >= 160000 and os.environ.get("GITHUB_ACTIONS") == "true":
        # GitHub's Ubuntu 24.04 runners have libpq 16; .ci/run (Debian 12) always runs this.
        pytest.skip("this runner's libpq is 16 or later; the claim is about libpq 15")
    assert libpq_version(None) < 160000, "the system's libpq is 16 or later: not Debian 12's"
    url = client_url(PSQL15, VERIFY_FULL_SYSTEM, matrix)
    attempt = run_client(
        PSQL15, VERIFY_FULL_SYSTEM, url, trust=matrix.test_ca, m=matrix, home=tmp_path
    )
    assert_refused(attempt, r'root certificate file "system" does not exist')


# -- temporary credentials ---------------------------------------------------------------------

# A client per output, under verify-full with the CA by path: the login is the role's, the
# rest of the URL as the cells above check it.
TEMPORARY_CLIENTS = (PSQL16, PSYCOPG, NODE_PG, PGJDBC)
CREATOR, CREATOR_PASSWORD = "mx_roles", "Creator-pw-for-the-matrix-1"


@pytest.fixture(scope="module")
def creator_url(pg_server: PostgresServer, matrix: Matrix) -> str:
    """The internal URL of a role that may only manage roles and hand out the database's user,
    the README's least-privilege setup (the database's user as the group role)."""
    pg_server.psql(
        f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{CREATOR}') THEN
            CREATE ROLE {CREATOR} LOGIN CREATEROLE;
          END IF;
        END $$;
        ALTER ROLE {CREATOR} PASSWORD '{CREATOR_PASSWORD}';
        GRANT {USER} TO {CREATOR} WITH ADMIN OPTION;
        """
    )
    return f"postgres://{CREATOR}:{CREATOR_PASSWORD}@{APP}.flycast:5432/{DB}?sslmode=disable"


def printed_value(client: Client, attempt: Attempt) -> list[str]:
    """What the client printed for its query (psql prints the statements' tags too)."""
    if client in (PSYCOPG, NODE_PG):
        return [json.loads(attempt.stdout)["user"]]
    return attempt.stdout.splitlines()


@pytest.mark.parametrize("client", TEMPORARY_CLIENTS, ids=lambda c: f"{c.id}-temporary")
def test_temporary_credentials_log_in_and_end_with_the_job(
    client: Client, matrix: Matrix, creator_url: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    """`credentials: temporary`, main and post step as the runner runs them: the client logs in
    with its output as the run's role, which becomes the database's user at login, so the table
    it creates is that user's; after the post step the role is gone and the same login is
    refused."""
    config = VERIFY_FULL_PATH
    inputs = {
        **matrix.base,
        "database-url": creator_url,
        "lifetime": "job",
        "credentials": "temporary",
        "credentials-role": USER,
        "sslmode": config.sslmode,
        "sslrootcert": matrix.sim.ca_cert_path,
    }
    job = {"GITHUB_RUN_ID": "77", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_JOB": "clients"}
    main = run_main_step(matrix.sim, tmp_path / "main", inputs, job)
    assert main.code == 0, main.log
    role = main.outputs["user"]
    assert re.fullmatch(r"fpe_tmp_[0-9a-f]{16}", role), role
    session = Session(
        setup="create table made_in_the_job (id int)",
        query="select session_user || ' ' || current_user || ' ' || "
        "(select tableowner from pg_tables where tablename = 'made_in_the_job')",
        outputs=main.outputs,
    )
    url = main.outputs[client.output]
    assert url, f"the action set no `{client.output}` output"
    attempt = run_client(
        client, config, url, trust=Trust(), m=matrix, home=tmp_path / "job", session=session
    )
    try:
        assert attempt.code == 0, str(attempt)
        assert f"{role} {USER} {USER}" in printed_value(client, attempt), str(attempt)

        post = run_post_step(matrix.sim, tmp_path / "post", inputs, step_state(main), extra_env=job)

        assert post.code == 0, post.log
        assert f"Role `{role}`: dropped" in post.summary, post.summary
        again = run_client(
            client, config, url, trust=Trust(), m=matrix, home=tmp_path / "after", session=session
        )
        assert_refused(again, "password authentication failed")
    finally:
        pg_server.psql("DROP TABLE IF EXISTS made_in_the_job", dbname=DB)
