"""TLS for both receivers from one certificate, re-read when its files change.

`TlsFiles` holds the PEM files named by `--tls-cert-file`, `--tls-key-file` and (for mutual TLS)
`--tls-client-ca-file`. The HTTP receiver's listener keeps one `ssl_context`, which wraps each new
connection with the context built from the files read last: a fresh one at every change, since a
context's certificate store only grows (a client CA taken out of the file must stop being
trusted); the listener stays up and open connections keep their handshake. gRPC gets
`grpc_credentials`, whose fetcher hands the server the new files at its next handshake.
`reload_if_changed` is called periodically: cert-manager and Kubernetes Secrets replace files by
renaming, and a pair caught half-written (a new certificate, the old key) is kept out until both
match. Must not log key material.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass

import grpc

log = logging.getLogger("otel_s3_bridge.tls")


@dataclass(frozen=True)
class _Pem:
    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None


class _CurrentContext(ssl.SSLContext):
    """The listener's context: each connection is wrapped by the context in use now (`current`);
    the event loop's TLS transport calls `wrap_bio`, in asyncio and uvloop alike."""

    current: ssl.SSLContext

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        return self.current.wrap_bio(incoming, outgoing, server_side=server_side, server_hostname=server_hostname,
                                     session=session)


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


class TlsFiles:
    def __init__(self, cert_file: str, key_file: str, client_ca_file: str | None = None) -> None:
        self._cert_file, self._key_file, self._client_ca_file = cert_file, key_file, client_ca_file
        self._stamp = self._file_stamp()
        self._pem = self._read()
        current = _new_context()
        self._load(current)  # raises ssl.SSLError / OSError: start-up refuses
        self.ssl_context = _CurrentContext(ssl.PROTOCOL_TLS_SERVER)
        self.ssl_context.current = current
        self.version = 1
        self._grpc_served_version = 1
        self._last_problem: str | None = None

    @property
    def mutual(self) -> bool:
        return self._client_ca_file is not None

    def _paths(self) -> list[str]:
        return [path for path in (self._cert_file, self._key_file, self._client_ca_file) if path]

    def _file_stamp(self) -> tuple:
        stamps = []
        for path in self._paths():
            try:
                info = os.stat(path)
                stamps.append((info.st_ino, info.st_mtime_ns, info.st_size))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def _read(self) -> _Pem:
        def read(path: str) -> bytes:
            with open(path, "rb") as file:
                return file.read()
        return _Pem(read(self._cert_file), read(self._key_file),
                    read(self._client_ca_file) if self._client_ca_file else None)

    def _load(self, context: ssl.SSLContext) -> None:
        context.load_cert_chain(self._cert_file, self._key_file)
        if self._client_ca_file:
            context.load_verify_locations(cafile=self._client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED

    def reload_if_changed(self) -> bool:
        """Take new files when they changed and form a matching pair; True when they were taken."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        try:
            pem = self._read()
            context = _new_context()
            self._load(context)  # a mismatched pair fails here: the context in use is untouched
        except (OSError, ssl.SSLError) as error:
            problem = f"{type(error).__name__}: {getattr(error, 'strerror', None) or error}"
            if problem != self._last_problem:
                log.warning("the TLS files changed but cannot be used yet (%s); serving the previous certificate",
                            problem)
                self._last_problem = problem
            return False
        self.ssl_context.current = context
        self._stamp, self._pem, self._last_problem = stamp, pem, None
        self.version += 1
        log.info("TLS certificate re-read from %s", self._cert_file)
        return True

    def _grpc_config(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self._pem.private_key, self._pem.certificate_chain)], root_certificates=self._pem.client_ca)

    def grpc_credentials(self) -> grpc.ServerCredentials:
        def fetch_new_configuration() -> grpc.ServerCertificateConfiguration | None:
            # Called by gRPC at each handshake: a new configuration only when the files changed.
            if self._grpc_served_version == self.version:
                return None
            self._grpc_served_version = self.version
            return self._grpc_config()

        return grpc.dynamic_ssl_server_credentials(self._grpc_config(), fetch_new_configuration,
                                                   require_client_authentication=self.mutual)
