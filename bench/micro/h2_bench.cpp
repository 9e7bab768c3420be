// The per-request CPU cost of HTTP/2 without sockets: h1 -> h2 field lists, HPACK, framing and
// events for one request and its response over warm client and server sessions.
#include <benchmark/benchmark.h>

#include <portico/http/message.hpp>

#include "http2/session.hpp"
#include "http2/translate.hpp"

using namespace portico;

namespace {

RequestHeader browser_request() {
  auto r = RequestHeader::build("GET", "/api/v1/items?id=42&sort=asc");
  r.append_header("Host", "example.com");
  r.append_header("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36");
  r.append_header("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8");
  r.append_header("Accept-Language", "en-US,en;q=0.5");
  r.append_header("Accept-Encoding", "gzip, deflate, br");
  r.append_header("Cookie", "session=0123456789abcdef; theme=dark");
  r.append_header("Connection", "keep-alive");
  return r;
}

ResponseHeader json_response() {
  auto r = ResponseHeader::build(200);
  r.append_header("Server", "nginx");
  r.append_header("Date", "Wed, 25 Nov 2026 18:00:00 GMT");
  r.append_header("Content-Type", "application/json");
  r.append_header("Content-Length", "5");
  return r;
}

void move_bytes(h2::Session& from, h2::Session& to) {
  for (int i = 0; i < 16; ++i) {
    auto out = from.pending_output();
    if (out.empty()) return;
    (void)to.feed(out);
    from.consume_output(out.size());
  }
}

}  // namespace

static void BM_H2TranslateRequest(benchmark::State& st) {
  auto req = browser_request();
  HeaderMap fields;
  RequestHeader back;
  for (auto _ : st) {
    fields.clear();
    h2::from_request(req, fields, "https");
    auto r = h2::to_request(fields, back);
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_H2TranslateRequest);

// One request and one response with a 5-byte body through both sessions, translation included.
static void BM_H2RoundTrip(benchmark::State& st) {
  h2::Session client(h2::Mode::Client);
  h2::Session server(h2::Mode::Server);
  move_bytes(client, server);
  move_bytes(server, client);
  move_bytes(client, server);
  auto req = browser_request();
  auto resp = json_response();
  HeaderMap fields;
  RequestHeader sreq;
  ResponseHeader cresp;
  for (auto _ : st) {
    fields.clear();
    h2::from_request(req, fields, "https");
    auto id = client.submit_request(fields, true);
    if (!id) {
      st.SkipWithError("no stream");
      break;
    }
    move_bytes(client, server);
    while (auto e = server.poll_event()) {
      if (e->kind != h2::EventKind::Head) continue;
      (void)h2::to_request(e->fields, sreq);
      fields.clear();
      (void)h2::from_response(resp, fields);
      (void)server.submit_response(e->stream_id, fields, false);
      (void)server.send_data(e->stream_id, "hello", true);
    }
    move_bytes(server, client);
    while (auto e = client.poll_event()) {
      if (e->kind == h2::EventKind::Head) (void)h2::take_response(e->fields, cresp);
      if (e->kind == h2::EventKind::Data) client.consume(e->stream_id, e->bytes);
    }
    move_bytes(client, server);  // WINDOW_UPDATEs
    while (server.poll_event()) {
    }
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_H2RoundTrip);
