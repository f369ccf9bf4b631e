"""TLS on both receivers from one certificate (`--tls-cert-file`, `--tls-key-file`), re-read when
the files change (as cert-manager rotates a Secret) without dropping the listener, and mutual TLS
(`--tls-client-ca-file`). Certificates are made per test with trustme; clients are real: requests
over HTTPS and a gRPC channel with TLS credentials, and the records are read back from S3."""

from __future__ import annotations

import os
import socket
import ssl
import uuid

import grpc
import pytest
import requests
import trustme

from conftest import TOKENS, S3Bridge, eventually, free_port, list_keys, new_bucket
from test_cli import run_cli
from otlp_builders import request, span, to_protobuf

TRACE_SERVICE = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class Certificates:
    """A CA and a server certificate for 127.0.0.1, written where the bridge reads them; `rotate`
    replaces them the way a Kubernetes Secret volume does (new files renamed over the old)."""

    def __init__(self, directory) -> None:
        self.directory = directory
        self.cert_file, self.key_file = directory / "tls.crt", directory / "tls.key"
        self.ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.server = self.issue()
        self.write(self.server)

    def issue(self, ca: trustme.CA | None = None) -> trustme.LeafCert:
        return (ca or self.ca).issue_cert("127.0.0.1", "localhost")

    def write(self, leaf: trustme.LeafCert, *, cert: bool = True, key: bool = True) -> None:
        for wanted, path, data in ((cert, self.cert_file, b"".join(pem.bytes() for pem in leaf.cert_chain_pems)),
                                   (key, self.key_file, leaf.private_key_pem.bytes())):
            if wanted:
                staged = path.with_suffix(".new")
                staged.write_bytes(data)
                os.replace(staged, path)

    @property
    def args(self) -> list[str]:
        return ["--tls-cert-file", str(self.cert_file), "--tls-key-file", str(self.key_file)]


def _presented_certificate(port: int, ca_file) -> bytes:
    """The DER certificate a new TLS connection to the port is served."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)


def _der(leaf: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def _export() -> dict:
    trace_id = uuid.uuid4().hex
    return request(span(trace_id, trace_id[:16], "chat gpt-4o", {"gen_ai.request.model": "gpt-4o",
                                                                  "gen_ai.usage.input_tokens": 3}))


def _grpc_export(bridge: S3Bridge, root_pem: bytes, client: trustme.LeafCert | None = None) -> grpc.StatusCode:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root_pem,
        private_key=client.private_key_pem.bytes() if client else None,
        certificate_chain=b"".join(pem.bytes() for pem in client.cert_chain_pems) if client else None)
    with grpc.secure_channel(bridge.grpc_target, credentials) as channel:
        try:
            channel.unary_unary(TRACE_SERVICE)(to_protobuf(_export()), timeout=15,
                                               metadata=(("authorization", f"Bearer {TOKENS['sdk']}"),))
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def https_url(bridge: S3Bridge) -> str:
    return bridge.url.replace("http://", "https://")


def test_https_and_grpc_over_tls_store_records(moto, s3, tmp_path):
    certificates = Certificates(tmp_path)
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--ack", "upload", *certificates.args])
    try:
        assert "https://127.0.0.1" in bridge.log
        response = requests.post(https_url(bridge), json=_export(), headers=bridge.headers(),
                                 verify=str(certificates.ca_file), timeout=30)
        assert response.status_code == 200
        assert _grpc_export(bridge, certificates.ca.cert_pem.bytes()) == grpc.StatusCode.OK
        assert len(list_keys(s3, bridge.bucket)) == 2
        with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP on the TLS port
            requests.post(bridge.url, json=_export(), headers=bridge.headers(), timeout=10)
        with pytest.raises(requests.exceptions.SSLError):  # a client that does not trust the CA
            requests.post(https_url(bridge), json=_export(), headers=bridge.headers(), timeout=10)
    finally:
        assert bridge.stop() == 0


def test_a_rotated_certificate_is_served_without_dropping_the_listener(moto, s3, tmp_path):
    certificates = Certificates(tmp_path)
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--ack", "upload", *certificates.args])
    try:
        session = requests.Session()
        assert session.post(https_url(bridge), json=_export(), headers=bridge.headers(),
                            verify=str(certificates.ca_file), timeout=30).status_code == 200
        assert _presented_certificate(bridge.http_port, certificates.ca_file) == _der(certificates.server)

        # Half a rotation (a new certificate beside the old key) is not taken: the old pair stays.
        new_ca = trustme.CA()
        rotated = certificates.issue(new_ca)
        certificates.write(rotated, key=False)
        eventually(lambda: "cannot be used yet" in bridge.log)
        assert _presented_certificate(bridge.http_port, certificates.ca_file) == _der(certificates.server)

        certificates.write(rotated)
        new_ca_file = tmp_path / "new-ca.pem"
        new_ca.cert_pem.write_to_path(str(new_ca_file))
        eventually(lambda: "TLS certificate re-read" in bridge.log)
        assert _presented_certificate(bridge.http_port, new_ca_file) == _der(rotated)
        # The connection opened before the rotation is still served; new gRPC channels get the new
        # certificate (and fail against the old CA).
        assert session.post(https_url(bridge), json=_export(), headers=bridge.headers(),
                            verify=str(certificates.ca_file), timeout=30).status_code == 200
        assert _grpc_export(bridge, new_ca.cert_pem.bytes()) == grpc.StatusCode.OK
        assert _grpc_export(bridge, certificates.ca.cert_pem.bytes()) == grpc.StatusCode.UNAVAILABLE
        assert len(list_keys(s3, bridge.bucket)) == 3
    finally:
        assert bridge.stop() == 0


def test_mutual_tls_refuses_clients_without_a_certificate_from_the_ca(moto, s3, tmp_path):
    certificates = Certificates(tmp_path)
    client_ca = trustme.CA()
    client_ca_file = tmp_path / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(client_ca_file))
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log",
                      ["--ack", "upload", *certificates.args, "--tls-client-ca-file", str(client_ca_file)])
    try:
        client = client_ca.issue_cert("app.example")
        client_cert, client_key = tmp_path / "client.crt", tmp_path / "client.key"
        client_cert.write_bytes(b"".join(pem.bytes() for pem in client.cert_chain_pems))
        client.private_key_pem.write_to_path(str(client_key))
        stranger = trustme.CA().issue_cert("stranger.example")
        stranger_cert, stranger_key = tmp_path / "stranger.crt", tmp_path / "stranger.key"
        stranger_cert.write_bytes(b"".join(pem.bytes() for pem in stranger.cert_chain_pems))
        stranger.private_key_pem.write_to_path(str(stranger_key))

        ok = requests.post(https_url(bridge), json=_export(), headers=bridge.headers(),
                           verify=str(certificates.ca_file), cert=(str(client_cert), str(client_key)), timeout=30)
        assert ok.status_code == 200
        for cert in (None, (str(stranger_cert), str(stranger_key))):
            with pytest.raises(requests.exceptions.ConnectionError):  # SSLError is one
                requests.post(https_url(bridge), json=_export(), headers=bridge.headers(),
                              verify=str(certificates.ca_file), cert=cert, timeout=10)
        root = certificates.ca.cert_pem.bytes()
        assert _grpc_export(bridge, root, client) == grpc.StatusCode.OK
        assert _grpc_export(bridge, root) == grpc.StatusCode.UNAVAILABLE
        assert _grpc_export(bridge, root, stranger) == grpc.StatusCode.UNAVAILABLE
        assert len(list_keys(s3, bridge.bucket)) == 2
    finally:
        assert bridge.stop() == 0


def test_tls_flags_are_checked_and_tls_does_not_replace_tokens(tmp_path):
    certificates = Certificates(tmp_path)
    public = run_cli("serve", "--host", "0.0.0.0", *certificates.args)
    assert public.returncode == 2 and "not a loopback address and no --token" in public.stderr
    half = run_cli("serve", "--tls-cert-file", str(certificates.cert_file))
    assert half.returncode == 2 and "--tls-cert-file and --tls-key-file: set both" in half.stderr
    missing = run_cli("serve", "--tls-cert-file", str(tmp_path / "nope.crt"), "--tls-key-file",
                      str(certificates.key_file), "--tls-client-ca-file", str(tmp_path / "nope-ca.pem"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "nope-ca.pem" in missing.stderr
    # A key that is not the certificate's: refused at start, with the reason.
    certificates.write(certificates.issue(), cert=False)
    mismatched = run_cli("serve", "--http-port", str(free_port()), "--grpc-port", "0", "--metrics-port", "0",
                         "--spool-dir", str(tmp_path / "spool"), "--output-dir", str(tmp_path / "out"),
                         *certificates.args)
    assert mismatched.returncode == 1 and "refusing to start" in mismatched.stderr


def test_a_connection_that_never_starts_its_tls_handshake_is_closed_at_the_header_timeout(moto, s3, tmp_path):
    """Without a bound, asyncio waits 60 s for a TLS handshake, and connections that never send a
    ClientHello are held that long (each a descriptor, outside the connection cap)."""
    certificates = Certificates(tmp_path)
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log",
                      ["--ack", "upload", "--header-timeout-seconds", "1", *certificates.args])
    try:
        silent = [socket.create_connection(("127.0.0.1", bridge.http_port)) for _ in range(5)]
        for connection in silent:
            connection.settimeout(30)  # far beyond the configured 1 s, far below asyncio's 60 s
            assert connection.recv(1) == b"", "the server closes the silent connection"
            connection.close()
        assert requests.post(https_url(bridge), json=_export(), headers=bridge.headers(),
                             verify=str(certificates.ca_file), timeout=30).status_code == 200
    finally:
        assert bridge.stop() == 0


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_client_ca_removed_on_rotation_is_refused_over_https_and_grpc(moto, s3, tmp_path, loop):
    """The client CA file held two CAs, then only the second: the first one's clients were still
    accepted over HTTPS after the rotation (a context's store only ever grows), not over gRPC."""
    certificates = Certificates(tmp_path)
    old_ca, new_ca = trustme.CA(), trustme.CA()
    client_ca_file = tmp_path / "client-ca.pem"
    client_ca_file.write_bytes(old_ca.cert_pem.bytes() + new_ca.cert_pem.bytes())
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log",
                      ["--ack", "upload", *certificates.args, "--tls-client-ca-file", str(client_ca_file),
                       "--event-loop", loop])
    clients = {}
    for name, ca in (("old", old_ca), ("new", new_ca)):
        leaf = ca.issue_cert(f"{name}.example")
        cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        clients[name] = (leaf, (str(cert), str(key)))

    def https(name: str) -> int | None:
        try:
            return requests.post(https_url(bridge), json=_export(), headers=bridge.headers(),
                                 verify=str(certificates.ca_file), cert=clients[name][1], timeout=10).status_code
        except requests.exceptions.ConnectionError:
            return None

    root = certificates.ca.cert_pem.bytes()
    try:
        assert https("old") == https("new") == 200
        staged = tmp_path / "client-ca.new"
        staged.write_bytes(new_ca.cert_pem.bytes())
        os.replace(staged, client_ca_file)
        eventually(lambda: "TLS certificate re-read" in bridge.log, 30, lambda: bridge.log)
        assert https("old") is None  # refused at the handshake
        assert https("new") == 200
        assert _grpc_export(bridge, root, clients["old"][0]) == grpc.StatusCode.UNAVAILABLE
        assert _grpc_export(bridge, root, clients["new"][0]) == grpc.StatusCode.OK
    finally:
        assert bridge.stop() == 0
