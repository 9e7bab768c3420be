// The per-request CPU work that does not touch a socket: parse, header edits, serialise.
#include <benchmark/benchmark.h>

#include <portico/core/error.hpp>
#include <portico/http/header_map.hpp>

#include "http1/codec.hpp"

using namespace portico;

namespace {
const std::string kRequest =
    "GET /api/v1/items?id=42&sort=asc HTTP/1.1\r\n"
    "Host: example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Cookie: session=0123456789abcdef; theme=dark\r\n"
    "Connection: keep-alive\r\n\r\n";
const std::string kResponse =
    "HTTP/1.1 200 OK\r\n"
    "Server: nginx\r\n"
    "Date: Wed, 25 Nov 2026 18:00:00 GMT\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 5\r\n"
    "Connection: keep-alive\r\n\r\nhello";
}  // namespace

static void BM_ParseRequest(benchmark::State& st) {
  http1::Parser p(http1::Kind::Request, {});
  RequestHeader req;
  for (auto _ : st) {
    auto s = p.feed(kRequest.data(), kRequest.size());
    p.take_request(req);
    p.feed(kRequest.data() + s.consumed, 0);
    benchmark::DoNotOptimize(req);
  }
}
BENCHMARK(BM_ParseRequest);

static void BM_ParseResponse(benchmark::State& st) {
  http1::Parser p(http1::Kind::Response, {});
  ResponseHeader resp;
  for (auto _ : st) {
    auto s = p.feed(kResponse.data(), kResponse.size());
    p.take_response(resp);
    p.feed(kResponse.data() + s.consumed, kResponse.size() - s.consumed);
    benchmark::DoNotOptimize(resp);
  }
}
BENCHMARK(BM_ParseResponse);

static void BM_ForwardRequestHead(benchmark::State& st) {
  // What the engine does to a parsed request before it goes upstream.
  http1::Parser p(http1::Kind::Request, {});
  RequestHeader req, up;
  auto s = p.feed(kRequest.data(), kRequest.size());
  p.take_request(req);
  (void)s;
  std::string out;
  for (auto _ : st) {
    up = req;
    http1::strip_hop_by_hop(up.headers());
    out.clear();
    http1::serialize_request_head(up, out);
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_ForwardRequestHead);

static void BM_HeaderMapLookup(benchmark::State& st) {
  HeaderMap h;
  for (int i = 0; i < 12; ++i) h.append("X-Field-" + std::to_string(i), "value");
  h.append("Content-Length", "5");
  for (auto _ : st) benchmark::DoNotOptimize(h.get("content-length"));
}
BENCHMARK(BM_HeaderMapLookup);

static void BM_ErrorWithContext(benchmark::State& st) {
  for (auto _ : st) {
    Error e = Error::upstream(ErrorType::ConnectRefused, "connecting to 10.0.0.1:80");
    benchmark::DoNotOptimize(e);
  }
}
BENCHMARK(BM_ErrorWithContext);
