#!/usr/bin/python3
"""Independent HTTP/2 server conformance suite (h2spec-compatible case list).

This runner reproduces the 146 default (non-strict) test cases of the h2spec
tool (https://github.com/summerwind/h2spec): what each case sends and what it
accepts as a pass.  It is written from scratch in Python on top of the standard
library (socket, ssl) plus two small Debian-packaged libraries:

  * hyperframe -- decodes the frames the server sends us;
  * hpack      -- encodes our request header blocks / decodes responses.

Frames we *send* are built by hand (``Conn.write_frame``) because many cases
must put deliberately malformed frames on the wire (stream 0 DATA, a 3-octet
RST_STREAM, a SETTINGS ACK with payload, ...), which frame libraries refuse to
serialise.

Case identifiers follow h2spec: ``<spec>/<section>/<seq>``, e.g.
``http2/6.5.3/1``.  ``http2`` sections are numbered after RFC 7540 like h2spec
does; the README maps them to RFC 9113 (which obsoletes 7540 and mostly keeps
the numbering).  ``hpack`` sections refer to RFC 7541.

Pass/fail semantics mirror h2spec's verifiers (see ``expect_*`` below):
every read is bounded by --timeout (default 2 s, like h2spec); a timeout ends
the case.  In particular, where a *connection error* is expected, a GOAWAY with
one of the expected codes passes, and so does the connection being closed (a
GOAWAY with another code followed by close also passes, as in h2spec).  Where a
*stream error* is expected, RST_STREAM with an expected code passes too.

Usage:
  h2spec.py --host 127.0.0.1 --port 8443 --tls --insecure
  h2spec.py --port 8080 --section http2/6.5 -v
"""

import argparse
import json
import socket
import ssl
import sys
import time

try:
    import hpack
    from hpack.hpack import INDEX_INCREMENTAL, encode_integer
    from hyperframe.frame import Frame
except ImportError as exc:  # pragma: no cover - environment problem
    sys.exit(
        f"h2spec.py: {exc}; install python3-hyperframe and python3-hpack "
        "(apt-get install -y python3-hyperframe python3-hpack) and run with "
        "/usr/bin/python3"
    )

# --------------------------------------------------------------------------
# Protocol constants (RFC 9113 §6, §7, §11)
# --------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 §3.4

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9

FRAME_NAMES = {
    DATA: "DATA", HEADERS: "HEADERS", PRIORITY: "PRIORITY",
    RST_STREAM: "RST_STREAM", SETTINGS: "SETTINGS",
    PUSH_PROMISE: "PUSH_PROMISE", PING: "PING", GOAWAY: "GOAWAY",
    WINDOW_UPDATE: "WINDOW_UPDATE", CONTINUATION: "CONTINUATION",
}

FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9

ERROR_NAMES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR", 0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM", 0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}

DEFAULT_WINDOW_SIZE = 65535  # RFC 9113 §6.9.2
DEFAULT_FRAME_SIZE = 16384   # RFC 9113 §4.2
MAX_WINDOW = 2**31 - 1       # RFC 9113 §6.9.1

# Length of the value of each "x-dummyN" header (h2spec --max-header-length).
DUMMY_HEADER_LEN = 4000


def error_name(code):
    return ERROR_NAMES.get(code, f"UNKNOWN(0x{code:x})")


# --------------------------------------------------------------------------
# Case outcome exceptions
# --------------------------------------------------------------------------

class CaseFailed(Exception):
    """The server's behaviour did not match the case's expectation."""

    def __init__(self, expected, actual):
        super().__init__(f"expected {' or '.join(expected)}, got {actual}")
        self.expected = list(expected)
        self.actual = actual


class CaseSkipped(Exception):
    """The case cannot be run against this server (h2spec 'skipped')."""


class SetupError(Exception):
    """Connection/handshake failure before the case proper could run."""


# --------------------------------------------------------------------------
# Events: what one bounded read from the connection produced
# --------------------------------------------------------------------------

class Event:
    FRAME, CLOSED, TIMEOUT, ERROR = "frame", "closed", "timeout", "error"

    def __init__(self, kind, frame=None, length=0, detail=""):
        self.kind = kind
        self.frame = frame      # a hyperframe Frame when kind == FRAME
        self.length = length    # payload length from the frame header
        self.detail = detail

    @property
    def type(self):
        return self.frame.type if self.kind == Event.FRAME else None

    def is_frame(self, ftype):
        return self.kind == Event.FRAME and self.frame.type == ftype

    def has_flag(self, name):
        return self.kind == Event.FRAME and name in self.frame.flags

    def __str__(self):
        if self.kind == Event.CLOSED:
            return "Connection closed"
        if self.kind == Event.TIMEOUT:
            return "Timeout"
        if self.kind == Event.ERROR:
            return f"Error: {self.detail}"
        return describe_frame(self.frame, self.length)


def describe_frame(f, length):
    name = FRAME_NAMES.get(f.type, f"UNKNOWN(0x{f.type:x})")
    flags = ",".join(sorted(f.flags)) or "-"
    base = f"{name} Frame (length:{length}, flags:{flags}, stream_id:{f.stream_id}"
    if f.type == GOAWAY:
        dbg = bytes(f.additional_data)[:64]
        return (f"{base}, last_stream_id:{f.last_stream_id}, "
                f"error_code:{error_name(f.error_code)}, debug_data:{dbg!r})")
    if f.type == RST_STREAM:
        return f"{base}, error_code:{error_name(f.error_code)})"
    if f.type == PING:
        return f"{base}, opaque_data:{bytes(f.opaque_data)!r})"
    if f.type == SETTINGS and f.settings:
        vals = ", ".join(f"0x{k:x}={v}" for k, v in f.settings.items())
        return f"{base}, {vals})"
    if f.type == WINDOW_UPDATE:
        return f"{base}, increment:{f.window_increment})"
    return base + ")"


# --------------------------------------------------------------------------
# HPACK encoding
# --------------------------------------------------------------------------

class RequestEncoder(hpack.Encoder):
    """hpack.Encoder that Huffman-codes a string literal only when that is
    strictly shorter than the raw octets.

    RFC 7541 §5.2 leaves the choice to the encoder; python-hpack always uses
    Huffman, whereas h2spec's encoder (and most clients) pick the shorter
    form.  Some decoders validate raw and Huffman strings differently (e.g.
    upper-case field names, empty values), so we put the same octets on the
    wire as h2spec does.  Indexing decisions are python-hpack's, which match
    h2spec's: full matches are indexed, everything else is a literal with
    incremental indexing (name indexed when known).
    """

    def _string(self, octets):
        coded = self.huffman_coder.encode(octets)
        if len(coded) < len(octets):
            length = encode_integer(len(coded), 7)
            length[0] |= 0x80  # H bit
            return bytes(length) + coded
        return bytes(encode_integer(len(octets), 7)) + octets

    def _encode_literal(self, name, value, indexbit, huffman=False):
        return b"".join([indexbit, self._string(name), self._string(value)])

    def _encode_indexed_literal(self, index, value, indexbit, huffman=False):
        prefix = encode_integer(index, 6 if indexbit == INDEX_INCREMENTAL else 4)
        prefix[0] |= ord(indexbit)
        return bytes(prefix) + self._string(value)


# --------------------------------------------------------------------------
# The client connection
# --------------------------------------------------------------------------

class _Timeout(Exception):
    pass


class _Closed(Exception):
    pass


class Conn:
    """One HTTP/2 client connection with raw frame I/O.

    Reads are bounded: each ``wait_event`` waits at most ``timeout`` seconds
    for one complete frame.  As in h2spec, *any* read failure -- timeout,
    EOF, reset -- marks the connection finished (``closed``), so verifiers
    never wait more than one timeout past the last frame received.
    """

    def __init__(self, cfg, log=None):
        self.cfg = cfg
        self.timeout = cfg.timeout
        self.log = log
        self.closed = False
        self.rbuf = bytearray()
        self.encoder = RequestEncoder()
        self.decoder = hpack.Decoder()
        self.header_block = bytearray()   # response block being reassembled
        self.server_settings = {}
        # Like h2spec, keep the server able to send: when our receive window
        # (connection or stream) drops to <= 0, top it up (RFC 9113 §6.9).
        self.auto_window_update = True
        self.recv_window = {0: DEFAULT_WINDOW_SIZE}
        self.write_error = None

        try:
            raw = socket.create_connection((cfg.host, cfg.port), timeout=cfg.timeout)
        except OSError as exc:
            raise SetupError(f"cannot connect to {cfg.host}:{cfg.port}: {exc}")
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local_addr = raw.getsockname()
        if not cfg.tls:
            self.sock = raw
            return
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if cfg.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        # RFC 9113 §3.2: "h2" over TLS is selected with ALPN.
        ctx.set_alpn_protocols(["h2"])
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=cfg.sni)
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            raise SetupError(f"TLS handshake failed: {exc}")
        if self.sock.selected_alpn_protocol() != "h2":
            proto = self.sock.selected_alpn_protocol()
            self.sock.close()
            raise SetupError(f"ALPN did not select h2 (got {proto!r})")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _vlog(self, direction, text):
        if self.log:
            self.log(f"    [{direction}] {text}")

    # ---- writing --------------------------------------------------------

    def send(self, data, what=None):
        """Write raw octets.  Write errors are remembered but not raised:
        a server that already closed the connection is judged by what we
        read afterwards, exactly as h2spec ignores its write errors."""
        self._vlog("send", what or f"raw {len(data)} octets: {bytes(data[:32]).hex()}")
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(data)
        except OSError as exc:
            if self.write_error is None:
                self.write_error = exc
                self._vlog("send", f"write failed: {exc}")

    def write_frame(self, ftype, flags, stream_id, payload=b""):
        """Frame header per RFC 9113 §4.1: 24-bit length, type, flags,
        R bit + 31-bit stream id.  No validity checks on purpose."""
        name = FRAME_NAMES.get(ftype, f"0x{ftype:x}")
        if len(payload) >= 1 << 24:
            # The 24-bit length field cannot express this payload, so the
            # frame is not sent at all (h2spec's framer refuses it too).
            # Happens in http2/4.2/2 against a server whose
            # SETTINGS_MAX_FRAME_SIZE is the maximum, 2^24-1.
            self._vlog("send", f"{name} Frame of {len(payload)} octets: too large "
                               "for the length field, not sent")
            return
        header = (len(payload).to_bytes(3, "big") + bytes([ftype, flags]) +
                  (stream_id & 0xFFFFFFFF).to_bytes(4, "big"))
        self.send(header + payload,
                  f"{name} Frame (length:{len(payload)}, flags:0x{flags:02x}, "
                  f"stream_id:{stream_id})")

    @staticmethod
    def _priority_fields(dep, weight, exclusive):
        # RFC 9113 §6.3 / RFC 7540 §6.3: E bit + 31-bit dependency, weight-1.
        return ((dep & 0x7FFFFFFF) | (0x80000000 if exclusive else 0)).to_bytes(4, "big") + \
            bytes([weight])

    def headers(self, stream_id, block, end_stream=True, end_headers=True,
                pad_length=0, priority=None):
        """HEADERS (RFC 9113 §6.2).  ``priority`` = (dep, weight, exclusive),
        where weight is the wire value (0..255, i.e. weight-1)."""
        flags = (FLAG_END_STREAM if end_stream else 0) | (FLAG_END_HEADERS if end_headers else 0)
        payload = b""
        if pad_length:
            flags |= FLAG_PADDED
            payload += bytes([pad_length])
        if priority is not None:
            flags |= FLAG_PRIORITY
            payload += self._priority_fields(*priority)
        payload += block + b"\x00" * pad_length
        self.write_frame(HEADERS, flags, stream_id, payload)

    def continuation(self, stream_id, block, end_headers):
        self.write_frame(CONTINUATION, FLAG_END_HEADERS if end_headers else 0, stream_id, block)

    def data(self, stream_id, payload, end_stream, pad=None):
        flags = FLAG_END_STREAM if end_stream else 0
        if pad is not None:
            flags |= FLAG_PADDED
            payload = bytes([len(pad)]) + payload + pad
        self.write_frame(DATA, flags, stream_id, payload)

    def priority(self, stream_id, dep=0, weight=255, exclusive=False):
        self.write_frame(PRIORITY, 0, stream_id, self._priority_fields(dep, weight, exclusive))

    def rst_stream(self, stream_id, code):
        self.write_frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big"))

    def settings(self, *pairs):
        payload = b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in pairs)
        self.write_frame(SETTINGS, 0, 0, payload)

    def settings_ack(self):
        self.write_frame(SETTINGS, FLAG_ACK, 0)

    def ping(self, opaque, ack=False):
        self.write_frame(PING, FLAG_ACK if ack else 0, 0, opaque)

    def goaway(self, last_stream_id, code, debug=b""):
        self.write_frame(GOAWAY, 0, 0, (last_stream_id & 0x7FFFFFFF).to_bytes(4, "big") +
                         code.to_bytes(4, "big") + debug)

    def window_update(self, stream_id, increment):
        self.write_frame(WINDOW_UPDATE, 0, stream_id, (increment & 0x7FFFFFFF).to_bytes(4, "big"))

    def push_promise(self, stream_id, promised_id, block):
        self.write_frame(PUSH_PROMISE, FLAG_END_HEADERS, stream_id,
                         promised_id.to_bytes(4, "big") + block)

    def encode(self, headers):
        """HPACK-encode with this connection's encoder (RFC 7541); the
        dynamic table carries over between calls, like a real client."""
        return self.encoder.encode([tuple(h) for h in headers])

    # ---- reading --------------------------------------------------------

    def _fill(self, n, deadline):
        while len(self.rbuf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout()
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                raise _Timeout()
            except (ConnectionResetError, ConnectionAbortedError,
                    ssl.SSLZeroReturnError, ssl.SSLEOFError):
                chunk = b""
            if not chunk:
                raise _Closed()
            self.rbuf += chunk

    def wait_event(self, deadline=None):
        """Read the next frame, waiting at most one timeout."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        try:
            self._fill(9, deadline)
            length = int.from_bytes(self.rbuf[0:3], "big")
            self._fill(9 + length, deadline)
        except _Timeout:
            ev = Event(Event.TIMEOUT)
        except _Closed:
            if self.rbuf:
                ev = Event(Event.ERROR, detail=f"connection closed inside a frame "
                                               f"({len(self.rbuf)} octets buffered)")
            else:
                ev = Event(Event.CLOSED)
        except OSError as exc:
            ev = Event(Event.ERROR, detail=str(exc))
        else:
            header = bytes(self.rbuf[:9])
            body = bytes(self.rbuf[9:9 + length])
            del self.rbuf[:9 + length]
            try:
                frame, _ = Frame.parse_frame_header(memoryview(header))
                frame.parse_body(memoryview(body))
            except Exception as exc:  # hyperframe raises several types
                ev = Event(Event.ERROR, detail=f"unparseable frame {header.hex()}: {exc}")
            else:
                ev = Event(Event.FRAME, frame, length)
        if ev.kind != Event.FRAME:
            self.closed = True
            self._vlog("recv", str(ev))
            return ev
        self._vlog("recv", str(ev))
        self._after_frame(ev)
        return ev

    def _after_frame(self, ev):
        f = ev.frame
        if f.type == DATA and self.auto_window_update:
            for sid in (f.stream_id, 0):
                win = self.recv_window.get(sid, DEFAULT_WINDOW_SIZE) - ev.length
                if win <= 0:
                    incr = DEFAULT_WINDOW_SIZE - win
                    self.window_update(sid, incr)
                    win += incr
                self.recv_window[sid] = win
        elif f.type in (HEADERS, PUSH_PROMISE, CONTINUATION) and self.decoder:
            # Decode responses only for the verbose log; a decoding problem
            # is not something h2spec judges, so it just stops decoding.
            self.header_block += f.data
            if "END_HEADERS" in f.flags:
                try:
                    fields = self.decoder.decode(bytes(self.header_block))
                    if self.log:
                        shown = ", ".join(f"{n}: {v}" for n, v in fields[:6])
                        self._vlog("recv", f"  header block: {shown}")
                except Exception as exc:
                    self._vlog("recv", f"  header block not decodable: {exc}")
                    self.decoder = None
                self.header_block = bytearray()

    def wait_event_type(self, ftype):
        """Return (event, True) for the first frame of ``ftype``; skip other
        frames.  Returns (last event, False) once the connection is finished
        (closed, error, or a read timeout)."""
        last = None
        while not self.closed:
            ev = self.wait_event()
            if ev.is_frame(ftype):
                return ev, True
            if ev.kind == Event.TIMEOUT and last is not None:
                break
            last = ev
        return last, False

    # ---- connection setup -----------------------------------------------

    def handshake(self):
        """Client preface + SETTINGS, then wait (one timeout in total) until
        we have both the server's SETTINGS (which we ACK) and the ACK of
        ours (RFC 9113 §3.4, §6.5.3)."""
        self.send(PREFACE, "connection preface")
        self.settings((SETTINGS_INITIAL_WINDOW_SIZE, DEFAULT_WINDOW_SIZE))
        deadline = time.monotonic() + self.timeout
        got_settings = got_ack = False
        while not (got_settings and got_ack):
            ev = self.wait_event(deadline)
            if ev.kind != Event.FRAME:
                raise SetupError(f"HTTP/2 handshake did not complete: {ev}")
            if ev.type != SETTINGS:
                continue
            if "ACK" in ev.frame.flags:
                got_ack = True
            else:
                got_settings = True
                self.server_settings.update(ev.frame.settings)
                self.settings_ack()

    def max_frame_size(self):
        return self.server_settings.get(SETTINGS_MAX_FRAME_SIZE, DEFAULT_FRAME_SIZE)


# --------------------------------------------------------------------------
# Verifiers (semantics follow h2spec's spec/verifier.go)
# --------------------------------------------------------------------------

def goaway_text(codes):
    return [f"GOAWAY Frame (error_code:{error_name(c)})" for c in codes]


def expect_connection_error(conn, *codes):
    """RFC 9113 §5.4.1: a connection error is signalled by GOAWAY and the
    connection is closed.  Pass on GOAWAY with one of ``codes`` or on the
    connection being closed (after any other frames)."""
    actual = None
    while not conn.closed:
        ev = conn.wait_event()
        if ev.kind == Event.CLOSED:
            return
        if ev.is_frame(GOAWAY) and ev.frame.error_code in codes:
            return
        if ev.kind != Event.TIMEOUT or actual is None:
            actual = ev
    raise CaseFailed(goaway_text(codes) + ["Connection closed"], str(actual))


def expect_stream_error(conn, *codes):
    """RFC 9113 §5.4.2: a stream error is signalled by RST_STREAM.  Like
    h2spec, a connection error (GOAWAY with the code, or close) is also
    accepted, since an endpoint may always escalate (§5.4.1)."""
    actual = None
    while not conn.closed:
        ev = conn.wait_event()
        if ev.kind == Event.CLOSED:
            return
        if (ev.is_frame(GOAWAY) or ev.is_frame(RST_STREAM)) and ev.frame.error_code in codes:
            return
        if ev.kind != Event.TIMEOUT or actual is None:
            actual = ev
    expected = []
    for c in codes:
        expected += [f"GOAWAY Frame (error_code:{error_name(c)})",
                     f"RST_STREAM Frame (error_code:{error_name(c)})"]
    raise CaseFailed(expected + ["Connection closed"], str(actual))


def expect_connection_close(conn):
    """Only the transport closing passes (frames before it are skipped)."""
    actual = None
    while not conn.closed:
        ev = conn.wait_event()
        if ev.kind == Event.CLOSED:
            return
        if ev.kind != Event.TIMEOUT or actual is None:
            actual = ev
    raise CaseFailed(["Connection closed"], str(actual))


def expect_stream_close(conn):
    """The response completes: END_STREAM on DATA/HEADERS, or RST_STREAM
    with NO_ERROR (RFC 9113 §8.1)."""
    actual = None
    while not conn.closed:
        ev = conn.wait_event()
        if (ev.is_frame(DATA) or ev.is_frame(HEADERS)) and ev.has_flag("END_STREAM"):
            return
        if ev.is_frame(RST_STREAM) and ev.frame.error_code == NO_ERROR:
            return
        if ev.kind != Event.TIMEOUT or actual is None:
            actual = ev
    raise CaseFailed(["Stream closed"], str(actual))


def expect_headers(conn, stream_id):
    """The first HEADERS frame received must be on ``stream_id``."""
    ev, ok = conn.wait_event_type(HEADERS)
    if not (ok and ev.frame.stream_id == stream_id):
        raise CaseFailed([f"HEADERS Frame (stream_id:{stream_id})"], str(ev))


def expect_frame_type(conn, ftype):
    ev, ok = conn.wait_event_type(ftype)
    if not ok:
        raise CaseFailed([f"{FRAME_NAMES[ftype]} Frame"], str(ev))
    return ev


def expect_settings_ack(conn):
    ev, ok = conn.wait_event_type(SETTINGS)
    if not (ok and ev.has_flag("ACK")):
        raise CaseFailed(["SETTINGS Frame (length:0, flags:ACK, stream_id:0)"], str(ev))


def expect_ping_ack(conn, opaque):
    """RFC 9113 §6.7: the PING response carries ACK and identical data."""
    ev, ok = conn.wait_event_type(PING)
    if not (ok and ev.has_flag("ACK") and bytes(ev.frame.opaque_data) == opaque):
        raise CaseFailed([f"PING Frame (flags:ACK, opaque_data:{opaque!r})"], str(ev))


def expect_ping_ack_or_close(conn, opaque):
    actual = None
    while not conn.closed:
        ev = conn.wait_event()
        if ev.kind == Event.CLOSED:
            return
        if ev.is_frame(PING) and ev.has_flag("ACK") and bytes(ev.frame.opaque_data) == opaque:
            return
        if ev.kind != Event.TIMEOUT or actual is None:
            actual = ev
    raise CaseFailed(["Connection closed", f"PING Frame (flags:ACK, opaque_data:{opaque!r})"],
                     str(actual))


def expect_data_length(conn, stream_id, length):
    """The first DATA frame received must carry exactly ``length`` octets
    (used by the flow-control cases, RFC 9113 §6.9)."""
    ev, ok = conn.wait_event_type(DATA)
    if not (ok and ev.length == length):
        raise CaseFailed([f"DATA Frame (length:{length}, stream_id:{stream_id})"], str(ev))


# --------------------------------------------------------------------------
# Request helpers
# --------------------------------------------------------------------------

def request_headers(cfg, method="GET"):
    """The four request pseudo-header fields (RFC 9113 §8.3.1), as a list of
    mutable [name, value] pairs in the usual order."""
    return [[":method", method], [":scheme", cfg.scheme],
            [":path", cfg.path], [":authority", cfg.authority]]


def dummy_headers(count):
    """``count`` large header fields; five of them overflow one 16 KiB
    frame even after Huffman coding."""
    return [[f"x-dummy{i}", "x" * DUMMY_HEADER_LEN] for i in range(count)]


def server_data_length(cfg):
    """Total DATA octets of a GET on --path, over a separate connection.
    Cases that need the server to have a response body use this."""
    conn = Conn(cfg)
    try:
        conn.handshake()
        conn.headers(1, conn.encode(request_headers(cfg)))
        total = 0
        while not conn.closed:
            ev = conn.wait_event()
            if ev.is_frame(DATA):
                total += ev.length
            if (ev.is_frame(DATA) or ev.is_frame(HEADERS)) and ev.has_flag("END_STREAM"):
                return total
        raise SetupError("unable to get the length of the response body")
    finally:
        conn.close()


PING_H2SPEC = b"h2spec\x00\x00"
PING_ZERO = b"\x00" * 8


# --------------------------------------------------------------------------
# Case registry
# --------------------------------------------------------------------------

class Case:
    def __init__(self, key, section, seq, desc, ref, fn, handshake, min_body):
        self.key, self.section, self.seq = key, section, seq
        self.desc, self.ref, self.fn = desc, ref, fn
        self.handshake, self.min_body = handshake, min_body

    @property
    def id(self):
        return f"{self.key}/{self.section}/{self.seq}"


CASES = []


def case(key, section, desc, ref, handshake=True, min_body=0):
    """Register a case.  Sequence numbers follow registration order inside a
    section, which matches h2spec's numbering.  ``handshake`` runs the
    connection preface exchange first; ``min_body`` skips the case unless
    GET --path returns at least that many body octets."""
    def register(fn):
        seq = 1 + sum(1 for c in CASES if c.key == key and c.section == section)
        CASES.append(Case(key, section, seq, desc, ref, fn, handshake, min_body))
        return fn
    return register


def send_get(cfg, conn, stream_id=1, **kw):
    """HEADERS for GET --path; keyword args go to Conn.headers."""
    conn.headers(stream_id, conn.encode(request_headers(cfg)), **kw)


def send_post_headers(cfg, conn, stream_id=1, extra=(), **kw):
    """HEADERS opening a POST (END_STREAM clear unless told otherwise)."""
    kw.setdefault("end_stream", False)
    conn.headers(stream_id, conn.encode(request_headers(cfg, "POST") + list(extra)), **kw)


# ==========================================================================
# generic: baseline behaviour every HTTP/2 server must accept
# ==========================================================================

def _preface_then_settings(cfg, conn):
    # RFC 9113 §3.4: the server preface is a SETTINGS frame (not an ACK)
    # and must be the first frame the server sends.
    conn.send(PREFACE, "connection preface")
    conn.settings((SETTINGS_INITIAL_WINDOW_SIZE, DEFAULT_WINDOW_SIZE))
    ev = conn.wait_event()
    if not (ev.is_frame(SETTINGS) and not ev.has_flag("ACK")):
        raise CaseFailed(["SETTINGS Frame (flags:0x00)"], str(ev))


case("generic", "1", "Sends a client connection preface", "RFC 9113 §3.4",
     handshake=False)(_preface_then_settings)


@case("generic", "2", "Sends a PRIORITY frame on idle stream", "RFC 9113 §5.1")
def _(cfg, conn):
    conn.priority(1, dep=0, weight=255)
    conn.ping(PING_ZERO)
    expect_ping_ack(conn, PING_ZERO)


@case("generic", "2", "Sends a WINDOW_UPDATE frame on half-closed (remote) stream", "RFC 9113 §5.1")
def _(cfg, conn):
    # Initial window 0 keeps the response body pending, so the stream stays
    # half-closed (remote) until our WINDOW_UPDATE releases one octet.
    conn.settings((SETTINGS_INITIAL_WINDOW_SIZE, 0))
    send_get(cfg, conn)
    conn.window_update(1, 1)
    expect_frame_type(conn, DATA)


@case("generic", "2", "Sends a PRIORITY frame on half-closed (remote) stream", "RFC 9113 §5.1")
def _(cfg, conn):
    conn.settings((SETTINGS_INITIAL_WINDOW_SIZE, 0))
    send_get(cfg, conn)
    conn.priority(1, dep=0, weight=255)
    conn.window_update(1, 1)
    expect_frame_type(conn, DATA)


@case("generic", "2", "Sends a RST_STREAM frame on half-closed (remote) stream", "RFC 9113 §5.1")
def _(cfg, conn):
    send_get(cfg, conn)
    conn.rst_stream(1, CANCEL)
    conn.ping(PING_ZERO)
    expect_ping_ack_or_close(conn, PING_ZERO)


@case("generic", "2", "Sends a PRIORITY frame on closed stream", "RFC 9113 §5.1")
def _(cfg, conn):
    send_get(cfg, conn)
    expect_stream_close(conn)
    conn.priority(1, dep=0, weight=255)
    conn.ping(PING_ZERO)
    expect_ping_ack(conn, PING_ZERO)


# ---- generic/3.x: each frame type used correctly ------------------------

@case("generic", "3.1", "Sends a DATA frame", "RFC 9113 §6.1")
def _(cfg, conn):
    send_post_headers(cfg, conn)
    conn.data(1, b"test", end_stream=True)
    expect_headers(conn, 1)


@case("generic", "3.1", "Sends multiple DATA frames", "RFC 9113 §6.1")
def _(cfg, conn):
    send_post_headers(cfg, conn)
    conn.data(1, b"test", end_stream=False)
    conn.data(1, b"test", end_stream=True)
    expect_headers(conn, 1)


@case("generic", "3.1", "Sends a DATA frame with padding", "RFC 9113 §6.1")
def _(cfg, conn):
    send_post_headers(cfg, conn)
    conn.data(1, b"test", end_stream=True, pad=b"\x00" * 5)
    expect_headers(conn, 1)


@case("generic", "3.2", "Sends a HEADERS frame", "RFC 9113 §6.2")
def _(cfg, conn):
    send_get(cfg, conn)
    expect_headers(conn, 1)


@case("generic", "3.2", "Sends a HEADERS frame with padding", "RFC 9113 §6.2")
def _(cfg, conn):
    send_get(cfg, conn, pad_length=8)
    expect_headers(conn, 1)


@case("generic", "3.2", "Sends a HEADERS frame with priority", "RFC 9113 §6.2")
def _(cfg, conn):
    send_get(cfg, conn, priority=(0, 255, False))
    expect_headers(conn, 1)


def _priority_then_get(prio_stream, dep, weight, exclusive):
    def run(cfg, conn):
        conn.priority(prio_stream, dep=dep, weight=weight, exclusive=exclusive)
        send_get(cfg, conn)
        expect_headers(conn, 1)
    return run


# RFC 9113 §6.3: PRIORITY may be sent in any stream state (including idle);
# RFC 9113 deprecates the signal but receivers must still accept the frame.
case("generic", "3.3", "Sends a PRIORITY frame with priority 1", "RFC 9113 §6.3")(
    _priority_then_get(1, 0, 0, False))
case("generic", "3.3", "Sends a PRIORITY frame with priority 256", "RFC 9113 §6.3")(
    _priority_then_get(1, 0, 255, False))
case("generic", "3.3", "Sends a PRIORITY frame with stream dependency", "RFC 9113 §6.3")(
    _priority_then_get(3, 1, 0, False))
case("generic", "3.3", "Sends a PRIORITY frame with exclusive", "RFC 9113 §6.3")(
    _priority_then_get(1, 0, 0, True))
# A PRIORITY frame does not open the idle stream 3, so opening stream 1
# afterwards is not a "lower stream id" violation (RFC 9113 §5.1.1).
case("generic", "3.3",
     "Sends a PRIORITY frame for an idle stream, then send a HEADER frame for a lower stream ID",
     "RFC 9113 §6.3, §5.1.1")(_priority_then_get(3, 0, 255, False))


@case("generic", "3.4", "Sends a RST_STREAM frame", "RFC 9113 §6.4")
def _(cfg, conn):
    send_get(cfg, conn, end_stream=False)
    conn.rst_stream(1, CANCEL)
    conn.ping(PING_ZERO)
    expect_ping_ack_or_close(conn, PING_ZERO)


@case("generic", "3.5", "Sends a SETTINGS frame", "RFC 9113 §6.5")
def _(cfg, conn):
    conn.settings((SETTINGS_HEADER_TABLE_SIZE, 4096), (SETTINGS_ENABLE_PUSH, 1),
                  (SETTINGS_MAX_CONCURRENT_STREAMS, 100),
                  (SETTINGS_INITIAL_WINDOW_SIZE, 65535),
                  (SETTINGS_MAX_FRAME_SIZE, 16384), (SETTINGS_MAX_HEADER_LIST_SIZE, 100))
    expect_settings_ack(conn)


@case("generic", "3.7", "Sends a PING frame", "RFC 9113 §6.7")
def _(cfg, conn):
    conn.ping(PING_H2SPEC)
    expect_ping_ack(conn, PING_H2SPEC)


@case("generic", "3.8", "Sends a GOAWAY frame", "RFC 9113 §6.8")
def _(cfg, conn):
    conn.goaway(0, NO_ERROR, b"h2spec")
    conn.ping(PING_H2SPEC)
    expect_ping_ack_or_close(conn, PING_H2SPEC)


@case("generic", "3.9", "Sends a WINDOW_UPDATE frame with stream ID 0", "RFC 9113 §6.9")
def _(cfg, conn):
    conn.window_update(0, 1)
    conn.ping(PING_ZERO)
    expect_ping_ack(conn, PING_ZERO)


@case("generic", "3.9", "Sends a WINDOW_UPDATE frame with stream ID 1", "RFC 9113 §6.9")
def _(cfg, conn):
    send_get(cfg, conn)
    conn.window_update(1, 1)
    expect_headers(conn, 1)


@case("generic", "3.10", "Sends a CONTINUATION frame", "RFC 9113 §6.10")
def _(cfg, conn):
    block = conn.encode(request_headers(cfg))
    conn.headers(1, block[:5], end_stream=True, end_headers=False)
    conn.continuation(1, block[5:], end_headers=True)
    expect_headers(conn, 1)


@case("generic", "3.10", "Sends multiple CONTINUATION frames", "RFC 9113 §6.10")
def _(cfg, conn):
    block = conn.encode(request_headers(cfg))
    conn.headers(1, block[:5], end_stream=True, end_headers=False)
    conn.continuation(1, block[5:10], end_headers=False)
    conn.continuation(1, block[10:], end_headers=True)
    expect_headers(conn, 1)


# ---- generic/4: HTTP message exchanges -----------------------------------

@case("generic", "4", "Sends a GET request", "RFC 9113 §8.1")
def _(cfg, conn):
    send_get(cfg, conn)
    expect_headers(conn, 1)


@case("generic", "4", "Sends a HEAD request", "RFC 9113 §8.1")
def _(cfg, conn):
    conn.headers(1, conn.encode(request_headers(cfg, "HEAD")))
    expect_headers(conn, 1)


@case("generic", "4", "Sends a POST request", "RFC 9113 §8.1")
def _(cfg, conn):
    send_post_headers(cfg, conn)
    conn.data(1, b"test", end_stream=True)
    expect_headers(conn, 1)


@case("generic", "4", "Sends a POST request with trailers", "RFC 9113 §8.1")
def _(cfg, conn):
    send_post_headers(cfg, conn, extra=[["trailer", "x-test"]])
    conn.data(1, b"test", end_stream=False)
    conn.headers(1, conn.encode([["x-test", "ok"]]), end_stream=True)
    expect_headers(conn, 1)


# ---- generic/5: every HPACK representation (RFC 7541 §6) -----------------
# Each case appends one hand-encoded field representation to a normal
# request header block.

GENERIC_HPACK_REPRESENTATIONS = [
    ("Sends a indexed header field representation", b"\xba"),
    ("Sends a literal header field with incremental indexing - indexed name",
     b"\x40\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"),
    ("Sends a literal header field with incremental indexing - indexed name (with Huffman coding)",
     b"\x40\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("Sends a literal header field with incremental indexing - new name",
     b"\x40\x06\x78\x2d\x74\x65\x73\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("Sends a literal header field with incremental indexing - new name (with Huffman coding)",
     b"\x40\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"),
    ("Sends a literal header field without indexing - indexed name",
     b"\x00\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("Sends a literal header field without indexing - indexed name (with Huffman coding)",
     b"\x00\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"),
    ("Sends a literal header field without indexing - new name",
     b"\x00\x06\x78\x2d\x74\x65\x73\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("Sends a literal header field without indexing - new name (huffman encoded)",
     b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"),
    ("Sends a literal header field never indexed - indexed name",
     b"\x10\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("Sends a literal header field never indexed - indexed name (huffman encoded)",
     b"\x10\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"),
    # h2spec sends the Huffman-coded bytes for both "new name" variants.
    ("Sends a literal header field never indexed - new name",
     b"\x10\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"),
    ("Sends a literal header field never indexed - new name (huffman encoded)",
     b"\x10\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"),
]


def _get_with_suffix(rep):
    def run(cfg, conn):
        conn.headers(1, conn.encode(request_headers(cfg)) + rep)
        expect_headers(conn, 1)
    return run


for _desc, _rep in GENERIC_HPACK_REPRESENTATIONS:
    case("generic", "5", _desc, "RFC 7541 §6.1, §6.2")(_get_with_suffix(_rep))


@case("generic", "5", "Sends a dynamic table size update", "RFC 7541 §6.3")
def _(cfg, conn):
    conn.encoder.header_table_size = 128  # emits a size update (0x3f 0x61)
    send_get(cfg, conn)
    expect_headers(conn, 1)


@case("generic", "5", "Sends multiple dynamic table size update", "RFC 7541 §4.2, §6.3")
def _(cfg, conn):
    # Two updates (128, then 4096) at the start of one block (RFC 7541 §4.2).
    conn.headers(1, b"\x3f\x61\x3f\xe1\x1f" + conn.encode(request_headers(cfg)))
    expect_headers(conn, 1)


# ==========================================================================
# http2: RFC 7540 numbering (RFC 9113 equivalents in the README)
# ==========================================================================

# ---- 3.5 HTTP/2 Connection Preface (RFC 9113 §3.4) -----------------------

case("http2", "3.5", "Sends client connection preface", "RFC 9113 §3.4",
     handshake=False)(_preface_then_settings)


@case("http2", "3.5", "Sends invalid connection preface", "RFC 9113 §3.4", handshake=False)
def _(cfg, conn):
    # "Clients and servers MUST treat an invalid connection preface as a
    # connection error of type PROTOCOL_ERROR."
    conn.send(b"INVALID CONNECTION PREFACE\r\n\r\n")
    expect_connection_error(conn, PROTOCOL_ERROR)


# ---- 4.1 Frame Format ----------------------------------------------------

@case("http2", "4.1", "Sends a frame with unknown type", "RFC 9113 §4.1, §5.5")
def _(cfg, conn):
    # "Implementations MUST ignore and discard frames of unknown types."
    conn.send(b"\x00\x00\x08\x16\x00\x00\x00\x00\x00" + b"\x00" * 8, "frame of type 0x16")
    conn.ping(PING_ZERO)
    expect_ping_ack(conn, PING_ZERO)


@case("http2", "4.1", "Sends a frame with undefined flag", "RFC 9113 §4.1")
def _(cfg, conn):
    # PING with flags 0x16: undefined flags MUST be ignored (ACK is unset).
    conn.send(b"\x00\x00\x08\x06\x16\x00\x00\x00\x00" + b"\x00" * 8, "PING, flags 0x16")
    expect_frame_type(conn, PING)


@case("http2", "4.1", "Sends a frame with reserved field bit", "RFC 9113 §4.1")
def _(cfg, conn):
    # Reserved bit set in the stream identifier: MUST be ignored on receipt.
    conn.send(b"\x00\x00\x08\x06\x16\x80\x00\x00\x00" + b"\x00" * 8, "PING, R bit set")
    expect_frame_type(conn, PING)


# ---- 4.2 Frame Size ------------------------------------------------------

@case("http2", "4.2", "Sends a DATA frame with 2^14 octets in length", "RFC 9113 §4.2")
def _(cfg, conn):
    send_post_headers(cfg, conn)
    conn.data(1, b"x" * conn.max_frame_size(), end_stream=True)
    expect_headers(conn, 1)


@case("http2", "4.2", "Sends a large size DATA frame that exceeds the SETTINGS_MAX_FRAME_SIZE",
      "RFC 9113 §4.2")
def _(cfg, conn):
    # "An endpoint MUST send an error code of FRAME_SIZE_ERROR if a frame
    # exceeds the size defined in SETTINGS_MAX_FRAME_SIZE" (stream or
    # connection error, at the endpoint's choice for DATA).
    send_post_headers(cfg, conn)
    conn.data(1, b"x" * (conn.max_frame_size() + 1), end_stream=True)
    expect_stream_error(conn, FRAME_SIZE_ERROR)


@case("http2", "4.2", "Sends a large size HEADERS frame that exceeds the SETTINGS_MAX_FRAME_SIZE",
      "RFC 9113 §4.2")
def _(cfg, conn):
    # A frame that can alter connection state (HEADERS: HPACK context) must
    # be treated as a connection error.
    conn.headers(1, conn.encode(request_headers(cfg) + dummy_headers(5)))
    expect_connection_error(conn, FRAME_SIZE_ERROR)


# ---- 4.3 Header Compression and Decompression ----------------------------

@case("http2", "4.3", "Sends invalid header block fragment", "RFC 9113 §4.3")
def _(cfg, conn):
    # One octet 0x40: literal with incremental indexing, new name, but the
    # name length is missing -> decoding error -> COMPRESSION_ERROR.
    conn.send(b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\x40", "HEADERS with truncated block")
    expect_connection_error(conn, COMPRESSION_ERROR)


@case("http2", "4.3", "Sends a PRIORITY frame while sending the header blocks", "RFC 9113 §4.3")
def _(cfg, conn):
    # A field block must be a contiguous sequence of frames (§4.3, §6.10).
    conn.headers(1, conn.encode(request_headers(cfg)), end_stream=False, end_headers=False)
    conn.priority(1, dep=0, weight=255)
    conn.continuation(1, conn.encode(dummy_headers(1)), end_headers=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "4.3", "Sends a HEADERS frame to another stream while sending the header blocks",
      "RFC 9113 §4.3")
def _(cfg, conn):
    hdrs = request_headers(cfg)
    conn.headers(1, conn.encode(hdrs), end_stream=False, end_headers=False)
    conn.headers(3, conn.encode(hdrs))
    conn.continuation(1, conn.encode(dummy_headers(1)), end_headers=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


# ---- 5.1 Stream States ---------------------------------------------------
# idle: only HEADERS and PRIORITY are allowed (connection error otherwise);
# half-closed (remote) / closed: STREAM_CLOSED (RFC 9113 §5.1).

@case("http2", "5.1", "idle: Sends a DATA frame", "RFC 9113 §5.1")
def _(cfg, conn):
    conn.data(1, b"test", end_stream=True)
    expect_stream_error(conn, PROTOCOL_ERROR, STREAM_CLOSED)


@case("http2", "5.1", "idle: Sends a RST_STREAM frame", "RFC 9113 §5.1")
def _(cfg, conn):
    conn.rst_stream(1, CANCEL)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "5.1", "idle: Sends a WINDOW_UPDATE frame", "RFC 9113 §5.1")
def _(cfg, conn):
    conn.window_update(1, 100)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "5.1", "idle: Sends a CONTINUATION frame", "RFC 9113 §5.1")
def _(cfg, conn):
    conn.continuation(1, conn.encode(request_headers(cfg)), end_headers=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "5.1", "half closed (remote): Sends a DATA frame", "RFC 9113 §5.1")
def _(cfg, conn):
    send_get(cfg, conn)
    conn.data(1, b"test", end_stream=True)
    expect_stream_error(conn, STREAM_CLOSED)


@case("http2", "5.1", "half closed (remote): Sends a HEADERS frame", "RFC 9113 §5.1")
def _(cfg, conn):
    hdrs = request_headers(cfg)
    conn.headers(1, conn.encode(hdrs))
    conn.headers(1, conn.encode(hdrs))
    expect_stream_error(conn, STREAM_CLOSED)


@case("http2", "5.1", "half closed (remote): Sends a CONTINUATION frame", "RFC 9113 §5.1")
def _(cfg, conn):
    block = conn.encode(request_headers(cfg))
    conn.headers(1, block)
    # A CONTINUATION not preceded by HEADERS without END_HEADERS is also a
    # §6.10 PROTOCOL_ERROR, hence both codes.
    conn.continuation(1, block, end_headers=True)
    expect_stream_error(conn, STREAM_CLOSED, PROTOCOL_ERROR)


@case("http2", "5.1", "closed: Sends a DATA frame after sending RST_STREAM frame", "RFC 9113 §5.1")
def _(cfg, conn):
    send_get(cfg, conn, end_stream=False)
    conn.rst_stream(1, CANCEL)
    conn.data(1, b"test", end_stream=True)
    expect_stream_error(conn, STREAM_CLOSED)


@case("http2", "5.1", "closed: Sends a HEADERS frame after sending RST_STREAM frame",
      "RFC 9113 §5.1")
def _(cfg, conn):
    hdrs = request_headers(cfg)
    conn.headers(1, conn.encode(hdrs), end_stream=False)
    conn.rst_stream(1, CANCEL)
    conn.headers(1, conn.encode(hdrs))
    expect_stream_error(conn, STREAM_CLOSED)


@case("http2", "5.1", "closed: Sends a CONTINUATION frame after sending RST_STREAM frame",
      "RFC 9113 §5.1")
def _(cfg, conn):
    send_get(cfg, conn, end_stream=False)
    conn.rst_stream(1, CANCEL)
    conn.continuation(1, conn.encode(dummy_headers(1)), end_headers=True)
    expect_stream_error(conn, STREAM_CLOSED, PROTOCOL_ERROR)


@case("http2", "5.1", "closed: Sends a DATA frame", "RFC 9113 §5.1")
def _(cfg, conn):
    send_get(cfg, conn)
    expect_stream_close(conn)
    conn.data(1, b"test", end_stream=True)
    expect_stream_error(conn, STREAM_CLOSED)


@case("http2", "5.1", "closed: Sends a HEADERS frame", "RFC 9113 §5.1")
def _(cfg, conn):
    block = conn.encode(request_headers(cfg))
    conn.headers(1, block)
    expect_stream_close(conn)
    # The same octets again (re-decoding them is valid HPACK); a HEADERS
    # frame on a stream closed by END_STREAM is a connection error.
    conn.headers(1, block)
    expect_connection_error(conn, STREAM_CLOSED)


@case("http2", "5.1", "closed: Sends a CONTINUATION frame", "RFC 9113 §5.1")
def _(cfg, conn):
    send_get(cfg, conn)
    expect_stream_close(conn)
    conn.continuation(1, conn.encode(dummy_headers(1)), end_headers=True)
    expect_connection_error(conn, STREAM_CLOSED, PROTOCOL_ERROR)


# ---- 5.1.1 Stream Identifiers --------------------------------------------

@case("http2", "5.1.1", "Sends even-numbered stream identifier", "RFC 9113 §5.1.1")
def _(cfg, conn):
    send_get(cfg, conn, stream_id=2)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "5.1.1", "Sends stream identifier that is numerically smaller than previous",
      "RFC 9113 §5.1.1")
def _(cfg, conn):
    block_hdrs = request_headers(cfg)
    conn.headers(5, conn.encode(block_hdrs))
    conn.headers(3, conn.encode(block_hdrs))
    expect_connection_error(conn, PROTOCOL_ERROR)


# ---- 5.1.2 Stream Concurrency --------------------------------------------

@case("http2", "5.1.2",
      "Sends HEADERS frames that causes their advertised concurrent stream limit to be exceeded",
      "RFC 9113 §5.1.2")
def _(cfg, conn):
    limit = conn.server_settings.get(SETTINGS_MAX_CONCURRENT_STREAMS)
    if limit is None:
        raise CaseSkipped("server does not advertise SETTINGS_MAX_CONCURRENT_STREAMS")
    # Window 0: responses cannot finish, so every stream stays open.
    conn.settings((SETTINGS_INITIAL_WINDOW_SIZE, 0))
    # One block, sent limit+1 times; resending identical octets is fine
    # because our encoder's only insertion is repeated identically.
    block = conn.encode(request_headers(cfg))
    for i in range(limit + 1):
        conn.headers(1 + 2 * i, block)
    expect_stream_error(conn, PROTOCOL_ERROR, REFUSED_STREAM)


# ---- 5.3.1 Stream Dependencies -------------------------------------------

@case("http2", "5.3.1", "Sends HEADERS frame that depends on itself", "RFC 9113 §5.3.1")
def _(cfg, conn):
    send_get(cfg, conn, priority=(1, 255, False))
    expect_stream_error(conn, PROTOCOL_ERROR)


@case("http2", "5.3.1", "Sends PRIORITY frame that depend on itself", "RFC 9113 §5.3.1, §6.3")
def _(cfg, conn):
    conn.priority(1, dep=1, weight=255)
    expect_stream_error(conn, PROTOCOL_ERROR)


# ---- 5.4.1 Connection Error Handling -------------------------------------

@case("http2", "5.4.1", "Sends an invalid PING frame for connection close", "RFC 9113 §5.4.1")
def _(cfg, conn):
    # PING on stream 3 is a connection error; after it the endpoint MUST
    # close the TCP connection -- only the close passes here.
    conn.send(b"\x00\x00\x08\x06\x00\x00\x00\x00\x03" + b"\x00" * 8, "PING on stream 3")
    expect_connection_close(conn)


# ---- 5.5 Extending HTTP/2 ------------------------------------------------

@case("http2", "5.5", "Sends an unknown extension frame", "RFC 9113 §5.5")
def _(cfg, conn):
    conn.send(b"\x00\x00\x08\x16\x00\x00\x00\x00\x00" + b"\x00" * 8, "frame of type 0x16")
    conn.ping(PING_ZERO)
    expect_ping_ack(conn, PING_ZERO)


@case("http2", "5.5", "Sends an unknown extension frame in the middle of a header block",
      "RFC 9113 §5.5, §4.3")
def _(cfg, conn):
    # Extension frames may not interrupt a field block (§5.5, §6.10).
    conn.headers(1, conn.encode(request_headers(cfg)), end_headers=False)
    conn.send(b"\x00\x00\x08\x16\x00\x00\x00\x00\x00" + b"\x00" * 8, "frame of type 0x16")
    expect_connection_error(conn, PROTOCOL_ERROR)


# ---- 6.1 DATA --------------------------------------------------------------

@case("http2", "6.1", "Sends a DATA frame with 0x0 stream identifier", "RFC 9113 §6.1")
def _(cfg, conn):
    conn.data(0, b"test", end_stream=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.1",
      'Sends a DATA frame on the stream that is not in "open" or "half-closed (local)" state',
      "RFC 9113 §6.1")
def _(cfg, conn):
    send_post_headers(cfg, conn, end_stream=True)
    conn.data(1, b"test", end_stream=True)
    expect_stream_error(conn, STREAM_CLOSED)


@case("http2", "6.1", "Sends a DATA frame with invalid pad length", "RFC 9113 §6.1")
def _(cfg, conn):
    # "If the length of the padding is the length of the frame payload or
    # greater, the recipient MUST treat this as a connection error."
    # Payload 5 octets: Pad Length 6, "Test".
    send_post_headers(cfg, conn, extra=[["content-length", "4"]])
    conn.send(b"\x00\x00\x05\x00\x09\x00\x00\x00\x01" + b"\x06Test", "DATA, pad length 6 of 5")
    expect_connection_error(conn, PROTOCOL_ERROR)


# ---- 6.2 HEADERS -----------------------------------------------------------

@case("http2", "6.2", "Sends a HEADERS frame without the END_HEADERS flag, and a PRIORITY frame",
      "RFC 9113 §6.2")
def _(cfg, conn):
    conn.headers(1, conn.encode(request_headers(cfg)), end_stream=False, end_headers=False)
    conn.priority(1, dep=0, weight=255)
    conn.continuation(1, conn.encode(dummy_headers(1)), end_headers=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.2", "Sends a HEADERS frame to another stream while sending a HEADERS frame",
      "RFC 9113 §6.2")
def _(cfg, conn):
    hdrs = request_headers(cfg)
    conn.headers(1, conn.encode(hdrs), end_stream=False, end_headers=False)
    conn.headers(3, conn.encode(hdrs))
    conn.continuation(1, conn.encode(dummy_headers(1)), end_headers=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.2", "Sends a HEADERS frame with 0x0 stream identifier", "RFC 9113 §6.2")
def _(cfg, conn):
    send_get(cfg, conn, stream_id=0)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.2", "Sends a HEADERS frame with invalid pad length", "RFC 9113 §6.2")
def _(cfg, conn):
    # Pad Length = block length + 2 exceeds the rest of the payload.  The
    # RFC asks for a connection error; h2spec (and we) accept stream errors.
    block = conn.encode(request_headers(cfg))
    flags = FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED
    conn.write_frame(HEADERS, flags, 1, bytes([len(block) + 2]) + block)
    expect_stream_error(conn, PROTOCOL_ERROR)


# ---- 6.3 PRIORITY ----------------------------------------------------------

@case("http2", "6.3", "Sends a PRIORITY frame with 0x0 stream identifier", "RFC 9113 §6.3")
def _(cfg, conn):
    conn.priority(0, dep=0, weight=255)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.3", "Sends a PRIORITY frame with a length other than 5 octets", "RFC 9113 §6.3")
def _(cfg, conn):
    send_get(cfg, conn)
    conn.write_frame(PRIORITY, 0, 1, b"\x80\x00\x00\x01")
    expect_stream_error(conn, FRAME_SIZE_ERROR)


# ---- 6.4 RST_STREAM --------------------------------------------------------

@case("http2", "6.4", "Sends a RST_STREAM frame with 0x0 stream identifier", "RFC 9113 §6.4")
def _(cfg, conn):
    conn.rst_stream(0, CANCEL)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.4", "Sends a RST_STREAM frame on a idle stream", "RFC 9113 §6.4")
def _(cfg, conn):
    conn.rst_stream(1, CANCEL)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.4", "Sends a RST_STREAM frame with a length other than 4 octets",
      "RFC 9113 §6.4")
def _(cfg, conn):
    send_get(cfg, conn)
    conn.write_frame(RST_STREAM, 0, 1, b"\x00\x00\x00")
    # RFC says connection error FRAME_SIZE_ERROR; h2spec accepts a stream error.
    expect_stream_error(conn, FRAME_SIZE_ERROR)


# ---- 6.5 SETTINGS ----------------------------------------------------------

@case("http2", "6.5", "Sends a SETTINGS frame with ACK flag and payload", "RFC 9113 §6.5")
def _(cfg, conn):
    conn.write_frame(SETTINGS, FLAG_ACK, 0, b"\x00")
    expect_connection_error(conn, FRAME_SIZE_ERROR)


@case("http2", "6.5", "Sends a SETTINGS frame with a stream identifier other than 0x0",
      "RFC 9113 §6.5")
def _(cfg, conn):
    conn.write_frame(SETTINGS, 0, 1, b"\x00\x03\x00\x00\x00\x64")
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.5", "Sends a SETTINGS frame with a length other than a multiple of 6 octets",
      "RFC 9113 §6.5")
def _(cfg, conn):
    conn.write_frame(SETTINGS, 0, 0, b"\x00\x03\x00")
    # h2spec uses its stream-error verifier here (codes PROTOCOL_ERROR or
    # FRAME_SIZE_ERROR); the RFC asks for a FRAME_SIZE_ERROR connection error.
    expect_stream_error(conn, PROTOCOL_ERROR, FRAME_SIZE_ERROR)


# ---- 6.5.2 Defined SETTINGS Parameters -----------------------------------

@case("http2", "6.5.2", "SETTINGS_ENABLE_PUSH (0x2): Sends the value other than 0 or 1",
      "RFC 9113 §6.5.2")
def _(cfg, conn):
    conn.settings((SETTINGS_ENABLE_PUSH, 2))
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.5.2",
      "SETTINGS_INITIAL_WINDOW_SIZE (0x4): Sends the value above the maximum flow control window size",
      "RFC 9113 §6.5.2")
def _(cfg, conn):
    conn.settings((SETTINGS_INITIAL_WINDOW_SIZE, 2**31))
    expect_connection_error(conn, FLOW_CONTROL_ERROR)


@case("http2", "6.5.2", "SETTINGS_MAX_FRAME_SIZE (0x5): Sends the value below the initial value",
      "RFC 9113 §6.5.2")
def _(cfg, conn):
    conn.settings((SETTINGS_MAX_FRAME_SIZE, 16383))
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.5.2",
      "SETTINGS_MAX_FRAME_SIZE (0x5): Sends the value above the maximum allowed frame size",
      "RFC 9113 §6.5.2")
def _(cfg, conn):
    conn.settings((SETTINGS_MAX_FRAME_SIZE, 2**24))
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.5.2", "Sends a SETTINGS frame with unknown identifier", "RFC 9113 §6.5.2")
def _(cfg, conn):
    # "An endpoint that receives a SETTINGS frame with any unknown or
    # unsupported identifier MUST ignore that setting."
    conn.settings((0xFF, 1))
    conn.ping(PING_ZERO)
    expect_ping_ack(conn, PING_ZERO)


# ---- 6.5.3 Settings Synchronization --------------------------------------

@case("http2", "6.5.3", "Sends multiple values of SETTINGS_INITIAL_WINDOW_SIZE",
      "RFC 9113 §6.5.3", min_body=1)
def _(cfg, conn):
    # Values are processed in order; the last one (1) wins.
    conn.settings((SETTINGS_INITIAL_WINDOW_SIZE, 100), (SETTINGS_INITIAL_WINDOW_SIZE, 1))
    expect_settings_ack(conn)
    send_get(cfg, conn)
    expect_data_length(conn, 1, 1)


@case("http2", "6.5.3", "Sends a SETTINGS frame without ACK flag", "RFC 9113 §6.5.3")
def _(cfg, conn):
    conn.settings((SETTINGS_ENABLE_PUSH, 0))
    expect_settings_ack(conn)


# ---- 6.7 PING --------------------------------------------------------------

@case("http2", "6.7", "Sends a PING frame", "RFC 9113 §6.7")
def _(cfg, conn):
    conn.ping(PING_H2SPEC)
    expect_ping_ack(conn, PING_H2SPEC)


@case("http2", "6.7", "Sends a PING frame with ACK", "RFC 9113 §6.7")
def _(cfg, conn):
    # "An endpoint MUST NOT respond to PING frames containing this flag."
    conn.ping(b"invalid\x00", ack=True)
    conn.ping(PING_H2SPEC)
    expect_ping_ack(conn, PING_H2SPEC)


@case("http2", "6.7", "Sends a PING frame with a stream identifier field value other than 0x0",
      "RFC 9113 §6.7")
def _(cfg, conn):
    conn.write_frame(PING, 0, 1, PING_ZERO)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.7", "Sends a PING frame with a length field value other than 8",
      "RFC 9113 §6.7")
def _(cfg, conn):
    conn.write_frame(PING, 0, 0, b"\x00" * 6)
    expect_connection_error(conn, FRAME_SIZE_ERROR)


# ---- 6.8 GOAWAY ------------------------------------------------------------

@case("http2", "6.8", "Sends a GOAWAY frame with a stream identifier other than 0x0",
      "RFC 9113 §6.8")
def _(cfg, conn):
    conn.write_frame(GOAWAY, 0, 1, b"\x00" * 8)
    expect_connection_error(conn, PROTOCOL_ERROR)


# ---- 6.9 WINDOW_UPDATE -----------------------------------------------------

@case("http2", "6.9", "Sends a WINDOW_UPDATE frame with a flow control window increment of 0",
      "RFC 9113 §6.9")
def _(cfg, conn):
    conn.window_update(0, 0)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.9",
      "Sends a WINDOW_UPDATE frame with a flow control window increment of 0 on a stream",
      "RFC 9113 §6.9")
def _(cfg, conn):
    send_get(cfg, conn, end_stream=False)
    conn.window_update(1, 0)
    expect_stream_error(conn, PROTOCOL_ERROR)


@case("http2", "6.9", "Sends a WINDOW_UPDATE frame with a length other than 4 octets",
      "RFC 9113 §6.9")
def _(cfg, conn):
    conn.write_frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01")
    expect_connection_error(conn, FRAME_SIZE_ERROR)


# ---- 6.9.1 The Flow-Control Window ---------------------------------------

@case("http2", "6.9.1",
      "Sends SETTINGS frame to set the initial window size to 1 and sends HEADERS frame",
      "RFC 9113 §6.9.1", min_body=1)
def _(cfg, conn):
    conn.settings((SETTINGS_INITIAL_WINDOW_SIZE, 1))
    expect_settings_ack(conn)
    send_get(cfg, conn)
    expect_data_length(conn, 1, 1)


@case("http2", "6.9.1",
      "Sends multiple WINDOW_UPDATE frames increasing the flow control window to above 2^31-1",
      "RFC 9113 §6.9.1")
def _(cfg, conn):
    # Connection window overflow: "terminate the connection" with a GOAWAY
    # of FLOW_CONTROL_ERROR.  Unlike the generic connection-error check, a
    # bare close does not pass: the GOAWAY itself is required.
    conn.window_update(0, MAX_WINDOW)
    conn.window_update(0, MAX_WINDOW)
    ev, ok = conn.wait_event_type(GOAWAY)
    if not (ok and ev.frame.error_code == FLOW_CONTROL_ERROR):
        raise CaseFailed(goaway_text([FLOW_CONTROL_ERROR]), str(ev))


@case("http2", "6.9.1",
      "Sends multiple WINDOW_UPDATE frames increasing the flow control window to above 2^31-1 "
      "on a stream", "RFC 9113 §6.9.1")
def _(cfg, conn):
    # Stream window overflow: RST_STREAM with FLOW_CONTROL_ERROR required.
    send_get(cfg, conn, end_stream=False)
    conn.window_update(1, MAX_WINDOW)
    conn.window_update(1, MAX_WINDOW)
    ev, ok = conn.wait_event_type(RST_STREAM)
    if not (ok and ev.frame.stream_id == 1 and ev.frame.error_code == FLOW_CONTROL_ERROR):
        raise CaseFailed([f"RST_STREAM Frame (error_code:{error_name(FLOW_CONTROL_ERROR)})"],
                         str(ev))


# ---- 6.9.2 Initial Flow-Control Window Size ------------------------------

@case("http2", "6.9.2", "Changes SETTINGS_INITIAL_WINDOW_SIZE after sending HEADERS frame",
      "RFC 9113 §6.9.2", min_body=1)
def _(cfg, conn):
    # A SETTINGS change adjusts the windows of streams already open.
    conn.settings((SETTINGS_INITIAL_WINDOW_SIZE, 0))
    expect_settings_ack(conn)
    send_get(cfg, conn)
    conn.settings((SETTINGS_INITIAL_WINDOW_SIZE, 1))
    expect_data_length(conn, 1, 1)


@case("http2", "6.9.2", "Sends a SETTINGS frame for window size to be negative",
      "RFC 9113 §6.9.2", min_body=5)
def _(cfg, conn):
    # Window 3, server sends 3 octets; new initial size 2 makes the stream
    # window -1; WINDOW_UPDATE 2 brings it to 1 -> exactly one octet next.
    conn.settings((SETTINGS_INITIAL_WINDOW_SIZE, 3))
    expect_settings_ack(conn)
    send_get(cfg, conn)
    expect_frame_type(conn, DATA)
    conn.settings((SETTINGS_INITIAL_WINDOW_SIZE, 2))
    expect_settings_ack(conn)
    conn.window_update(1, 2)
    expect_data_length(conn, 1, 1)


@case("http2", "6.9.2",
      "Sends a SETTINGS_INITIAL_WINDOW_SIZE settings with an exceeded maximum window size value",
      "RFC 9113 §6.9.2")
def _(cfg, conn):
    conn.write_frame(SETTINGS, 0, 0, b"\x00\x04\x80\x00\x00\x00")
    expect_connection_error(conn, FLOW_CONTROL_ERROR)


# ---- 6.10 CONTINUATION -----------------------------------------------------

@case("http2", "6.10", "Sends multiple CONTINUATION frames preceded by a HEADERS frame",
      "RFC 9113 §6.10")
def _(cfg, conn):
    conn.headers(1, conn.encode(request_headers(cfg)), end_headers=False)
    conn.continuation(1, conn.encode(dummy_headers(1)), end_headers=False)
    conn.continuation(1, conn.encode(dummy_headers(1)), end_headers=True)
    expect_headers(conn, 1)


@case("http2", "6.10", "Sends a CONTINUATION frame followed by any frame other than CONTINUATION",
      "RFC 9113 §6.10")
def _(cfg, conn):
    send_post_headers(cfg, conn, end_headers=False)
    conn.continuation(1, conn.encode(dummy_headers(1)), end_headers=False)
    conn.data(1, b"test", end_stream=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.10", "Sends a CONTINUATION frame with 0x0 stream identifier", "RFC 9113 §6.10")
def _(cfg, conn):
    conn.headers(1, conn.encode(request_headers(cfg)), end_headers=False)
    conn.continuation(0, conn.encode(dummy_headers(1)), end_headers=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.10", "Sends a CONTINUATION frame preceded by a HEADERS frame with END_HEADERS flag",
      "RFC 9113 §6.10")
def _(cfg, conn):
    send_get(cfg, conn)
    conn.continuation(1, conn.encode(dummy_headers(1)), end_headers=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.10",
      "Sends a CONTINUATION frame preceded by a CONTINUATION frame with END_HEADERS flag",
      "RFC 9113 §6.10")
def _(cfg, conn):
    conn.headers(1, conn.encode(request_headers(cfg)), end_headers=False)
    conn.continuation(1, conn.encode(dummy_headers(1)), end_headers=True)
    conn.continuation(1, conn.encode(dummy_headers(1)), end_headers=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2", "6.10", "Sends a CONTINUATION frame preceded by a DATA frame", "RFC 9113 §6.10")
def _(cfg, conn):
    # As in h2spec, the HEADERS lacks END_HEADERS, so the DATA frame itself
    # already interrupts the field block.
    send_post_headers(cfg, conn, end_headers=False)
    conn.data(1, b"test", end_stream=True)
    conn.continuation(1, conn.encode(dummy_headers(1)), end_headers=False)
    conn.continuation(0, conn.encode(dummy_headers(1)), end_headers=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


# ---- 7 Error Codes ---------------------------------------------------------

@case("http2", "7", "Sends a GOAWAY frame with unknown error code", "RFC 9113 §7")
def _(cfg, conn):
    # Unknown error codes MUST NOT trigger any special behaviour.
    conn.goaway(0, 0xFF)
    conn.ping(PING_H2SPEC)
    expect_ping_ack_or_close(conn, PING_H2SPEC)


@case("http2", "7", "Sends a RST_STREAM frame with unknown error code", "RFC 9113 §7")
def _(cfg, conn):
    send_post_headers(cfg, conn)
    conn.rst_stream(1, 0xFF)
    conn.ping(PING_ZERO)
    expect_ping_ack_or_close(conn, PING_ZERO)


# ---- 8.1 HTTP Request/Response Exchange (RFC 9113 §8.1) ------------------

@case("http2", "8.1", "Sends a second HEADERS frame without the END_STREAM flag", "RFC 9113 §8.1")
def _(cfg, conn):
    # A trailer section must carry END_STREAM; otherwise the request is
    # malformed (stream error PROTOCOL_ERROR, §8.1.1).
    send_post_headers(cfg, conn)
    conn.data(1, b"test", end_stream=False)
    conn.headers(1, conn.encode([["x-test", "ok"]]), end_stream=False)
    expect_stream_error(conn, PROTOCOL_ERROR)


# ---- 8.1.2 HTTP Header Fields (RFC 9113 §8.2) ----------------------------

@case("http2", "8.1.2", "Sends a HEADERS frame that contains the header field name in uppercase letters",
      "RFC 9113 §8.2.1")
def _(cfg, conn):
    conn.headers(1, conn.encode(request_headers(cfg) + [["X-TEST", "ok"]]))
    expect_stream_error(conn, PROTOCOL_ERROR)


# ---- 8.1.2.1 Pseudo-Header Fields (RFC 9113 §8.3) ------------------------

@case("http2", "8.1.2.1", "Sends a HEADERS frame that contains a unknown pseudo-header field",
      "RFC 9113 §8.3")
def _(cfg, conn):
    conn.headers(1, conn.encode(request_headers(cfg) + [[":test", "ok"]]))
    expect_stream_error(conn, PROTOCOL_ERROR)


@case("http2", "8.1.2.1",
      "Sends a HEADERS frame that contains the pseudo-header field defined for response",
      "RFC 9113 §8.3")
def _(cfg, conn):
    conn.headers(1, conn.encode(request_headers(cfg) + [[":status", "200"]]))
    expect_stream_error(conn, PROTOCOL_ERROR)


@case("http2", "8.1.2.1", "Sends a HEADERS frame that contains a pseudo-header field as trailers",
      "RFC 9113 §8.3")
def _(cfg, conn):
    send_post_headers(cfg, conn)
    conn.data(1, b"test", end_stream=False)
    # h2spec sends this trailer block without END_STREAM as well.
    conn.headers(1, conn.encode([[":method", "POST"]]), end_stream=False)
    expect_stream_error(conn, PROTOCOL_ERROR)


@case("http2", "8.1.2.1",
      "Sends a HEADERS frame that contains a pseudo-header field that appears in a header block "
      "after a regular header field", "RFC 9113 §8.3")
def _(cfg, conn):
    conn.headers(1, conn.encode([["x-test", "ok"]] + request_headers(cfg)))
    expect_stream_error(conn, PROTOCOL_ERROR)


# ---- 8.1.2.2 Connection-Specific Header Fields (RFC 9113 §8.2.2) ---------

@case("http2", "8.1.2.2", "Sends a HEADERS frame that contains the connection-specific header field",
      "RFC 9113 §8.2.2")
def _(cfg, conn):
    conn.headers(1, conn.encode(request_headers(cfg) + [["connection", "keep-alive"]]))
    expect_stream_error(conn, PROTOCOL_ERROR)


@case("http2", "8.1.2.2",
      'Sends a HEADERS frame that contains the TE header field with any value other than "trailers"',
      "RFC 9113 §8.2.2")
def _(cfg, conn):
    conn.headers(1, conn.encode(request_headers(cfg) +
                                [["trailers", "test"], ["te", "trailers, deflate"]]))
    expect_stream_error(conn, PROTOCOL_ERROR)


# ---- 8.1.2.3 Request Pseudo-Header Fields (RFC 9113 §8.3.1) --------------

@case("http2", "8.1.2.3", 'Sends a HEADERS frame with empty ":path" pseudo-header field',
      "RFC 9113 §8.3.1")
def _(cfg, conn):
    hdrs = request_headers(cfg)
    hdrs[2][1] = ""
    conn.headers(1, conn.encode(hdrs))
    expect_stream_error(conn, PROTOCOL_ERROR)


@case("http2", "8.1.2.3", 'Sends a HEADERS frame that omits ":method" pseudo-header field',
      "RFC 9113 §8.3.1")
def _(cfg, conn):
    # Same octets as h2spec: its list drops :method and then sends the
    # slice after the first element, so :scheme is missing as well.
    hdrs = request_headers(cfg)
    conn.headers(1, conn.encode([hdrs[2], hdrs[3]]))
    expect_stream_error(conn, PROTOCOL_ERROR)


def _omit_pseudo(index):
    def run(cfg, conn):
        hdrs = request_headers(cfg)
        del hdrs[index]
        conn.headers(1, conn.encode(hdrs))
        expect_stream_error(conn, PROTOCOL_ERROR)
    return run


case("http2", "8.1.2.3", 'Sends a HEADERS frame that omits ":scheme" pseudo-header field',
     "RFC 9113 §8.3.1")(_omit_pseudo(1))
case("http2", "8.1.2.3", 'Sends a HEADERS frame that omits ":path" pseudo-header field',
     "RFC 9113 §8.3.1")(_omit_pseudo(2))


def _duplicate_pseudo(index):
    def run(cfg, conn):
        hdrs = request_headers(cfg)
        conn.headers(1, conn.encode(hdrs + [list(hdrs[index])]))
        expect_stream_error(conn, PROTOCOL_ERROR)
    return run


case("http2", "8.1.2.3", 'Sends a HEADERS frame with duplicated ":method" pseudo-header field',
     "RFC 9113 §8.3.1")(_duplicate_pseudo(0))
case("http2", "8.1.2.3", 'Sends a HEADERS frame with duplicated ":scheme" pseudo-header field',
     "RFC 9113 §8.3.1")(_duplicate_pseudo(1))
case("http2", "8.1.2.3", 'Sends a HEADERS frame with duplicated ":path" pseudo-header field',
     "RFC 9113 §8.3.1")(_duplicate_pseudo(2))


# ---- 8.1.2.6 Malformed Requests and Responses (RFC 9113 §8.1.1) ----------

@case("http2", "8.1.2.6",
      'Sends a HEADERS frame with the "content-length" header field which does not equal the '
      "DATA frame payload length", "RFC 9113 §8.1.1")
def _(cfg, conn):
    send_post_headers(cfg, conn, extra=[["content-length", "1"]])
    conn.data(1, b"test", end_stream=True)
    expect_stream_error(conn, PROTOCOL_ERROR)


@case("http2", "8.1.2.6",
      'Sends a HEADERS frame with the "content-length" header field which does not equal the '
      "sum of the multiple DATA frames payload length", "RFC 9113 §8.1.1")
def _(cfg, conn):
    send_post_headers(cfg, conn, extra=[["content-length", "1"]])
    conn.data(1, b"test", end_stream=False)
    conn.data(1, b"test", end_stream=True)
    expect_stream_error(conn, PROTOCOL_ERROR)


# ---- 8.2 Server Push (RFC 9113 §8.4) ---------------------------------------

@case("http2", "8.2", "Sends a PUSH_PROMISE frame", "RFC 9113 §8.4")
def _(cfg, conn):
    # "A client cannot push": a server receiving PUSH_PROMISE MUST treat it
    # as a connection error of type PROTOCOL_ERROR.
    conn.push_promise(1, 3, conn.encode(request_headers(cfg)))
    expect_connection_error(conn, PROTOCOL_ERROR)


# ==========================================================================
# hpack: decoder error handling (RFC 7541); decoding errors are connection
# errors of type COMPRESSION_ERROR (RFC 9113 §4.3)
# ==========================================================================

def _get_with_bad_block(prefix=b"", suffix=b""):
    def run(cfg, conn):
        conn.headers(1, prefix + conn.encode(request_headers(cfg)) + suffix)
        expect_connection_error(conn, COMPRESSION_ERROR)
    return run


# Index 70 is beyond 61 static entries + the single dynamic entry our
# encoder created (:authority) -> "MUST be treated as a decoding error".
case("hpack", "2.3.3", "Sends a indexed header field representation with invalid index",
     "RFC 7541 §2.3.3")(_get_with_bad_block(suffix=b"\xc6"))
# Literal with incremental indexing whose name index is 70 (0x7f 0x07).
case("hpack", "2.3.3", "Sends a literal header field representation with invalid index",
     "RFC 7541 §2.3.3")(_get_with_bad_block(suffix=b"\x7f\x07\x00"))
# A size update (to 1) after a field representation: it MUST occur at the
# beginning of a header block.
case("hpack", "4.2", "Sends a dynamic table size update at the end of header block",
     "RFC 7541 §4.2")(_get_with_bad_block(suffix=b"\x21"))
# RFC 7541 §5.2: padding > 7 bits, padding not matching EOS's MSBs, or an
# encoded EOS symbol are decoding errors.
case("hpack", "5.2",
     "Sends a Huffman-encoded string literal representation with padding longer than 7 bits",
     "RFC 7541 §5.2")(_get_with_bad_block(suffix=b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x49\x50\x9f\xff"))
case("hpack", "5.2", "Sends a Huffman-encoded string literal representation padded by zero",
     "RFC 7541 §5.2")(_get_with_bad_block(suffix=b"\x00\x85\xf2\xb2\x4a\x84\xff\x83\x49\x50\x90"))
case("hpack", "5.2", "Sends a Huffman-encoded string literal representation containing the EOS symbol",
     "RFC 7541 §5.2")(_get_with_bad_block(
         suffix=b"\x00\x85\xf2\xb2\x4a\x84\xff\x87\x49\x51\xff\xff\xff\xfa\x7f"))
# RFC 7541 §6.1: "The index value of 0 is not used."
case("hpack", "6.1", "Sends a indexed header field representation with index 0",
     "RFC 7541 §6.1")(_get_with_bad_block(suffix=b"\x80"))


def hpack_integer(value, prefix_bits, first_byte_flags):
    """RFC 7541 §5.1 integer representation."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = [first_byte_flags | limit]
    value -= limit
    while value >= 128:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


@case("hpack", "6.3",
      "Sends a dynamic table size update larger than the value of SETTINGS_HEADER_TABLE_SIZE",
      "RFC 7541 §6.3")
def _(cfg, conn):
    # "The new maximum size MUST be lower than or equal to the limit
    # [SETTINGS_HEADER_TABLE_SIZE]".  Like h2spec this uses the value the
    # server advertised (default 4096) plus one.
    limit = conn.server_settings.get(SETTINGS_HEADER_TABLE_SIZE, 4096)
    _get_with_bad_block(prefix=hpack_integer(limit + 1, 5, 0x20))(cfg, conn)


# --------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------

class Config:
    def __init__(self, args):
        self.host = args.host
        self.port = args.port
        self.tls = args.tls
        self.insecure = args.insecure
        self.path = args.path
        self.timeout = args.timeout
        self.scheme = "https" if args.tls else "http"
        default_port = 443 if args.tls else 80
        if args.authority:
            self.authority = args.authority
        elif self.port == default_port:
            self.authority = self.host
        else:
            self.authority = f"{self.host}:{self.port}"
        # SNI: the authority's host part (Python omits SNI for IP literals).
        host = self.authority
        if host.startswith("["):
            host = host[1:host.index("]")]
        elif host.count(":") == 1:
            host = host.rsplit(":", 1)[0]
        self.sni = host


def selected(c, sections):
    """h2spec's --spec selection: "http2" selects a spec, "http2/6.5" a
    section and its subsections, "http2/6.5/2" one case."""
    if not sections:
        return True
    for sel in sections:
        parts = sel.strip("/").split("/")
        if parts[0] != c.key:
            continue
        if len(parts) == 1:
            return True
        want = parts[1].split(".")
        if c.section.split(".")[:len(want)] != want:
            continue
        if len(parts) == 2:
            return True
        if len(parts) == 3 and want == c.section.split(".") and parts[2] == str(c.seq):
            return True
    return False


def run_case(c, cfg, log):
    """Run one case on a fresh connection; return (status, message)."""
    try:
        if c.min_body:
            length = server_data_length(cfg)
            if length < c.min_body:
                raise CaseSkipped(f"response body of {cfg.path} is {length} octets, "
                                  f"need >= {c.min_body}")
        conn = Conn(cfg, log)
        try:
            if c.handshake:
                conn.handshake()
            c.fn(cfg, conn)
        finally:
            conn.close()
    except CaseFailed as exc:
        return "FAIL", str(exc)
    except CaseSkipped as exc:
        return "SKIP", str(exc)
    except SetupError as exc:
        return "FAIL", f"error: {exc}"
    return "PASS", ""


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="HTTP/2 server conformance suite (the 146 h2spec cases).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls", action="store_true", help="TLS with ALPN h2 (else h2c prior knowledge)")
    ap.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    ap.add_argument("--path", default="/", help="request path (default /)")
    ap.add_argument("--authority", help="value of :authority (default host[:port])")
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds per read (default 2)")
    ap.add_argument("--section", action="append", default=[],
                    help="run only this spec/section[/case], e.g. http2/6.5 (repeatable)")
    ap.add_argument("--json", metavar="FILE", help="write results as JSON")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every frame")
    args = ap.parse_args(argv)

    cases = [c for c in CASES if selected(c, args.section)]
    if args.list:
        for c in cases:
            print(f"{c.id:16} {c.ref:22} {c.desc}")
        print(f"{len(cases)} cases")
        return 0
    if not cases:
        print("no case matches --section", file=sys.stderr)
        return 2

    cfg = Config(args)
    log = (lambda line: print(line, flush=True)) if args.verbose else None
    results = []
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    started = time.monotonic()
    for c in cases:
        t0 = time.monotonic()
        if log:
            log(f"  {c.id} {c.desc}")
        status, message = run_case(c, cfg, log)
        elapsed = time.monotonic() - t0
        counts[status] += 1
        line = f"{status} {c.id} {c.desc}"
        if message:
            line += f": {message}"
        print(line, flush=True)
        results.append({"id": c.id, "spec": c.key, "section": c.section, "seq": c.seq,
                         "description": c.desc, "reference": c.ref, "result": status,
                         "message": message, "seconds": round(elapsed, 3)})

    summary = f"{len(cases)} cases: {counts['PASS']} passed, {counts['FAIL']} failed"
    if counts["SKIP"]:
        summary += f", {counts['SKIP']} skipped"
    print(f"{summary} ({time.monotonic() - started:.1f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"target": {"host": cfg.host, "port": cfg.port, "tls": cfg.tls,
                                  "path": cfg.path, "authority": cfg.authority},
                       "total": len(cases), "passed": counts["PASS"],
                       "failed": counts["FAIL"], "skipped": counts["SKIP"],
                       "cases": results}, fh, indent=2)
    # A skipped case is not a pass: exit 0 only if every selected case passed.
    return 0 if counts["PASS"] == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
