#!/usr/bin/python3
"""The static HTTP/1.1 origin run_h2spec.sh puts behind the proxy under test.

python's http.server serving DIR on 127.0.0.1, on a port the kernel picks (printed as
"listening on 127.0.0.1:PORT"), with one change that matters: a request's body is read in full
(Content-Length or chunked, with its trailer section) before the request is answered, as
application servers do; a POST is answered like a GET of the same path.

Stock http.server answers a POST (501) without reading its body. Behind a proxy, a response could
then be complete, and the stream reset with NO_ERROR (RFC 9113 §8.1), before the malformed frame
an h2spec case sends next reached the proxy: the outcome of cases such as http2/8.1/1, 5.1/8 and
8.1.2.6/2 depended on scheduling.

Usage: h2spec_origin.py DIR
"""

import functools
import http.server
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and the body go out in two writes; with Nagle the second waits for the delayed
    # ACK of the first (40 ms) on every kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def read_body(self):
        """Reads the request body; False when the connection ended or the framing is bad."""
        try:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                while True:
                    line = self.rfile.readline(65537)
                    if not line:
                        return False
                    size = int(line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while True:  # the trailer section, up to the empty line
                            line = self.rfile.readline(65537)
                            if not line:
                                return False
                            if line in (b"\r\n", b"\n"):
                                return True
                    chunk = self.rfile.read(size + 2)
                    if len(chunk) < size + 2:
                        return False
            n = int(self.headers.get("Content-Length") or 0)
            return len(self.rfile.read(n)) == n if n else True
        except (ValueError, OSError):
            return False

    def _after_body(self, answer):
        if not self.read_body():
            self.close_connection = True
            return
        answer()

    def do_GET(self):
        self._after_body(super().do_GET)

    def do_HEAD(self):
        self._after_body(super().do_HEAD)

    def do_POST(self):
        self._after_body(super().do_GET)


def main():
    handler = functools.partial(Handler, directory=sys.argv[1])
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    print("listening on 127.0.0.1:%d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
