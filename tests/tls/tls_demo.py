#!/usr/bin/env python3
"""What docs/tls.md promises, shown with the openssl command line against examples/reverse_proxy.

  python3 tests/tls/tls_demo.py --proxy-bin build/examples/reverse_proxy

1. Two certificates on one listener: `openssl s_client -servername` a.test and b.test get two
   different certificates.
2. A saved session (-sess_out) is resumed on the next connection (-sess_in): "Reused".
3. Certificate files replaced + SIGHUP: a new handshake sees the new certificate, while a
   keep-alive connection opened before still gets answers.
4. A second proxy in front with --upstream-tls: without --ca the untrusted upstream gives 502,
   with --ca it gives 200.
Everything runs on 127.0.0.1 with keys made now in a temporary directory. Exit status 0 when
every check passes.
"""
import argparse
import http.server
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading

TIMEOUT = 10
failures = []


def check(ok, what):
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, **kw)


def make_pki(d):
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-days", "2", "-subj", "/CN=demo CA"], check=True)

    def leaf(name, cn=None):
        cn = cn or name
        run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{d}/{cn}.key", "-out", f"{d}/{cn}.csr", "-subj", f"/CN={cn}"], check=True)
        with open(f"{d}/{cn}.ext", "w") as f:
            f.write(f"subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth\n")
        run(["openssl", "x509", "-req", "-in", f"{d}/{cn}.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", f"{d}/{cn}.ext", "-out", f"{d}/{cn}.crt"], check=True)
        return f"{d}/{cn}.crt", f"{d}/{cn}.key"

    return leaf


class Origin(http.server.ThreadingHTTPServer):
    daemon_threads = True


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"origin says hi"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def start_proxy(binary, args):
    p = subprocess.Popen([binary, "--listen", "127.0.0.1:0"] + args, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not m:
        p.kill()
        raise RuntimeError(f"proxy did not start: {line!r}")
    return p, int(m.group(1))


def s_client(port, name, extra=(), brief=True):
    # -ign_eof: read until the proxy closes (the request asks it to), so the response and the
    # TLS 1.3 session tickets that come before it are seen.
    r = run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name, "-ign_eof"]
            + (["-brief"] if brief else []) + list(extra),
            input="GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return r.stdout + r.stderr


def subject_cn(out):
    m = re.search(r"Peer certificate: .*CN ?= ?([\w.\-]+)", out)
    return m.group(1) if m else None


def http_get(port):
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    return data.decode("latin-1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy-bin", required=True)
    a = ap.parse_args()
    if not shutil.which("openssl"):
        print("openssl command line tool not found", file=sys.stderr)
        return 2
    d = tempfile.mkdtemp(prefix="portico-tls-demo-")
    procs = []
    origin = Origin(("127.0.0.1", 0), Handler)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    try:
        leaf = make_pki(d)
        a_crt, a_key = leaf("a.test")
        b_crt, b_key = leaf("b.test")
        tls_proxy, port = start_proxy(a.proxy_bin, ["--upstream", f"127.0.0.1:{origin.server_address[1]}",
                                                    "--tls-cert", a_crt, "--tls-key", a_key,
                                                    "--tls-cert", b_crt, "--tls-key", b_key])
        procs.append(tls_proxy)

        # 1. two names, two certificates
        out_a = s_client(port, "a.test", ["-CAfile", f"{d}/ca.pem"])
        out_b = s_client(port, "b.test", ["-CAfile", f"{d}/ca.pem"])
        check(subject_cn(out_a) == "a.test", f"SNI a.test gets CN a.test (got {subject_cn(out_a)})")
        check(subject_cn(out_b) == "b.test", f"SNI b.test gets CN b.test (got {subject_cn(out_b)})")
        check("origin says hi" in out_a, "the request through TLS is answered by the origin")

        # 2. resumption
        sess = f"{d}/session.pem"
        first = s_client(port, "a.test", ["-CAfile", f"{d}/ca.pem", "-sess_out", sess], brief=False)
        second = s_client(port, "a.test", ["-CAfile", f"{d}/ca.pem", "-sess_in", sess], brief=False)
        check("New, TLS" in first and "Reused, TLS" in second, "a saved session is resumed (s_client says Reused)")
        check("unexpected eof" not in first, "the proxy ends the TLS connection with close_notify")

        # 3. reload with SIGHUP, a keep-alive connection stays up
        ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")
        keep = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT),
                               server_hostname="a.test")
        keep.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        before = keep.recv(65536).decode("latin-1")
        check(before.startswith("HTTP/1.1 200"), "keep-alive connection answered before the reload")
        new_crt, new_key = leaf("a.test", cn="a-v2.test")
        shutil.copy(new_crt, a_crt)
        shutil.copy(new_key, a_key)
        tls_proxy.send_signal(signal.SIGHUP)
        seen = None
        for _ in range(100):  # bounded: the reload is asynchronous to this script
            seen = subject_cn(s_client(port, "a.test", ["-CAfile", f"{d}/ca.pem"]))
            if seen == "a-v2.test":
                break
        check(seen == "a-v2.test", f"after SIGHUP a new handshake sees the new certificate (got {seen})")
        keep.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        after = keep.recv(65536).decode("latin-1")
        check(after.startswith("HTTP/1.1 200"), "the keep-alive connection opened before the reload still gets answers")
        keep.close()

        # 4. upstream verification
        upstream = ["--upstream", f"127.0.0.1:{port}", "--upstream-tls", "--upstream-sni", "b.test"]
        untrusting, p1 = start_proxy(a.proxy_bin, upstream)
        procs.append(untrusting)
        got = http_get(p1)
        check(got.startswith("HTTP/1.1 502"), f"an untrusted upstream gives 502 (got {got[:12]!r})")
        trusting, p2 = start_proxy(a.proxy_bin, upstream + ["--ca", f"{d}/ca.pem"])
        procs.append(trusting)
        got = http_get(p2)
        check(got.startswith("HTTP/1.1 200") and "origin says hi" in got, f"with --ca it gives 200 (got {got[:12]!r})")
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
        origin.shutdown()
        shutil.rmtree(d, ignore_errors=True)
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
