"""TLS on the gRPC port, end to end: `mms serve --tls-cert --tls-key [--tls-client-ca]`
with a CA and certificates made here, the slice over TLS and over mutual TLS, the `mms`
command and the bridge as TLS clients, and the refusals: a plaintext client, a client
that does not trust the server, a client without (or with a foreign) certificate, and a
server given files it cannot use."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from client import PM, Client, take_rest
from conftest import (
    REPO,
    RunningServer,
    TokenInterceptor,
    running_server,
    token_env,
    token_file_for,
)
from engine.proto import auth_pb2, auth_pb2_grpc, config_pb2
from engine.tls import ClientTls, ServerTls, is_loopback, open_channel, peer_terminal

COMMAND_TIMEOUT_S = 60
# Long enough for the module, short enough that nothing made here is worth keeping.
VALIDITY = datetime.timedelta(hours=1)
TERMINAL = "T-01"
# A connection attempt that must fail fails fast; one that must work has the time it needs.
REFUSED_TIMEOUT_S = 5


# --- certificates ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files in a folder: a CA, a server certificate for 127.0.0.1 and localhost, a
    client certificate of terminal T-01, and a second CA's client certificate."""

    folder: Path

    def path(self, name: str) -> str:
        return str(self.folder / name)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    common_name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    usage: x509.ObjectIdentifier | None = None,
    names: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An EC P-256 key and its certificate, signed by `issuer` (None: a self-signed CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer_name or _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signing_key, hashes.SHA256()), key


def _write(folder: Path, stem: str, pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]):
    certificate, key = pair
    (folder / f"{stem}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_path = folder / f"{stem}.key"
    key_path.write_bytes(key_pem)
    key_path.chmod(0o600)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = _issue("mms test CA", None)
    _write(folder, "ca", ca)
    server_names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    _write(
        folder,
        "server",
        _issue("localhost", ca, usage=ExtendedKeyUsageOID.SERVER_AUTH, names=server_names),
    )
    _write(folder, "client", _issue(TERMINAL, ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH))
    other_ca = _issue("someone else's CA", None)
    _write(folder, "other-ca", other_ca)
    _write(folder, "stranger", _issue(TERMINAL, other_ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH))
    return Pki(folder)


def _trusting(pki: Pki, **fields: str) -> ClientTls:
    """A client that checks the server against the test CA."""
    return ClientTls(ca_file=pki.path("ca.pem"), **fields)


def _with_certificate(pki: Pki, stem: str = "client") -> ClientTls:
    return _trusting(pki, cert_file=pki.path(f"{stem}.pem"), key_file=pki.path(f"{stem}.key"))


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    arguments = ["--tls-cert", pki.path("server.pem"), "--tls-key", pki.path("server.key")]
    yield from running_server(tmp_path_factory.mktemp("tls") / "data", arguments, _trusting(pki))


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    arguments = [
        *("--tls-cert", pki.path("server.pem"), "--tls-key", pki.path("server.key")),
        *("--tls-client-ca", pki.path("ca.pem")),
    ]
    folder = tmp_path_factory.mktemp("mtls") / "data"
    yield from running_server(folder, arguments, _with_certificate(pki))


def _merchant() -> str:
    return f"m{uuid.uuid4().hex[:12]}"


def _slice(channel: grpc.Channel, merchant: str) -> None:
    """Config, register, recharge, checkout from stored value, the balance read back."""
    client = Client(channel, merchant=merchant)
    assert client.apply().version == 1
    member = client.register("13800138000", card_no="C0001").member
    recharged = client.recharge(10_000, card_no="C0001")  # 充100送20 in the demo config
    assert (recharged.amount_fen, recharged.bonus_fen) == (10_000, 2_000)
    paid = client.checkout(5_850, card_no="C0001")
    assert [(p.method, p.amount_fen, p.principal_fen) for p in paid.payments] == [
        (PM.STORED_VALUE, 5_850, 5_850)
    ]
    shown = client.get(member_id=member.member_id).balances
    assert (shown.principal_fen, shown.bonus_fen, shown.points) == (4_150, 2_000, 58)
    cash = client.checkout(1_234, tenders=[take_rest(PM.CASH, cash_received_fen=2_000)])
    assert (cash.payments[0].amount_fen, cash.payments[0].change_fen) == (1_234, 766)


def _refused(channel: grpc.Channel) -> grpc.RpcError:
    """The error of a call on a channel the TLS port refuses: UNAVAILABLE, the connection
    ended in its handshake before any handler answered."""
    client = Client(channel, merchant=_merchant())
    with pytest.raises(grpc.RpcError) as caught:
        client.config.GetConfig(
            config_pb2.GetConfigRequest(), timeout=REFUSED_TIMEOUT_S, metadata=client.metadata
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
    return caught.value


# --- TLS -----------------------------------------------------------------------------


def test_the_slice_over_tls(pki: Pki, tls_server: RunningServer) -> None:
    assert any(line.endswith("(TLS)\n") for line in tls_server.output), tls_server.output
    with tls_server.channel() as channel:
        _slice(channel, _merchant())
    # The certificate names localhost too; --tls-server-name is how a client says so.
    merchant = _merchant()
    with grpc.intercept_channel(
        open_channel(tls_server.address, _trusting(pki, server_name="localhost")),
        TokenInterceptor(tls_server, merchant),
    ) as channel:
        assert Client(channel, merchant=merchant).apply().version == 1


def test_the_tls_port_refuses_plaintext_and_untrusting_clients(
    pki: Pki, tls_server: RunningServer
) -> None:
    with grpc.insecure_channel(tls_server.address) as channel:
        _refused(channel)
    # The system's roots do not hold the test CA, nor does another CA.
    with open_channel(tls_server.address, ClientTls()) as channel:
        _refused(channel)
    with open_channel(tls_server.address, ClientTls(ca_file=pki.path("other-ca.pem"))) as channel:
        _refused(channel)
    # The certificate is not for this name.
    with open_channel(tls_server.address, _trusting(pki, server_name="mms.example")) as channel:
        _refused(channel)


# --- mutual TLS ------------------------------------------------------------------------


def test_the_slice_over_mutual_tls(mtls_server: RunningServer) -> None:
    assert any("mutual TLS, client certificates of" in line for line in mtls_server.output)
    merchant = _merchant()
    with mtls_server.channel(merchant) as channel:
        _slice(channel, merchant)
        # The terminal of every change is the client certificate's CN, whatever the
        # client says in mms-terminal.
        audit = auth_pb2_grpc.AuditServiceStub(channel)
        entries = audit.ListAudit(
            auth_pb2.ListAuditRequest(), metadata=(("mms-terminal", "forged"),)
        ).entries
        assert entries and {entry.terminal_id for entry in entries} == {TERMINAL}


def test_mutual_tls_refuses_a_client_without_a_certificate_of_its_ca(
    pki: Pki, mtls_server: RunningServer
) -> None:
    with open_channel(mtls_server.address, _trusting(pki)) as channel:
        _refused(channel)
    with open_channel(mtls_server.address, _with_certificate(pki, "stranger")) as channel:
        _refused(channel)  # CN T-01 too, but not issued by the server's client CA


class _TerminalEcho:
    """A gRPC server with the engine's TLS credentials and one method that answers what
    `peer_terminal` reads from the caller's connection."""

    METHOD = "/mms.test.Peer/Terminal"

    def __init__(self, tls: ServerTls | None) -> None:
        def terminal(_request: bytes, context: grpc.ServicerContext) -> bytes:
            name = peer_terminal(context)
            return b"<none>" if name is None else name.encode("utf-8")

        handler = grpc.method_handlers_generic_handler(
            "mms.test.Peer", {"Terminal": grpc.unary_unary_rpc_method_handler(terminal)}
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers([handler])
        if tls is None:
            port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            port = self.server.add_secure_port("127.0.0.1:0", tls.credentials())
        self.address = f"127.0.0.1:{port}"
        self.server.start()

    def ask(self, client_tls: ClientTls | None) -> str:
        with open_channel(self.address, client_tls) as channel:
            answer = channel.unary_unary(self.METHOD)(b"", timeout=COMMAND_TIMEOUT_S)
        return answer.decode("utf-8")

    def stop(self) -> None:
        self.server.stop(None).wait()


def test_peer_terminal_is_the_verified_client_certificate_cn(pki: Pki) -> None:
    server_files = (pki.path("server.pem"), pki.path("server.key"))
    mutual = _TerminalEcho(ServerTls(*server_files, client_ca_file=pki.path("ca.pem")))
    server_only = _TerminalEcho(ServerTls(*server_files))
    plaintext = _TerminalEcho(None)
    try:
        assert mutual.ask(_with_certificate(pki)) == TERMINAL
        # Without a client CA no certificate is asked for, so none names a terminal.
        assert server_only.ask(_with_certificate(pki)) == "<none>"
        assert plaintext.ask(None) == "<none>"
    finally:
        for echo in (mutual, server_only, plaintext):
            echo.stop()


# --- the mms command -------------------------------------------------------------------


def mms(
    address: str, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m engine ARGV --server ADDRESS`, without the MMS_TLS_* of the caller."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MMS_TLS_")}
    return subprocess.run(
        [sys.executable, "-m", "engine", *argv, "--server", address],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=COMMAND_TIMEOUT_S,
        env={
            **environment,
            **token_env(address, argv),
            "PYTHONIOENCODING": "utf-8",
            **(env or {}),
        },
    )


def _member_with_balance(server: RunningServer) -> str:
    merchant = _merchant()
    with server.channel() as channel:
        client = Client(channel, merchant=merchant)
        client.apply()
        client.register("13800138000", card_no="C0001")
        client.recharge(10_000, card_no="C0001")
    return merchant


def _balance_fen(result: subprocess.CompletedProcess[str]) -> tuple[int, int]:
    assert result.returncode == 0, (result.stdout, result.stderr)
    balances = json.loads(result.stdout)["balances"]
    return int(balances["principal_fen"]), int(balances["bonus_fen"])


def test_the_mms_command_over_tls(pki: Pki, tls_server: RunningServer) -> None:
    merchant = _member_with_balance(tls_server)
    show = ("member", "show", "--phone", "13800138000", "--merchant", merchant, "--json")
    ca = pki.path("ca.pem")
    assert _balance_fen(mms(tls_server.address, *show, "--tls-ca", ca)) == (10_000, 2_000)
    assert _balance_fen(mms(tls_server.address, *show, env={"MMS_TLS_CA": ca})) == (10_000, 2_000)
    by_name = ("--tls-ca", ca, "--tls-server-name", "localhost")
    assert _balance_fen(mms(tls_server.address, *show, *by_name)) == (10_000, 2_000)

    plaintext = mms(tls_server.address, *show)
    assert plaintext.returncode == 3, plaintext.stderr
    assert plaintext.stdout == ""
    assert plaintext.stderr.startswith("error: UNAVAILABLE: "), plaintext.stderr
    assert "--tls" in plaintext.stderr  # the note says TLS may be what is missing

    missing = mms(tls_server.address, *show, "--tls-ca", pki.path("absent.pem"))
    assert missing.returncode == 2
    assert (
        missing.stderr
        == f"error: TLS CA {pki.path('absent.pem')}: cannot read: No such file or directory\n"
    )


def test_the_mms_command_over_mutual_tls(pki: Pki, mtls_server: RunningServer) -> None:
    merchant = _member_with_balance(mtls_server)
    show = ("member", "show", "--phone", "13800138000", "--merchant", merchant, "--json")
    files = {
        "MMS_TLS_CA": pki.path("ca.pem"),
        "MMS_TLS_CERT": pki.path("client.pem"),
        "MMS_TLS_KEY": pki.path("client.key"),
    }
    assert _balance_fen(mms(mtls_server.address, *show, env=files)) == (10_000, 2_000)
    flags = [f"--tls-{name}={files[f'MMS_TLS_{name.upper()}']}" for name in ("ca", "cert", "key")]
    assert _balance_fen(mms(mtls_server.address, *show, *flags)) == (10_000, 2_000)

    without = mms(mtls_server.address, *show, "--tls-ca", pki.path("ca.pem"))
    assert without.returncode == 3 and without.stderr.startswith("error: UNAVAILABLE: ")
    half = mms(mtls_server.address, *show, *flags[:2])
    assert half.returncode == 2
    assert "its key is not given" in half.stderr
    wrong_key = mms(mtls_server.address, *show, *flags[:2], f"--tls-key={pki.path('server.key')}")
    assert wrong_key.returncode == 2
    assert wrong_key.stderr == (
        f"error: TLS key {pki.path('server.key')}: does not belong to the certificate "
        f"{pki.path('client.pem')}\n"
    )


# --- the bridge -------------------------------------------------------------------------


def test_the_bridge_checks_out_over_mutual_tls(
    pki: Pki, mtls_server: RunningServer, tmp_path: Path
) -> None:
    merchant = _merchant()
    with mtls_server.channel() as channel:
        Client(channel, merchant=merchant).apply()
    for name in ("ca.pem", "client.pem", "client.key"):  # relative to the config file
        (tmp_path / name).write_bytes((pki.folder / name).read_bytes())
    engine = (
        f'address = "{mtls_server.address}"\nmerchant = "{merchant}"\n'
        'tls_ca = "ca.pem"\ntls_cert = "client.pem"\ntls_key = "client.key"\n'
        f'token_file = "{token_file_for(tmp_path, merchant, mtls_server)}"\n'
    )
    config = tmp_path / "terminal.toml"
    config.write_text(f'[terminal]\nid = "T01"\nstore = "S001"\n\n[engine]\n{engine}')
    bridge = Path(sys.executable).parent / "mms-bridge"
    command = "checkout --amount 12.34 --pay cash --cash-received 20\nquit\n"
    ran = subprocess.run(
        [str(bridge), "--config", str(config)],
        input=command,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        cwd=REPO,  # not the config's folder: the paths are taken from there all the same
    )
    assert ran.returncode == 0, ran.stderr
    assert "due 12.34 change 7.66" in ran.stdout, (ran.stdout, ran.stderr)

    (tmp_path / "client.key").write_bytes((pki.folder / "stranger.key").read_bytes())
    ran = subprocess.run(
        [str(bridge), "--config", str(config)],
        input="",
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert ran.returncode == 2
    assert ran.stderr == (
        f"mms-bridge: TLS key {tmp_path / 'client.key'}: does not belong to the certificate "
        f"{tmp_path / 'client.pem'}\n"
    )


# --- the server's start ----------------------------------------------------------------


def _serve(folder: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`mms serve` with arguments it must refuse: it exits at once."""
    command = [sys.executable, "-m", "engine", "serve", "--data", str(folder / "data")]
    return subprocess.run(
        [*command, "--listen", "127.0.0.1:0", "--metrics-port", "0", *arguments],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def test_the_server_refuses_to_start_with_files_it_cannot_use(pki: Pki, tmp_path: Path) -> None:
    cert, key, ca = pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem")
    absent = str(tmp_path / "absent.pem")
    not_pem = tmp_path / "garbage.pem"
    not_pem.write_bytes(b"\x30\x82 DER, not PEM")
    encrypted = tmp_path / "encrypted.key"
    key_object = serialization.load_pem_private_key((pki.folder / "server.key").read_bytes(), None)
    encrypted.write_bytes(
        key_object.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    cases = [
        (("--tls-cert", absent, "--tls-key", key), f"TLS certificate {absent}: cannot read"),
        (("--tls-cert", str(not_pem), "--tls-key", key), f"{not_pem}: not a PEM certificate"),
        (
            ("--tls-cert", cert, "--tls-key", str(not_pem)),
            f"TLS key {not_pem}: not a PEM private key",
        ),
        (
            ("--tls-cert", cert, "--tls-key", pki.path("client.key")),
            "does not belong to the certificate",
        ),
        (("--tls-cert", cert, "--tls-key", str(encrypted)), f"TLS key {encrypted}: encrypted"),
        (
            ("--tls-cert", cert, "--tls-key", key, "--tls-client-ca", absent),
            f"TLS client CA {absent}",
        ),
        (
            ("--tls-cert", cert, "--tls-key", key, "--tls-client-ca", key),
            f"TLS client CA {key}: not a PEM",
        ),
    ]
    for arguments, message in cases:
        ran = _serve(tmp_path, *arguments)
        assert ran.returncode == 1, (arguments, ran.stdout, ran.stderr)
        assert ran.stderr.startswith("mms serve: cannot start: "), ran.stderr
        assert message in ran.stderr, (arguments, ran.stderr)
        assert ran.stdout == ""
    assert not (tmp_path / "data").exists()  # refused before the data folder was touched
    for arguments in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", ca)):
        ran = _serve(tmp_path, *arguments)
        assert ran.returncode == 2, (arguments, ran.stderr)
        assert "--tls-cert" in ran.stderr


def test_plaintext_off_loopback_is_warned_about_once(tmp_path: Path) -> None:
    for listen, warned in (("127.0.0.1:0", False), ("0.0.0.0:0", True)):
        running = RunningServer(tmp_path / listen.replace(":", "_"), ["--listen", listen])
        running.start()
        assert running.stop() == 0
        warnings = [line for line in running.output if "WARNING" in line]
        assert len(warnings) == (1 if warned else 0), running.output
    assert "plaintext gRPC on 0.0.0.0" in warnings[0] and "--tls-cert" in warnings[0]


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.8.9.10:1", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        (":50051", False),
        ("192.168.1.20:50051", False),
        ("mms.example:50051", False),
    ],
)
def test_is_loopback(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback
