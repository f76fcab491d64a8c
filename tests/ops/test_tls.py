"""TLS mode end to end: `devpush up` with an ACME cert resolver pointed at Pebble (Debian's
`pebble` package, the ACME test server), a real HTTP-01 challenge, and a custom domain served
over HTTPS with a certificate issued by Pebble's CA.

Pebble resolves every hostname through a small DNS server on loopback (dnslib) that answers
127.0.0.1, and validates HTTP-01 on `httpPort`, which is Traefik's HTTP entrypoint here; no
PEBBLE_VA_ALWAYS_VALID shortcut is used. Pebble's directory is served over HTTPS with a
certificate from a throwaway CA made here, which Traefik trusts through
DEVPUSH_ACME_CA_CERTIFICATES (LEGO_CA_CERTIFICATES of the Traefik child).
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from tests.conftest import free_port
from tests.e2e.apps import Api, make_repo
from tests.e2e.platform import RunningPlatform, platform_env, start_platform, wait_health

pytestmark = pytest.mark.ops

APP_HOST = "devpush.h4tls.test"
DEPLOY_DOMAIN = "apps.h4tls.test"
CUSTOM_DOMAIN = "www.h4shop.test"
NO_ADDRESS = "nocert."  # names the DNS gives no address: their HTTP-01 challenge fails
CERT_GRACE = 20  # DEVPUSH_CERTIFICATE_GRACE of the platform here
ISSUE_TIMEOUT = 180  # a loaded machine: issuance is a few HTTP-01 rounds per certificate


# ---- a throwaway CA for Pebble's own HTTPS directory -------------------------------------------
def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_directory_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1/localhost signed by it: (ca, cert, key) PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("h4 pebble directory CA"))
        .issuer_name(_name("h4 pebble directory CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


# ---- DNS for Pebble's validation authority: every name is 127.0.0.1 -----------------------------
class LoopbackResolver(BaseResolver):
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        qname = request.q.qname
        self.asked.append((str(qname).rstrip(".").lower(), QTYPE[request.q.qtype]))
        if request.q.qtype == QTYPE.A and not str(qname).startswith(NO_ADDRESS):
            reply.add_answer(RR(qname, QTYPE.A, rdata=A("127.0.0.1"), ttl=5))
        return reply  # AAAA, CAA, ...: an empty NOERROR answer


@pytest.fixture(scope="module")
def dns() -> Iterator[tuple[int, LoopbackResolver]]:
    resolver = LoopbackResolver()
    port = free_port()
    quiet = DNSLogger(prefix=False, logf=lambda _: None)
    servers = [
        DNSServer(resolver, port=port, address="127.0.0.1", tcp=tcp, logger=quiet)
        for tcp in (False, True)
    ]
    for server in servers:
        server.start_thread()
    yield port, resolver
    for server in servers:
        server.stop()


# ---- Pebble ------------------------------------------------------------------------------------
@dataclass
class Pebble:
    directory_url: str
    management_port: int
    directory_ca: Path
    proc: subprocess.Popen[bytes]
    log: Path
    http_port: int
    roots: list[str] = field(default_factory=list)

    def root_pem(self) -> str:
        """Pebble's issuing root (regenerated at each start), from its management API."""
        context = ssl.create_default_context(cafile=str(self.directory_ca))
        conn = http.client.HTTPSConnection("127.0.0.1", self.management_port, context=context)
        try:
            conn.request("GET", "/roots/0")
            response = conn.getresponse()
            body = response.read().decode()
        finally:
            conn.close()
        assert response.status == 200, body
        assert "BEGIN CERTIFICATE" in body
        return body


def _wait_tls_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"pebble exited with {proc.returncode}:\n{log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"pebble did not listen on {port}:\n{log.read_text()}")


@pytest.fixture(scope="module")
def pebble(
    tmp_path_factory: pytest.TempPathFactory, dns: tuple[int, LoopbackResolver]
) -> Iterator[Pebble]:
    binary = shutil.which("pebble")
    assert binary, "Pebble is missing: run `bash scripts/test-setup.sh` (apt package pebble)"
    work = tmp_path_factory.mktemp("h4-pebble")
    ca, cert, key = make_directory_ca(work)
    listen, management, http_port = free_port(), free_port(), free_port()
    config = work / "pebble.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{listen}",
                    "managementListenAddress": f"127.0.0.1:{management}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    # HTTP-01 is checked on this port of each name: Traefik's HTTP entrypoint.
                    "httpPort": http_port,
                    "tlsPort": free_port(),
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    log = work / "pebble.log"
    env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PATH": "/usr/bin:/bin"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [binary, "-config", str(config), "-dnsserver", f"127.0.0.1:{dns[0]}"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_tls_port(listen, proc, log)
        _wait_tls_port(management, proc, log)
        yield Pebble(f"https://127.0.0.1:{listen}/dir", management, ca, proc, log, http_port)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def tls_platform(
    tmp_path_factory: pytest.TempPathFactory, pebble: Pebble
) -> Iterator[RunningPlatform]:
    data = tmp_path_factory.mktemp("h4-tls-platform")
    env = platform_env(
        data,
        DEVPUSH_RUNTIME="process",
        DEVPUSH_DEPLOY_TIMEOUT="30",
        DEVPUSH_VERIFY_DOMAINS="false",
        DEVPUSH_HTTP_PORT=str(pebble.http_port),
        DEVPUSH_HTTPS_PORT=str(free_port()),
        DEVPUSH_URL_SCHEME="https",
        DEVPUSH_CERT_RESOLVER="pebble",
        DEVPUSH_ACME_EMAIL="ops@h4tls.test",
        DEVPUSH_ACME_CA_SERVER=pebble.directory_url,
        DEVPUSH_ACME_CA_CERTIFICATES=str(pebble.directory_ca),
        DEVPUSH_APP_HOSTNAME=APP_HOST,
        DEVPUSH_DEPLOY_DOMAIN=DEPLOY_DOMAIN,
        DEVPUSH_CERTIFICATE_GRACE=str(CERT_GRACE),
    )
    running = start_platform(data, env=env, timeout=180)
    try:
        wait_health(running.app_url, timeout=60)
        yield running
    finally:
        code = running.stop()
        assert code == 0, running.text()[-3000:]


# ---- HTTPS by name to 127.0.0.1 -----------------------------------------------------------------
class _LoopbackHTTPS(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 with SNI, certificate check and Host header for `host`."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


@dataclass
class Fetched:
    status: int
    headers: http.client.HTTPMessage
    body: str
    peer: x509.Certificate


def https_get(host: str, port: int, path: str, context: ssl.SSLContext) -> Fetched:
    conn = _LoopbackHTTPS(host, port, context=context, timeout=15)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        assert conn.sock is not None
        der = conn.sock.getpeercert(binary_form=True)
    finally:
        conn.close()
    assert der is not None
    return Fetched(response.status, response.headers, body, x509.load_der_x509_certificate(der))


def pebble_context(root_pem: str) -> ssl.SSLContext:
    """Trusts Pebble's root only: a handshake succeeds only with a certificate it issued."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=root_pem)
    return context


def wait_for_pebble_cert(host: str, port: int, root_pem: str, platform: RunningPlatform) -> None:
    """Traefik serves its default certificate until the ACME order completes."""
    context = pebble_context(root_pem)
    deadline = time.monotonic() + ISSUE_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        try:
            https_get(host, port, "/", context)
            return
        except (ssl.SSLError, OSError) as exc:
            last = repr(exc)
        time.sleep(1)
    traefik_log = platform.data_dir / "logs" / "traefik.log"
    raise AssertionError(
        f"no Pebble-issued certificate for {host}: {last}\n"
        f"{traefik_log.read_text()[-3000:] if traefik_log.exists() else ''}"
    )


def _insecure() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# ---- the tests ----------------------------------------------------------------------------------
def test_static_config_points_traefik_at_pebble(tls_platform: RunningPlatform) -> None:
    import yaml

    static = yaml.safe_load((tls_platform.data_dir / "traefik" / "traefik.yml").read_text())
    acme = static["certificatesResolvers"]["pebble"]["acme"]
    assert acme["caServer"] == tls_platform.env["DEVPUSH_ACME_CA_SERVER"]
    assert acme["httpChallenge"] == {"entryPoint": "web"}
    assert static["entryPoints"]["web"]["http"]["redirections"]["entryPoint"]["to"] == "websecure"


def test_custom_domain_is_served_over_https_with_a_pebble_certificate(
    tls_platform: RunningPlatform,
    pebble: Pebble,
    dns: tuple[int, LoopbackResolver],
    tmp_path: Path,
) -> None:
    https_port = int(tls_platform.env["DEVPUSH_HTTPS_PORT"])
    http_port = int(tls_platform.env["DEVPUSH_HTTP_PORT"])
    api = Api(tls_platform.app_url, tls_platform.token(), proxy_url="")
    project = api.project(make_repo(tmp_path / "repo", body="served over tls"), "tlsshop")
    deployment = api.wait(api.deploy(project["id"])["id"])
    assert deployment["conclusion"] == "succeeded", deployment
    assert deployment["urls"]["environment"].startswith(
        f"https://tlsshop.{DEPLOY_DOMAIN}:{https_port}"
    ), deployment["urls"]
    added = api.post(
        f"/api/v1/projects/{project['id']}/domains", {"hostname": CUSTOM_DOMAIN}, expect=201
    )
    assert added["status"] == "verified", added

    root = pebble.root_pem()
    wait_for_pebble_cert(CUSTOM_DOMAIN, https_port, root, tls_platform)
    served = https_get(CUSTOM_DOMAIN, https_port, "/", pebble_context(root))
    assert served.status == 200 and served.body.strip() == "served over tls", served
    issuer = served.peer.issuer.rfc4514_string()
    assert "Pebble" in issuer, issuer
    names = served.peer.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert CUSTOM_DOMAIN in names.value.get_values_for_type(x509.DNSName)
    # A real HTTP-01 challenge: Pebble's validation authority looked the name up in our DNS.
    assert (CUSTOM_DOMAIN, "A") in dns[1].asked, dns[1].asked[-20:]
    validated = f"Attempting to validate w/ HTTP: http://{CUSTOM_DOMAIN}:{http_port}/"
    assert validated in pebble.log.read_text()
    acme = json.loads((tls_platform.data_dir / "traefik" / "acme.json").read_text())
    stored = [c["domain"] for c in acme["pebble"]["Certificates"] or []]
    assert any(CUSTOM_DOMAIN in [d["main"], *(d.get("sans") or [])] for d in stored), stored

    # Plain HTTP answers with a redirect to the HTTPS entrypoint, same host and path.
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=15)
    try:
        conn.request("GET", "/some/path?x=1", headers={"Host": CUSTOM_DOMAIN})
        redirect = conn.getresponse()
        redirect.read()
    finally:
        conn.close()
    assert redirect.status in (301, 302, 307, 308), redirect.status
    assert redirect.headers["Location"] == f"https://{CUSTOM_DOMAIN}:{https_port}/some/path?x=1"

    # Failure path: a hostname nobody added gets neither the app nor a Pebble certificate.
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get("unknown.h4shop.test", https_port, "/", pebble_context(root))
    unknown = https_get("unknown.h4shop.test", https_port, "/", _insecure())
    assert unknown.status == 404 and "served over tls" not in unknown.body
    assert "Pebble" not in unknown.peer.issuer.rfc4514_string()
    stray = https_get(f"nope.{DEPLOY_DOMAIN}", https_port, "/", _insecure())
    assert stray.status == 404 and "served over tls" not in stray.body


def test_dashboard_sign_in_over_https_sets_a_secure_cookie(
    tls_platform: RunningPlatform, pebble: Pebble
) -> None:
    https_port = int(tls_platform.env["DEVPUSH_HTTPS_PORT"])
    link = "".join(tls_platform.cli("user", "link", "--email", "admin@localhost").stdout.split())
    prefix = f"https://{APP_HOST}:{https_port}/auth/link/"
    assert link.startswith(prefix), link
    root = pebble.root_pem()
    wait_for_pebble_cert(APP_HOST, https_port, root, tls_platform)
    signed_in = https_get(
        APP_HOST,
        https_port,
        link.removeprefix(f"https://{APP_HOST}:{https_port}"),
        pebble_context(root),
    )
    assert signed_in.status in (302, 303), (signed_in.status, signed_in.body[:300])
    cookie = signed_in.headers["Set-Cookie"].lower()
    assert cookie.startswith("devpush_session=") and "; secure" in cookie, cookie
    assert signed_in.headers["Strict-Transport-Security"], signed_in.headers


def test_a_domain_whose_challenge_fails_is_marked_and_sent_as_an_event(
    tls_platform: RunningPlatform, pebble: Pebble, tmp_path: Path
) -> None:
    """The ACME order of a name that does not resolve fails at Pebble; once the grace is over
    the domain reads certificate `failed` and `domain.certificate_failed` is in the audit log."""
    api = Api(tls_platform.app_url, tls_platform.token(), proxy_url="")
    project = api.project(make_repo(tmp_path / "repo", body="no cert"), "nocertshop")
    host = f"{NO_ADDRESS}h4shop.test"
    added = api.post(f"/api/v1/projects/{project['id']}/domains", {"hostname": host}, expect=201)
    assert added["status"] == "verified" and added["certificate"] is None, added
    deadline = time.monotonic() + CERT_GRACE + ISSUE_TIMEOUT
    shown = added
    while time.monotonic() < deadline and shown["certificate"] != "failed":
        time.sleep(2)
        domains = api.get(f"/api/v1/projects/{project['id']}/domains")
        shown = next(d for d in domains if d["id"] == added["id"])
    assert shown["certificate"] == "failed", shown
    team = api.team()
    deadline = time.monotonic() + 30
    actions: list[str] = []
    while time.monotonic() < deadline and "domain.certificate_failed" not in actions:
        time.sleep(1)
        audit = api.get(f"/api/v1/teams/{team}/audit", limit=100)
        actions = [e["action"] for e in audit["items"] if e.get("resource_id") == added["id"]]
    assert "domain.certificate_failed" in actions and "domain.verified" in actions, actions
