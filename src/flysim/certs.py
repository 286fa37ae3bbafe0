"""The simulator's test CA and the pg_tls certificates it issues.

Each simulator has a CA of its own (:class:`CertificateAuthority`); the proxy
(:mod:`flysim.proxy`) serves each app a certificate it issued (:func:`make_certificate`), so a
client that trusts the CA verifies them as it verifies Fly's real certificates against its system
store.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class CertificateAuthority:
    """The simulator's test CA: an EC key and a self-signed CA certificate (``BasicConstraints``
    ``ca=True``, key usage cert-sign and CRL-sign, subject key identifier). The proxy's per-app
    certificates are issued by it, so a client that trusts :attr:`cert_pem` can verify them the
    way it verifies Fly's real certificates against its system store."""

    def __init__(self, name: str = "flysim test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "flysim"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        public = self.key.public_key()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: str) -> str:
        """Write the CA certificate (PEM) into ``directory``; returns its path."""
        fd, path = tempfile.mkstemp(prefix="flysim-ca-", suffix=".crt", dir=directory)
        with os.fdopen(fd, "wb") as f:
            f.write(self.cert_pem)
        return path

    def issue(self, app: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A server certificate for ``<app>.fly.dev``, ``*.fly.dev`` and ``localhost`` (which
        plays ``<app>.fly.dev`` here; see ``Simulator(hostname_on_loopback=...)``). It names no
        IP address: a client that verifies the hostname refuses ``127.0.0.1``, as it would
        refuse a Fly IP address in place of the name."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        ca_public = self.key.public_key()
        ski = x509.SubjectKeyIdentifier.from_public_key(ca_public)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{app}.fly.dev")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName(f"{app}.fly.dev"),
                        x509.DNSName("*.fly.dev"),
                        x509.DNSName("localhost"),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert, key


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """A CA's (certificate and CRL signing) or a TLS server's (ECDSA signatures) key usage."""
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def make_certificate(
    app: str, directory: str, ca: CertificateAuthority | None = None
) -> tuple[str, str]:
    """A certificate for ``app`` issued by ``ca`` (a fresh CA when None), written into
    ``directory``: (cert path, key path)."""
    cert, key = (ca or CertificateAuthority()).issue(app)
    fd, cert_path = tempfile.mkstemp(prefix=f"{app}-", suffix=".crt", dir=directory)
    with os.fdopen(fd, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd, key_path = tempfile.mkstemp(prefix=f"{app}-", suffix=".key", dir=directory)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path
