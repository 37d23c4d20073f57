"""The object store behind file-download exports: a second HTTP host standing for PostHog's S3 bucket.

PostHog's download endpoint answers 302 to a presigned S3 URL (``products/batch_exports/backend/api/
file_download.py`` ``_generate_s3_pre_signed_url``: SigV4 query-string auth, ``ResponseContentDisposition
= attachment; filename="<basename of the key>"``, ``ExpiresIn`` = the expiration). The file is then
served by S3, not by PostHog, so this module answers the way S3 does:

- a request that also carries an ``Authorization`` header (a client that forwards its PostHog key
  across the redirect) is refused: 400 ``InvalidArgument`` "Only one auth mechanism allowed; ..."
  (without query-string auth: 400 ``InvalidArgument`` "Unsupported Authorization Type"). Real S3 echoes
  the header value in ``<ArgumentValue>``; the emulator masks it (the project's rule: no key in any
  output), so a connector must never log S3 error bodies verbatim;
- no query-string signature: 403 ``AccessDenied`` "Access Denied";
- past ``X-Amz-Date + X-Amz-Expires``: 403 ``AccessDenied`` "Request has expired" (with
  ``X-Amz-Expires``, ``Expires``, ``ServerTime``);
- a changed URL (or another method: the method is signed; HEAD on a GET URL fails too): 403
  ``SignatureDoesNotMatch``;
- a key that is not there (expired by the bucket's lifecycle): 403 ``AccessDenied`` (the temporary
  credentials allow only ``s3:GetObject``, not ``s3:ListBucket``, so S3 does not say 404);
- otherwise 200 with the bytes (``Range`` → 206), ``Content-Disposition`` from the URL,
  ``Content-Type: binary/octet-stream`` (S3's default for an upload without a content type), a
  multipart ``ETag``, ``Accept-Ranges: bytes``.

Error bodies are S3's XML: ``<Error><Code/><Message/>...<RequestId/><HostId/></Error>``. Every request is
recorded (method, path, query, headers with secrets masked, status, error code) for the tests.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from .http_base import QuietHandler

BUCKET = "posthog-file-downloads"  # settings.BATCH_EXPORTS_FILE_DOWNLOAD_BUCKET: its value is not in the source
REGION = "us-east-1"
ONE_AUTH = ("Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string "
            "parameter or the Authorization header should be specified")
SIGNATURE_MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your "
                      "key and signing method.")


def mask(value: str) -> str:
    """A header or parameter value as logged and echoed: anything that may carry a key is masked."""
    if "phx_" in value or value.lower().startswith(("bearer", "basic", "aws4", "token")):
        scheme = value.split(None, 1)[0] if " " in value.strip() else ""
        return (scheme + " " if scheme and "phx_" not in scheme else "") + "<masked>"
    return value


@dataclass
class StoredObject:
    key: str
    path: Path
    size: int
    etag: str
    last_modified: float
    run_id: str
    expiry_date: float | None = None  # the lifecycle rule's expiry (x-amz-expiration), if any


class ObjectStore:
    """The bucket: objects by key, presigning, the request log and the link-expiry controls."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._secret = secrets.token_bytes(32)
        self._access_key = "ASIA" + base64.b32encode(secrets.token_bytes(10)).decode()[:16]
        self._lock = threading.Lock()
        self._objects: dict[str, StoredObject] = {}
        self._log: list[dict] = []
        self._expired_before = 0.0  # links signed at or before this instant are expired (control API)
        self._run_expired_before: dict[str, float] = {}
        self.clock = time.time  # the store's "now" (tests may move it to see links expire)
        self._issued: dict[str, float] = {}  # signature → when the link was signed (X-Amz-Date has whole seconds)
        self._httpd = _StoreServer((host, port), _StoreHandler)
        self._httpd.store = self
        self.host = host
        self.port = self._httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="posthog-emulator-object-store", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- objects -------------------------------------------------------------------------------

    def put(self, key: str, path: Path, run_id: str, expiry_date: float | None = None) -> StoredObject:
        digest = hashlib.md5()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        etag = '"' + hashlib.md5(digest.digest()).hexdigest() + '-1"'  # a one-part multipart upload's ETag
        obj = StoredObject(key, path, path.stat().st_size, etag, time.time(), run_id, expiry_date)
        with self._lock:
            self._objects[key] = obj
        return obj

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def get(self, key: str) -> StoredObject | None:
        with self._lock:
            return self._objects.get(key)

    # -- presigned URLs ------------------------------------------------------------------------

    def _sign(self, method: str, raw_path: str, query: list[tuple[str, str]]) -> str:
        canonical = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query)
                             if k != "X-Amz-Signature")
        path = unquote(raw_path)  # S3 canonicalizes the path itself: ':' and '%3A' are the same key
        return hmac.new(self._secret, f"{method}\n{path}\n{canonical}".encode(), hashlib.sha256).hexdigest()

    def presign(self, key: str, expires_in: int, filename: str) -> str:
        """A SigV4-shaped presigned GET URL (path-style; S3 itself would use the bucket's virtual host)."""
        now = time.gmtime()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", now)
        raw_path = "/" + BUCKET + "/" + quote(key, safe="/~")
        query = [("response-content-disposition", f'attachment; filename="{filename}"'),
                 ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
                 ("X-Amz-Credential", f"{self._access_key}/{time.strftime('%Y%m%d', now)}/{REGION}/s3/aws4_request"),
                 ("X-Amz-Date", amz_date), ("X-Amz-Expires", str(int(expires_in))), ("X-Amz-SignedHeaders", "host"),
                 ("X-Amz-Security-Token", base64.b64encode(hashlib.sha256(self._secret + key.encode()).digest()).decode())]
        signature = self._sign("GET", raw_path, query)
        query.append(("X-Amz-Signature", signature))
        with self._lock:
            self._issued[signature] = time.time()
        return self.url + raw_path + "?" + "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in query)

    def expire_links(self, run_id: str | None = None) -> float:
        """Every link signed until now (for ``run_id``, or all) answers "Request has expired" from now on."""
        now = self.clock()
        with self._lock:
            if run_id is None:
                self._expired_before = now
            else:
                self._run_expired_before[run_id] = now
        return now

    # -- request log ---------------------------------------------------------------------------

    def record(self, entry: dict) -> None:
        with self._lock:
            self._log.append(entry)

    def requests(self) -> list[dict]:
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    # -- S3's answer ---------------------------------------------------------------------------

    def answer(self, method: str, raw_path: str, raw_query: str, headers) -> tuple[int, dict, bytes | StoredObject,
                                                                                     tuple[int, int] | None, str | None]:
        """(status, headers, body or object, byte range, S3 error code)."""
        query = parse_qsl(raw_query, keep_blank_values=True)
        q = dict(query)
        request_id = secrets.token_hex(8).upper()
        base = {"x-amz-request-id": request_id, "x-amz-id-2": base64.b64encode(secrets.token_bytes(48)).decode()}

        def error(status: int, code: str, message: str, **extra: str) -> tuple:
            fields = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in extra.items())
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{escape(message)}'
                    f"</Message>{fields}<RequestId>{request_id}</RequestId><HostId>{base['x-amz-id-2']}</HostId>"
                    "</Error>").encode()
            return status, {**base, "Content-Type": "application/xml"}, body, None, code

        auth = headers.get("Authorization")
        if auth is not None:
            if "X-Amz-Algorithm" in q:
                return error(400, "InvalidArgument", ONE_AUTH, ArgumentName="Authorization", ArgumentValue=mask(auth))
            return error(400, "InvalidArgument", "Unsupported Authorization Type", ArgumentName="Authorization",
                         ArgumentValue=mask(auth))
        if q.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" or "X-Amz-Signature" not in q:
            return error(403, "AccessDenied", "Access Denied")
        key = unquote(raw_path[len(BUCKET) + 2:]) if raw_path.startswith(f"/{BUCKET}/") else None
        obj = self.get(key) if key is not None else None
        try:
            signed = calendar.timegm(time.strptime(q.get("X-Amz-Date", ""), "%Y%m%dT%H%M%SZ"))
            expires = int(q.get("X-Amz-Expires", ""))
        except ValueError:
            return error(400, "AuthorizationQueryParametersError",
                         "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
        now = self.clock()
        with self._lock:
            threshold = max(self._expired_before, self._run_expired_before.get(obj.run_id, 0.0) if obj else 0.0)
            issued = self._issued.get(q["X-Amz-Signature"], signed)
        if now > signed + expires or issued <= threshold:
            return error(403, "AccessDenied", "Request has expired", **{
                "X-Amz-Expires": str(expires),
                "Expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(signed + expires)),
                "ServerTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})
        if not hmac.compare_digest(self._sign(method, raw_path, query), q["X-Amz-Signature"]):
            return error(403, "SignatureDoesNotMatch", SIGNATURE_MISMATCH,
                         AWSAccessKeyId=q.get("X-Amz-Credential", "").split("/")[0])
        if obj is None:
            return error(403, "AccessDenied", "Access Denied")
        out = {**base, "Content-Type": "binary/octet-stream", "ETag": obj.etag, "Accept-Ranges": "bytes",
               "Last-Modified": formatdate(obj.last_modified, usegmt=True)}
        if "response-content-disposition" in q:
            out["Content-Disposition"] = q["response-content-disposition"]
        if obj.expiry_date is not None:
            out["x-amz-expiration"] = (f'expiry-date="{formatdate(obj.expiry_date, usegmt=True)}", '
                                       'rule-id="file-download-exports"')
        rng = headers.get("Range")
        if rng:
            span = _parse_range(rng, obj.size)
            if span is None:
                return error(416, "InvalidRange", "The requested range is not satisfiable",
                             RangeRequested=rng, ActualObjectSize=str(obj.size))
            out["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{obj.size}"
            return 206, out, obj, span, None
        return 200, out, obj, (0, obj.size), None


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range → [start, end) or None (unsatisfiable)."""
    if not value.startswith("bytes=") or "," in value:
        return (0, size) if size else None
    lo, _, hi = value[6:].strip().partition("-")
    try:
        if lo == "":
            n = int(hi)
            return (max(0, size - n), size) if n > 0 and size else None
        start = int(lo)
        end = min(int(hi) + 1, size) if hi else size
    except ValueError:
        return (0, size) if size else None
    return (start, end) if start < size and start < end else None


class _StoreHandler(QuietHandler):
    server_version = "AmazonS3"
    server: "_StoreServer"

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def _serve(self, method: str) -> None:
        store = self.server.store
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)
        status, headers, body, span, code = store.answer(method, split.path, split.query, self.headers)
        sent = 0
        # Logged before the answer is written (bytes filled in after), so that the log's order is the
        # order the requests were answered in, whatever thread finishes writing first.
        query = {k: mask(v) for k, v in parse_qsl(split.query, keep_blank_values=True)}
        entry = {"t": time.time(), "method": method, "path": split.path, "query": query,
                 "headers": {k: mask(v) for k, v in self.headers.items()}, "status": status,
                 "error_code": code, "bytes": 0,
                 "key": unquote(split.path[len(BUCKET) + 2:]) if split.path.startswith(f"/{BUCKET}/") else None}
        store.record(entry)
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if isinstance(body, StoredObject):
                start, end = span
                self.send_header("Content-Length", str(end - start))
                self.end_headers()
                if method != "HEAD":
                    with open(body.path, "rb") as fh:
                        fh.seek(start)
                        left = end - start
                        while left > 0:
                            block = fh.read(min(1 << 16, left))
                            if not block:
                                break
                            self.wfile.write(block)
                            sent += len(block)
                            left -= len(block)
            else:
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(body)
                    sent = len(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            entry["bytes"] = sent


class _StoreServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    store: ObjectStore

    def handle_error(self, request, client_address) -> None:
        pass


__all__ = ["ObjectStore", "BUCKET", "mask"]
