"""TLS for the gRPC port: the server's credentials, the clients' channel, and the terminal
named by a client certificate (docs/AUTH.md section 9).

Every file is read and checked here, before grpc sees it, so that a missing file, a key
that does not belong to its certificate or a file that is not PEM stops the program at
start with a message naming the file, instead of a handshake that fails later for every
client. The standard library's `ssl` does the checking, so `cryptography` stays a test
dependency.

The metrics HTTP endpoint is not covered: it stays plain HTTP.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

__all__ = [
    "ClientTls",
    "ServerTls",
    "TlsError",
    "is_loopback",
    "open_channel",
    "peer_terminal",
]

# A certificate chain or a key is a few KB; a CA bundle (the system's roots) a few hundred.
PEM_BYTES_MAX = 4 * 1024 * 1024
# The auth context key grpc fills from the verified client certificate's subject.
_COMMON_NAME_KEY = "x509_common_name"
# Overrides the name the server's certificate is checked against (grpc's own option).
_TARGET_NAME_OPTION = "grpc.ssl_target_name_override"


class TlsError(ValueError):
    """A TLS file cannot be used; the message names the file and says why."""


@dataclass(frozen=True)
class ServerTls:
    """`mms serve --tls-cert --tls-key [--tls-client-ca]`."""

    cert_file: str
    key_file: str
    # "" = no client certificates asked for; else they are required and checked against it.
    client_ca_file: str = ""

    def credentials(self) -> grpc.ServerCredentials:
        """Reads and checks the files; raises TlsError naming the one that is wrong."""
        chain, key = _read_pair(self.cert_file, self.key_file)
        if not self.client_ca_file:
            return grpc.ssl_server_credentials([(key, chain)])
        client_ca = _read_certificates(self.client_ca_file, "client CA")
        return grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=client_ca, require_client_auth=True
        )

    def describe(self) -> str:
        if not self.client_ca_file:
            return "TLS"
        return f"mutual TLS, client certificates of {os.path.abspath(self.client_ca_file)}"


@dataclass(frozen=True)
class ClientTls:
    """A client's TLS: the `mms` command's `--tls*` options, the bridge's `[engine] tls*`."""

    ca_file: str = ""  # "" = the system's roots
    cert_file: str = ""  # with key_file: the client certificate (mutual TLS)
    key_file: str = ""
    server_name: str = ""  # "" = the host of the address

    def credentials(self) -> grpc.ChannelCredentials:
        """Reads and checks the files; raises TlsError naming the one that is wrong."""
        if self.cert_file and not self.key_file:
            raise TlsError(f"TLS client certificate {self.cert_file}: its key is not given")
        if self.key_file and not self.cert_file:
            raise TlsError(f"TLS client key {self.key_file}: its certificate is not given")
        roots = _read_certificates(self.ca_file, "CA") if self.ca_file else _system_roots()
        if not self.cert_file:
            return grpc.ssl_channel_credentials(root_certificates=roots)
        chain, key = _read_pair(self.cert_file, self.key_file)
        return grpc.ssl_channel_credentials(
            root_certificates=roots, private_key=key, certificate_chain=chain
        )


def open_channel(
    address: str, tls: ClientTls | None, options: Sequence[tuple[str, object]] = ()
) -> grpc.Channel:
    """The one way clients connect: plaintext without `tls`, else verified TLS."""
    if tls is None:
        return grpc.insecure_channel(address, options=list(options))
    secure_options = list(options)
    if tls.server_name:
        secure_options.append((_TARGET_NAME_OPTION, tls.server_name))
    return grpc.secure_channel(address, tls.credentials(), options=secure_options)


def peer_terminal(context: grpc.ServicerContext) -> str | None:
    """The terminal id of the caller: the subject CN of its client certificate.

    Only a server with a client CA asks for client certificates, and it requires and
    verifies them, so a name here was vouched for by that CA. None when the connection
    carries no client certificate (plaintext, TLS without a client CA) or its subject
    has no single UTF-8 CN."""
    names = context.auth_context().get(_COMMON_NAME_KEY, [])
    if len(names) != 1:
        return None
    try:
        return names[0].decode("utf-8")
    except UnicodeDecodeError:
        return None


def is_loopback(listen: str) -> bool:
    """Whether HOST:PORT listens on loopback only (`localhost`, 127.0.0.0/8, `[::1]`).
    An empty host, a wildcard or any other name is taken as reachable from outside."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_pem(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            data = file.read(PEM_BYTES_MAX + 1)
    except OSError as error:
        raise TlsError(f"TLS {what} {path}: cannot read: {error.strerror}") from error
    if len(data) > PEM_BYTES_MAX:
        raise TlsError(f"TLS {what} {path}: larger than {PEM_BYTES_MAX} bytes")
    return data


def _read_certificates(path: str, what: str) -> bytes:
    """A PEM file of one or more certificates."""
    data = _read_pem(path, what)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=data.decode("ascii"))
    except (UnicodeDecodeError, ssl.SSLError) as error:
        raise TlsError(f"TLS {what} {path}: not a PEM certificate file") from error
    return data


def _read_pair(cert_file: str, key_file: str) -> tuple[bytes, bytes]:
    """A certificate chain and its private key, checked to belong together."""
    chain = _read_certificates(cert_file, "certificate")
    key = _read_pem(key_file, "key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_password(key_file))
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise TlsError(
                f"TLS key {key_file}: does not belong to the certificate {cert_file}"
            ) from error
        raise TlsError(f"TLS key {key_file}: not a PEM private key") from error
    return chain, key


def _no_password(key_file: str) -> Callable[[], bytes]:
    """ssl's password callback: grpc takes unencrypted keys only, so an encrypted one is
    refused at start, never prompted for."""

    def refuse() -> bytes:
        raise TlsError(f"TLS key {key_file}: encrypted; grpc needs it unencrypted (chmod 600)")

    return refuse


def _system_roots() -> bytes | None:
    """The system's CA bundle (OpenSSL's default file); None lets grpc use its own roots
    when the system has no bundle file."""
    cafile = ssl.get_default_verify_paths().cafile
    if cafile is None:
        return None
    return _read_certificates(cafile, "system CA bundle")
