"""A 3-node cluster-mode, TLS-only ``redis-server`` on loopback: what ElastiCache Serverless (Valkey) looks like to
a client (cluster mode, TLS with a certificate to verify), for tests and benchmarks.

Certificates are made at start-up with ``cryptography``: a test CA, a server certificate for ``127.0.0.1`` and
``localhost`` that it signs (also used by the nodes between themselves, ``--tls-cluster yes``), and a second,
unrelated CA that a client can be given to prove that verification is on. Slots are split over three masters
(``CLUSTER ADDSLOTSRANGE``), the nodes meet over the TLS cluster bus, and ``start()`` returns once every node says
``cluster_state:ok``. No ``redis-cli``, no ``openssl`` CLI: only ``redis-server`` and Python.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from redis.crc import key_slot

SLOTS = 16384
BUS_PORT_OFFSET = 10000  # redis' cluster bus listens on the (TLS) client port + 10000


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free loopback port whose cluster-bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + BUS_PORT_OFFSET < 65536 and _free(port + BUS_PORT_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # The nodes also dial each other with this certificate (cluster bus): server and client use.
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


class RedisCluster:
    """Three masters, no replicas, TLS only (``--port 0``), TLS on the cluster bus too."""

    def __init__(self, nodes: int = 3) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: `apt-get install redis-server` (CI's .ci/run does this)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="redis-cluster-test-"))
        self.ports = [free_cluster_port() for _ in range(nodes)]
        while len(set(self.ports)) < nodes:
            self.ports = [free_cluster_port() for _ in range(nodes)]
        self.ca_file = self.dir / "ca.crt"
        self.wrong_ca_file = self.dir / "other-ca.crt"  # a CA that did not sign the servers' certificate
        self._cert_file = self.dir / "server.crt"
        self._key_file = self.dir / "server.key"
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def url(self) -> str:
        """The seed URL a cluster client starts from (TLS; the client discovers the other nodes)."""
        return f"rediss://127.0.0.1:{self.port}"

    def _write_certs(self) -> None:
        ca_key, ca_cert = _ca("chat-backend test CA")
        key, cert = _server_cert(ca_key, ca_cert)
        _, other_ca = _ca("chat-backend unrelated CA")
        self.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        self.wrong_ca_file.write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
        self._cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._key_file.write_bytes(_pem_key(key))
        self._key_file.chmod(0o600)

    def admin(self, port: int) -> redis.Redis:
        """A plain (not cluster-aware) TLS client of one node, for setting the cluster up and resetting it."""
        return redis.Redis(
            host="127.0.0.1",
            port=port,
            ssl=True,
            ssl_ca_certs=str(self.ca_file),
            socket_timeout=5,
            protocol=2,
        )

    def client(self) -> redis.RedisCluster:
        """A cluster-aware TLS client, for tests to look at what the product wrote."""
        return redis.RedisCluster(
            host="127.0.0.1", port=self.port, ssl=True, ssl_ca_certs=str(self.ca_file), socket_timeout=5, protocol=2
        )

    def node_of(self, key: str) -> int:
        """The port of the node that holds ``key`` (slots are split evenly, in port order, by ``start()``)."""
        per_node = SLOTS // len(self.ports)
        return self.ports[min(key_slot(key.encode()) // per_node, len(self.ports) - 1)]

    def keys_per_node(self) -> dict[int, list[str]]:
        """Every key, by the port of the node that holds it."""
        found: dict[int, list[str]] = {}
        for port in self.ports:
            admin = self.admin(port)
            try:
                found[port] = sorted(key.decode() for key in admin.scan_iter(count=1000))
            finally:
                admin.close()
        return found

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        node_dir = self.dir / str(port)
        node_dir.mkdir()
        return subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--tls-port",
                str(port),
                "--tls-cert-file",
                str(self._cert_file),
                "--tls-key-file",
                str(self._key_file),
                "--tls-ca-cert-file",
                str(self.ca_file),
                "--tls-auth-clients",
                "no",
                "--tls-cluster",
                "yes",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(node_dir / "nodes.conf"),
                "--cluster-node-timeout",
                "5000",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(node_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _wait(self, deadline: float, what: str, check: Callable[[], object]) -> None:
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis cluster: {what} (logs: {self.dir})")

    def start(self) -> RedisCluster:
        self._write_certs()
        self._procs = [self._spawn(port) for port in self.ports]
        deadline = time.monotonic() + 20
        admins = [self.admin(port) for port in self.ports]
        try:
            for admin in admins:
                self._wait(deadline, "a node did not start", admin.ping)
            per_node = SLOTS // len(self.ports)
            for index, admin in enumerate(admins):
                first = index * per_node
                last = SLOTS - 1 if index == len(admins) - 1 else first + per_node - 1
                admin.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            # Every node meets every other one: no waiting for gossip to spread the introductions.
            for index, admin in enumerate(admins):
                for port in self.ports[index + 1 :]:
                    admin.execute_command("CLUSTER", "MEET", "127.0.0.1", port)

            def converged() -> bool:
                for admin in admins:
                    info = admin.execute_command("CLUSTER", "INFO").decode()
                    if "cluster_state:ok" not in info or f"cluster_known_nodes:{len(admins)}" not in info:
                        return False
                return True

            self._wait(deadline, "did not reach cluster_state:ok", converged)
        except BaseException:
            self.stop()
            raise
        finally:
            for admin in admins:
                admin.close()
        return self

    def flushall(self) -> None:
        for port in self.ports:
            admin = self.admin(port)
            try:
                admin.flushall()
            finally:
                admin.close()

    def stop(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            proc.wait(timeout=10)
        self._procs = []
        shutil.rmtree(self.dir, ignore_errors=True)
