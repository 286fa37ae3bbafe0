"""A Python client with the URL it is given: connect, run ``select current_user``, print the
user (and, for psycopg, whether TLS is on and the libpq version), as JSON. On failure: the
error's class and message on stderr, exit 1. ``CLIENT_SETUP`` in the environment: a statement
run first; ``CLIENT_QUERY``: the query whose value is printed as the user.

    python connect.py psycopg URL
    python connect.py asyncpg URL [--ssl-default-context]

``--ssl-default-context`` is asyncpg's recipe for ``sslrootcert=system``:
``asyncpg.connect(url, ssl=ssl.create_default_context())`` (the system's trusted roots and the
hostname checked; an explicit ``ssl=`` overrides the URL's ``sslmode``).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys

SETUP = os.environ.get("CLIENT_SETUP", "")
QUERY = os.environ.get("CLIENT_QUERY", "select current_user")


def with_psycopg(url: str) -> dict[str, object]:
    import psycopg

    with psycopg.connect(url, connect_timeout=10) as conn:
        if SETUP:
            conn.execute(SETUP)
        row = conn.execute(QUERY).fetchone()
        assert row is not None
        return {"user": row[0], "tls": conn.pgconn.ssl_in_use, "libpq": psycopg.pq.version()}


async def with_asyncpg(url: str, default_context: bool) -> dict[str, object]:
    import asyncpg

    options: dict[str, object] = {"timeout": 10}
    if default_context:
        options["ssl"] = ssl.create_default_context()
    conn = await asyncpg.connect(url, **options)
    try:
        # asyncpg does not say whether TLS is on; the pg_tls proxy refuses plaintext anyway.
        if SETUP:
            await conn.execute(SETUP)
        return {"user": await conn.fetchval(QUERY)}
    finally:
        await conn.close()


def main(argv: list[str]) -> int:
    client, url = argv[1], argv[2]
    try:
        if client == "psycopg":
            result = with_psycopg(url)
        else:
            result = asyncio.run(with_asyncpg(url, "--ssl-default-context" in argv[3:]))
    except Exception as exc:
        print(f"{type(exc).__module__}.{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
