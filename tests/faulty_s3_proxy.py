"""A fault-injecting HTTP proxy in front of an S3 server, run as its own process by the durability
tests: `python faulty_s3_proxy.py --port P --upstream URL [--fail-rate R --kinds
500,503,baddigest,reset,stall,lost] [--refuse-keys TEXT] [--hold-keys TEXT] [--fail-bodies-without TEXT]`.

Object PUTs fail at the given rate with one of the kinds (500 InternalError, 503 SlowDown, 400
BadDigest as when the body changed on the way, a connection reset, a stall longer than the
client's timeout before forwarding, or `lost`: forwarded, so the object is stored, then the
connection is reset before the answer); PUTs of keys containing
the --refuse-keys TEXT are refused for good (403 AccessDenied); PUTs of keys containing the
--hold-keys TEXT are forwarded and their answer is held back for an hour; PUTs whose body lacks
the --fail-bodies-without TEXT fail (503 SlowDown, or 403 AccessDenied with --bodies-refused), every
time (counted by path; the bridge's check probe passes). With --tls-cert and --tls-key it speaks
HTTPS only. The first PUT of each key containing:
--split-error-keys TEXT is answered 400 RequestTimeout, its XML sent in two parts a moment apart;
--redirect-keys TEXT (its first two PUTs) is answered 307 TemporaryRedirect to --redirect-to URL;
--trickle-keys TEXT gets `100 Continue` every half second for an hour, its body never read (each
byte resets a client's read timeout). A checksum an object PUT carries (Content-MD5,
x-amz-checksum-crc32, -sha1, -sha256) is checked against its body, as S3 checks it (400 BadDigest
when it does not match); with --require-checksum a PUT without one is refused for good, as S3 refuses
it in a bucket with Object Lock's default retention (400 InvalidRequest); with --refuse-checksums a
PUT carrying one is answered 501 NotImplemented, as Cloudflare R2 answered the header in early 2025.
Everything else is forwarded unchanged. `GET /__faults__` answers the counters, with the access key ids that signed the
PUTs and how many carried a session token.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import random
import zlib

from aiohttp import ClientSession, ClientTimeout, web

HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "expect", "content-encoding",
              "keep-alive"}
S3_ERRORS = {"500": (500, "InternalError", "We encountered an internal error."),
             "503": (503, "SlowDown", "Please reduce your request rate."),
             "baddigest": (400, "BadDigest", "The CRC32 you specified did not match the calculated checksum.")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--kinds", default="500,503,reset,stall")
    parser.add_argument("--stall-seconds", type=float, default=3.0)
    parser.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate chain (and --tls-key)")
    parser.add_argument("--tls-key", default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--refuse-keys", default=None)
    parser.add_argument("--hold-keys", default=None)
    parser.add_argument("--fail-bodies-without", default=None)
    parser.add_argument("--bodies-refused", action="store_true")
    parser.add_argument("--split-error-keys", default=None)
    parser.add_argument("--redirect-keys", default=None)
    parser.add_argument("--redirect-to", default=None)
    parser.add_argument("--trickle-keys", default=None)
    parser.add_argument("--require-checksum", action="store_true")
    parser.add_argument("--refuse-checksums", action="store_true")
    args = parser.parse_args()
    chance = random.Random(args.seed)
    kinds = args.kinds.split(",")
    counters = {"requests": 0, "puts": 0, "faults": 0, **{f"fault_{kind}": 0 for kind in kinds}}

    async def forward(request: web.Request, body: bytes, session: ClientSession) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with session.request(request.method, args.upstream + request.path_qs, headers=headers,
                                   data=body, allow_redirects=False) as upstream:
            payload = await upstream.read()
            reply = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=upstream.status, headers=reply, body=payload)

    seen: dict[str, int] = {}  # PUTs of each path so far

    def checksum_refusal(request: web.Request, body: bytes) -> web.Response | None:
        """S3's answer to an object PUT whose checksum does not hold (or is missing where required)."""
        computed = {"content-md5": lambda: hashlib.md5(body).digest(),
                    "x-amz-checksum-crc32": lambda: zlib.crc32(body).to_bytes(4, "big"),
                    "x-amz-checksum-sha1": lambda: hashlib.sha1(body).digest(),
                    "x-amz-checksum-sha256": lambda: hashlib.sha256(body).digest()}
        sent = {name.lower(): value for name, value in request.headers.items()
                if name.lower() == "content-md5" or name.lower().startswith("x-amz-checksum-")}
        if sent:
            counters["checksummed"] = counters.get("checksummed", 0) + 1
        checksums = [name for name in sent if name.startswith("x-amz-checksum-")]
        if args.refuse_checksums and checksums:
            return s3_error(501, "NotImplemented", f"Header '{checksums[0]}' with value '{sent[checksums[0]]}' "
                                                   "not implemented")
        for name, value in sent.items():
            if name in computed and base64.b64encode(computed[name]()).decode() != value:
                counters["bad_digests"] = counters.get("bad_digests", 0) + 1
                return s3_error(400, "BadDigest", f"The {name} you specified did not match the calculated checksum.")
        if args.require_checksum and not sent:
            return s3_error(400, "InvalidRequest", "Content-MD5 OR x-amz-checksum- HTTP header is required for Put "
                                                   "Object requests with Object Lock parameters")
        return None

    def s3_error(status: int, code: str, message: str) -> web.Response:
        xml = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        return web.Response(status=status, body=xml.encode(), content_type="application/xml")

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/__faults__":
            return web.json_response(counters)
        counters["requests"] += 1
        if request.method == "PUT":
            seen[request.path] = seen.get(request.path, 0) + 1
        first = seen.get(request.path, 0)
        if request.method == "PUT" and args.trickle_keys and args.trickle_keys in request.path and first == 1:
            counters["trickled"] = counters.get("trickled", 0) + 1
            for _ in range(7200):  # the body is never read
                if request.transport is None or request.transport.is_closing():
                    break
                request.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await asyncio.sleep(0.5)
            return web.Response(status=500)
        body = await request.read()
        if request.method == "PUT" and args.split_error_keys and args.split_error_keys in request.path and first == 1:
            counters["split"] = counters.get("split", 0) + 1
            xml = (b"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>RequestTimeout</Code><Message>Your "
                   b"socket connection to the server was not read from or written to within the timeout period."
                   b"</Message></Error>")
            response = web.StreamResponse(status=400, headers={"Content-Type": "application/xml"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(xml[:40])  # before the <Code>
            await asyncio.sleep(0.3)
            await response.write(xml[40:])
            await response.write_eof()
            return response
        if request.method == "PUT" and args.redirect_keys and args.redirect_keys in request.path and first <= 2:
            counters["redirected"] = counters.get("redirected", 0) + 1
            return web.Response(status=307, headers={"Location": args.redirect_to + request.path_qs,
                                                     "x-amz-bucket-region": "eu-west-1"})
        session = request.app["session"]
        is_object_put = request.method == "PUT" and request.path.count("/") >= 2 and not request.query
        if is_object_put and args.refuse_keys and args.refuse_keys in request.path:
            xml = "<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            return web.Response(status=403, body=xml.encode(), content_type="application/xml")
        if (is_object_put and args.fail_bodies_without and args.fail_bodies_without.encode() not in body
                and ".otel-s3-bridge-check-" not in request.path):  # the bridge's own probe passes
            counters.setdefault("failed_bodies", {})
            counters["failed_bodies"][request.path] = counters["failed_bodies"].get(request.path, 0) + 1
            status, code = (403, "AccessDenied") if args.bodies_refused else (503, "SlowDown")
            xml = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>Not this body.</Message></Error>"
            return web.Response(status=status, body=xml.encode(), content_type="application/xml")
        if is_object_put and args.hold_keys and args.hold_keys in request.path:
            await forward(request, body, session)
            counters["held"] = counters.get("held", 0) + 1
            await asyncio.sleep(3600)
        if is_object_put and (refusal := checksum_refusal(request, body)) is not None:
            return refusal
        if is_object_put:
            counters["puts"] += 1
            # Who signed it (the access key id, never the signature) and whether with a session token.
            credential = request.headers.get("Authorization", "").partition("Credential=")[2].split("/", 1)[0]
            counters.setdefault("signed_by", {})
            counters["signed_by"][credential] = counters["signed_by"].get(credential, 0) + 1
            if request.headers.get("X-Amz-Security-Token"):
                counters["with_session_token"] = counters.get("with_session_token", 0) + 1
            if request.headers.get("X-Amz-Content-SHA256") == "UNSIGNED-PAYLOAD":
                counters["unsigned_payload"] = counters.get("unsigned_payload", 0) + 1
            if chance.random() < args.fail_rate:
                kind = chance.choice(kinds)
                counters["faults"] += 1
                counters[f"fault_{kind}"] += 1
                if kind == "reset":
                    request.transport.abort()
                    return web.Response(status=500)
                if kind == "lost":
                    await forward(request, body, session)
                    request.transport.abort()
                    return web.Response(status=500)
                if kind == "stall":
                    await asyncio.sleep(args.stall_seconds)
                    return await forward(request, body, session)
                status, code, message = S3_ERRORS[kind]
                xml = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
                return web.Response(status=status, body=xml.encode(), content_type="application/xml")
        return await forward(request, body, session)

    async def open_session(app: web.Application) -> None:
        app["session"] = ClientSession(timeout=ClientTimeout(total=60), auto_decompress=False)

    async def close_session(app: web.Application) -> None:
        await app["session"].close()

    app = web.Application(client_max_size=1024 ** 3)
    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    tls = None
    if args.tls_cert:
        import ssl

        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None, ssl_context=tls)


if __name__ == "__main__":
    main()
