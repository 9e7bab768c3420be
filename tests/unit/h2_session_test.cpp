// h2::Session without sockets: a client and a server session wired back to back in memory, and a
// server fed hand-built frames for the protections and the RFC 9113 conformance cases. Every
// check on an error reads the frames the peer would see (GOAWAY / RST_STREAM codes).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "http2/session.hpp"
#include "http2/translate.hpp"

// portico::Session (the proxy's) is visible through the precompiled header: name the h2 one.
using portico::ErrorSource;
using portico::HeaderMap;
using portico::RequestHeader;
using portico::h2::ErrorCode;
using portico::h2::Event;
using portico::h2::EventKind;
using portico::h2::from_request;
using portico::h2::match_client_preface;
using portico::h2::Mode;
using portico::h2::PrefaceMatch;
using portico::h2::Settings;
using Session = portico::h2::Session;

namespace {

// ---------------------------------------------------------------------------------------------
// frames by hand

enum : std::uint8_t {
  kData = 0,
  kHeaders = 1,
  kPriority = 2,
  kRst = 3,
  kSettings = 4,
  kPing = 6,
  kGoaway = 7,
  kWindowUpdate = 8,
  kContinuation = 9,
};
enum : std::uint8_t { kEndStream = 1, kAck = 1, kEndHeaders = 4 };

std::string u32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::string frame(std::uint8_t type, std::uint8_t flags, std::uint32_t stream,
                  std::string_view payload) {
  std::string f;
  auto n = static_cast<std::uint32_t>(payload.size());
  f.push_back(static_cast<char>(n >> 16));
  f.push_back(static_cast<char>(n >> 8));
  f.push_back(static_cast<char>(n));
  f.push_back(static_cast<char>(type));
  f.push_back(static_cast<char>(flags));
  f += u32(stream & 0x7fffffff);
  f.append(payload);
  return f;
}

std::string setting(std::uint16_t id, std::uint32_t v) {
  return std::string{static_cast<char>(id >> 8), static_cast<char>(id)} + u32(v);
}

// HPACK integer with a 7-bit prefix (RFC 7541 §5.1), H bit clear.
void hpack_len(std::string& out, std::size_t n) {
  if (n < 127) {
    out.push_back(static_cast<char>(n));
    return;
  }
  out.push_back(127);
  n -= 127;
  while (n >= 128) {
    out.push_back(static_cast<char>((n & 0x7f) | 0x80));
    n >>= 7;
  }
  out.push_back(static_cast<char>(n));
}

// Literal header fields without indexing, new names (RFC 7541 §6.2.2): no HPACK state involved.
std::string block(std::initializer_list<std::pair<std::string_view, std::string_view>> l) {
  std::string b;
  for (auto& [n, v] : l) {
    b.push_back(0);
    hpack_len(b, n.size());
    b.append(n);
    hpack_len(b, v.size());
    b.append(v);
  }
  return b;
}

std::string get_block(
    std::initializer_list<std::pair<std::string_view, std::string_view>> extra = {}) {
  std::string b = block(
      {{":method", "GET"}, {":scheme", "https"}, {":authority", "example.com"}, {":path", "/"}});
  for (auto& [n, v] : extra) b += block({{n, v}});
  return b;
}

const std::string kMagic = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
std::string preface() { return kMagic + frame(kSettings, 0, 0, ""); }

struct Frame {
  std::uint8_t type;
  std::uint8_t flags;
  std::uint32_t stream;
  std::string payload;
};

std::vector<Frame> parse(std::string_view b) {
  std::vector<Frame> out;
  while (b.size() >= 9) {
    auto byte = [&](std::size_t i) {
      return static_cast<std::uint32_t>(static_cast<unsigned char>(b[i]));
    };
    std::uint32_t len = byte(0) << 16 | byte(1) << 8 | byte(2);
    if (b.size() < 9 + len) break;
    Frame f{static_cast<std::uint8_t>(byte(3)), static_cast<std::uint8_t>(byte(4)),
            (byte(5) << 24 | byte(6) << 16 | byte(7) << 8 | byte(8)) & 0x7fffffff,
            std::string(b.substr(9, len))};
    out.push_back(std::move(f));
    b.remove_prefix(9 + len);
  }
  return out;
}

std::uint32_t be32(std::string_view p, std::size_t at) {
  auto c = [&](std::size_t i) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(p[at + i]));
  };
  return c(0) << 24 | c(1) << 16 | c(2) << 8 | c(3);
}

struct Goaway {
  std::uint32_t last;
  std::uint32_t code;
};

// ---------------------------------------------------------------------------------------------
// a server fed raw bytes

struct FakeClock {
  std::chrono::steady_clock::time_point now{std::chrono::seconds(1000)};
  Session::Clock fn() {
    return [this] { return now; };
  }
};

struct RawServer {
  explicit RawServer(Settings s = {})
      : clock(std::make_unique<FakeClock>()), server(Mode::Server, s, clock->fn()) {}
  std::unique_ptr<FakeClock> clock;
  Session server;
  std::string out;
  std::vector<Event> events;
  bool failed = false;

  /// Feeds `bytes`, then collects the output (unless `flush` is false) and the events.
  void send(std::string_view bytes, bool flush = true) {
    auto r = server.feed(bytes);
    if (!r) failed = true;
    if (flush) this->flush();
    while (auto e = server.poll_event()) events.push_back(std::move(*e));
  }
  void flush() {
    for (int i = 0; i < 10000; ++i) {
      auto o = server.pending_output();
      if (o.empty()) break;
      out.append(o);
      server.consume_output(o.size());
    }
    while (auto e = server.poll_event()) events.push_back(std::move(*e));
  }
  std::vector<Frame> frames() const { return parse(out); }
  std::optional<Goaway> goaway() const {
    for (auto& f : frames())
      if (f.type == kGoaway && f.payload.size() >= 8)
        return Goaway{be32(f.payload, 0) & 0x7fffffff, be32(f.payload, 4)};
    return std::nullopt;
  }
  std::optional<std::uint32_t> rst(std::uint32_t stream) const {
    for (auto& f : frames())
      if (f.type == kRst && f.stream == stream) return be32(f.payload, 0);
    return std::nullopt;
  }
  std::size_t count(EventKind k) const {
    std::size_t n = 0;
    for (auto& e : events) n += e.kind == k;
    return n;
  }
};

constexpr std::uint32_t code(ErrorCode c) { return static_cast<std::uint32_t>(c); }

// ---------------------------------------------------------------------------------------------
// two sessions back to back

struct Pair {
  explicit Pair(Settings cs = {}, Settings ss = {})
      : client(Mode::Client, cs), server(Mode::Server, ss) {}
  Session client;
  Session server;
  std::vector<Event> cev, sev;

  void drain() {
    while (auto e = client.poll_event()) cev.push_back(std::move(*e));
    while (auto e = server.poll_event()) sev.push_back(std::move(*e));
  }
  /// Moves bytes both ways until neither side has any; bounded.
  void pump() {
    for (int i = 0; i < 10000; ++i) {
      bool moved = false;
      for (auto [from, to] : {std::pair{&client, &server}, std::pair{&server, &client}}) {
        auto o = from->pending_output();
        if (o.empty()) continue;
        auto r = to->feed(o);
        EXPECT_TRUE(r) << (r ? "" : r.error().to_string());
        from->consume_output(o.size());
        moved = true;
      }
      drain();
      if (!moved) return;
    }
    ADD_FAILURE() << "pump did not settle";
  }
  static std::vector<Event> take(std::vector<Event>& v, EventKind k, std::int32_t stream = -1) {
    std::vector<Event> out;
    for (auto& e : v)
      if (e.kind == k && (stream < 0 || e.stream_id == stream)) out.push_back(e);
    return out;
  }
  /// Reads and consumes everything buffered for `stream` on `s`.
  static std::string read_all(Session& s, std::int32_t stream) {
    std::string body;
    for (int i = 0; i < 100000; ++i) {
      auto v = s.received(stream);
      if (v.empty()) break;
      body.append(v);
      s.consume(stream, v.size());
    }
    return body;
  }
};

HeaderMap req_fields(std::string_view method = "GET", std::string_view path = "/") {
  HeaderMap h;
  h.append(":method", method);
  h.append(":scheme", "https");
  h.append(":authority", "example.com");
  h.append(":path", path);
  return h;
}

HeaderMap resp_fields(std::string_view status = "200") {
  HeaderMap h;
  h.append(":status", status);
  return h;
}

}  // namespace

// =============================================================================================
// back to back

TEST(H2Session, RequestAndResponseWithBodiesAndTrailers) {
  Pair p;
  auto id = p.client.submit_request(req_fields("POST", "/rpc"), false);
  ASSERT_TRUE(id);
  ASSERT_TRUE(p.client.send_data(*id, "hello ", false));
  ASSERT_TRUE(p.client.send_data(*id, "world", false));
  HeaderMap rt;
  rt.append("x-checksum", "abc");
  ASSERT_TRUE(p.client.send_trailers(*id, rt));
  p.pump();

  auto heads = Pair::take(p.sev, EventKind::Head);
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_EQ(heads[0].stream_id, *id);
  EXPECT_FALSE(heads[0].end_stream);
  EXPECT_EQ(heads[0].fields.get(":method").value(), "POST");
  EXPECT_EQ(heads[0].fields.get(":path").value(), "/rpc");
  EXPECT_EQ(Pair::read_all(p.server, *id), "hello world");
  auto trailers = Pair::take(p.sev, EventKind::Trailers);
  ASSERT_EQ(trailers.size(), 1u);
  EXPECT_EQ(trailers[0].fields.get("x-checksum").value(), "abc");
  EXPECT_EQ(Pair::take(p.sev, EventKind::EndStream).size(), 1u);

  auto resp = resp_fields();
  resp.append("content-type", "application/grpc");
  ASSERT_TRUE(p.server.submit_response(*id, resp, false));
  ASSERT_TRUE(p.server.send_data(*id, "response body", false));
  HeaderMap t;
  t.append("grpc-status", "0");
  ASSERT_TRUE(p.server.send_trailers(*id, t));
  p.pump();

  auto ch = Pair::take(p.cev, EventKind::Head);
  ASSERT_EQ(ch.size(), 1u);
  EXPECT_EQ(ch[0].fields.get(":status").value(), "200");
  EXPECT_EQ(Pair::read_all(p.client, *id), "response body");
  auto ct = Pair::take(p.cev, EventKind::Trailers);
  ASSERT_EQ(ct.size(), 1u);
  EXPECT_EQ(ct[0].fields.get("grpc-status").value(), "0");
  auto closed = Pair::take(p.cev, EventKind::Closed);
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].code, code(ErrorCode::NoError));
  EXPECT_EQ(p.client.open_streams(), 0u);
  EXPECT_EQ(p.server.open_streams(), 0u);
  EXPECT_EQ(p.client.buffered(), 0u);
}

// trim() between exchanges (an idle connection): both sessions go on as before. The heads
// that follow are compressed against the dynamic tables built before the trim, and frames of
// the largest size are serialized in the frame buffer whose pages were given back.
TEST(H2Session, TrimmedSessionsGoOnWithTheirHpackStateAndFullFrames) {
  Pair p;
  p.pump();
  const std::string big(100 * 1024, 'z');
  // Sends `body` on `id` from `from` as its send buffer takes it; what `to` receives.
  auto transfer = [&](Session& from, Session& to, std::int32_t id) {
    std::string got;
    std::size_t off = 0;
    for (int i = 0; i < 1000 && got.size() < big.size(); ++i) {
      if (off < big.size()) {
        auto n = from.send_data(id, std::string_view(big).substr(off), true);
        EXPECT_TRUE(n);
        if (n) off += *n;
      }
      p.pump();
      got += Pair::read_all(to, id);
    }
    return got;
  };
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    auto req = req_fields("POST", "/upload");
    req.append("x-trace", "abc123");  // indexed after the first round
    auto id = p.client.submit_request(req, false);
    ASSERT_TRUE(id);
    p.pump();
    auto heads = Pair::take(p.sev, EventKind::Head, *id);
    ASSERT_EQ(heads.size(), 1u);
    EXPECT_EQ(heads[0].fields.get(":path").value(), "/upload");
    EXPECT_EQ(heads[0].fields.get("x-trace").value(), "abc123");
    const std::string got = transfer(p.client, p.server, *id);
    EXPECT_TRUE(got == big) << got.size() << " bytes";
    auto resp = resp_fields();
    resp.append("server", "portico-test");
    ASSERT_TRUE(p.server.submit_response(*id, resp, false));
    const std::string back = transfer(p.server, p.client, *id);
    EXPECT_TRUE(back == big) << back.size() << " bytes";
    auto ch = Pair::take(p.cev, EventKind::Head, *id);
    ASSERT_EQ(ch.size(), 1u);
    EXPECT_EQ(ch[0].fields.get("server").value(), "portico-test");
    EXPECT_EQ(p.server.open_streams(), 0u);
    EXPECT_EQ(p.client.open_streams(), 0u);
    // Idle: both sides give back what they can.
    p.server.trim();
    p.client.trim();
  }
}

TEST(H2Session, HeadOnlyRequestEndsTheStreamAtOnce) {
  Pair p;
  auto id = p.client.submit_request(req_fields(), true);
  ASSERT_TRUE(id);
  p.pump();
  auto heads = Pair::take(p.sev, EventKind::Head);
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_TRUE(heads[0].end_stream);
  EXPECT_EQ(Pair::take(p.sev, EventKind::EndStream).size(), 1u);
  ASSERT_TRUE(p.server.submit_response(*id, resp_fields("204"), true));
  p.pump();
  auto ch = Pair::take(p.cev, EventKind::Head);
  ASSERT_EQ(ch.size(), 1u);
  EXPECT_TRUE(ch[0].end_stream);
}

TEST(H2Session, ResponseHeaderIsTranslatedAsItIsSubmitted) {
  // The HTTP/1 head goes straight into HPACK: ":status" first, names lowercased, the
  // connection-specific fields and those Connection names dropped, the values untouched, and
  // the Content-Length kept and enforced.
  Pair p;
  auto id = p.client.submit_request(req_fields(), true);
  ASSERT_TRUE(id);
  p.pump();
  portico::ResponseHeader r = portico::ResponseHeader::build(404);
  r.append_header("Content-Type", "text/plain; charset=UTF-8");
  r.append_header("Connection", "keep-alive, X-Hop");
  r.append_header("X-Hop", "dropped");
  r.append_header("Keep-Alive", "timeout=5");
  r.append_header("Transfer-Encoding", "chunked");
  r.append_header("TE", "trailers");
  r.append_header("Set-Cookie", "a=1");
  r.append_header("Set-Cookie", "b=2");
  r.append_header("Content-Length", "4");
  std::size_t bytes = 0;
  ASSERT_TRUE(p.server.submit_response(*id, r, false, &bytes));
  ASSERT_TRUE(p.server.send_data(*id, "gone", true));
  p.pump();
  auto ch = Pair::take(p.cev, EventKind::Head);
  ASSERT_EQ(ch.size(), 1u);
  const HeaderMap& f = ch[0].fields;
  ASSERT_EQ(f.size(), 5u);
  EXPECT_EQ(f[0].name, ":status");
  EXPECT_EQ(f[0].value, "404");
  EXPECT_EQ(f[1].name, "content-type");
  EXPECT_EQ(f[1].value, "text/plain; charset=UTF-8");
  EXPECT_EQ(f.get_all("set-cookie"), (std::vector<std::string_view>{"a=1", "b=2"}));
  EXPECT_EQ(f.get("content-length").value(), "4");
  EXPECT_EQ(bytes, std::size_t{7 + 3 + 12 + 25 + 2 * (10 + 3) + 14 + 1});
  EXPECT_EQ(Pair::read_all(p.client, *id), "gone");

  // A body longer than the Content-Length is refused; 101 is not an HTTP/2 status.
  auto id2 = p.client.submit_request(req_fields(), true);
  p.pump();
  portico::ResponseHeader short_len = portico::ResponseHeader::build(200);
  short_len.append_header("Content-Length", "2");
  ASSERT_TRUE(p.server.submit_response(*id2, short_len, false));
  EXPECT_FALSE(p.server.send_data(*id2, "toolong", true));
  auto id3 = p.client.submit_request(req_fields(), true);
  p.pump();
  EXPECT_FALSE(p.server.submit_response(*id3, portico::ResponseHeader::build(101), true));
}

TEST(H2Session, RequestHeaderIsTranslatedAsItIsSubmitted) {
  // submit_request(RequestHeader) encodes what from_request would build, without the list: the
  // same frames, byte for byte, as from_request + submit_request(HeaderMap).
  auto request = [] {
    RequestHeader r = RequestHeader::build("POST", "/upload?x=1");
    r.append_header("Host", "origin.example:8443");
    r.append_header("Cookie", "a=1; b=2");
    r.append_header("Connection", "keep-alive, X-Hop");
    r.append_header("X-Hop", "dropped");
    r.append_header("TE", "trailers");
    r.append_header("Content-Length", "4");
    r.append_header("X-Token", "t0k3n");
    return r;
  }();
  request.headers().replace(request.headers().size() - 1, "X-Token", "t0k3n", true);
  Pair direct, listed;
  auto a = direct.client.submit_request(request, "https", true, false);
  ASSERT_TRUE(a);
  HeaderMap fields;
  from_request(request, fields, "https", true);
  auto b = listed.client.submit_request(fields, false);
  ASSERT_TRUE(b);
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(direct.client.pending_output(), listed.client.pending_output());

  direct.pump();
  auto heads = Pair::take(direct.sev, EventKind::Head);
  ASSERT_EQ(heads.size(), 1u);
  const HeaderMap& f = heads[0].fields;
  EXPECT_EQ(f.get(":method").value(), "POST");
  EXPECT_EQ(f.get(":scheme").value(), "https");
  EXPECT_EQ(f.get(":authority").value(), "origin.example:8443");
  EXPECT_EQ(f.get(":path").value(), "/upload?x=1");
  EXPECT_EQ(f.get_all("cookie"), (std::vector<std::string_view>{"a=1", "b=2"}));
  EXPECT_EQ(f.get("te").value(), "trailers");
  EXPECT_FALSE(f.contains("host"));
  EXPECT_FALSE(f.contains("x-hop"));
  EXPECT_FALSE(f.contains("connection"));
  bool token_sensitive = false;
  for (auto x : f)
    if (x.name == "x-token") token_sensitive = x.sensitive;
  EXPECT_TRUE(token_sensitive);
  // The Content-Length of the head is enforced on the body.
  EXPECT_FALSE(direct.client.send_data(*a, "too long", true));
  ASSERT_TRUE(direct.client.send_data(*a, "body", true));
  direct.pump();
  EXPECT_EQ(Pair::read_all(direct.server, *a), "body");
  EXPECT_EQ(Pair::take(direct.sev, EventKind::EndStream, *a).size(), 1u);

  // A HEAD request expects no body in its response; the client session was told so.
  RequestHeader head = RequestHeader::build("HEAD", "/");
  head.append_header("Host", "h.example");
  auto h = direct.client.submit_request(head, "http", true, true);
  ASSERT_TRUE(h);
  direct.pump();
  portico::ResponseHeader r = portico::ResponseHeader::build(200);
  r.append_header("Content-Length", "10");
  ASSERT_TRUE(direct.server.submit_response(*h, r, true));
  direct.pump();
  EXPECT_EQ(Pair::take(direct.cev, EventKind::Head, *h).size(), 1u);
  EXPECT_TRUE(Pair::take(direct.cev, EventKind::Malformed, *h).empty());
}

TEST(H2Session, DataFramedAtOnceOrQueuedKeepsEachStreamInOrder) {
  // A body send goes straight into the output when nothing waits before it; otherwise it waits
  // its turn. Either way a stream's frames go HEADERS, DATA..., END_STREAM, and a stream that
  // waits for window is not overtaken by one that comes after it.
  Settings cs;
  cs.stream_window = 1000;  // what the server may send on each stream before an update
  Pair p(cs, {});
  p.pump();
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 3; ++i) {
    auto id = p.client.submit_request(req_fields(), true);
    ASSERT_TRUE(id);
    ids.push_back(*id);
  }
  p.pump();
  const std::string big(2500, 'b'), small(100, 's');
  // Stream 1: larger than its window, so it waits (in parts). Stream 2 comes after it: queued.
  ASSERT_TRUE(p.server.submit_response(ids[0], resp_fields(), false));
  ASSERT_EQ(*p.server.send_data(ids[0], big, true), big.size());
  ASSERT_TRUE(p.server.submit_response(ids[1], resp_fields(), false));
  ASSERT_EQ(*p.server.send_data(ids[1], small, true), small.size());
  auto first = parse(p.server.pending_output());
  std::vector<std::int32_t> data_order;
  for (auto& f : first)
    if (f.type == 0x0) data_order.push_back(static_cast<std::int32_t>(f.stream));
  ASSERT_FALSE(data_order.empty());
  EXPECT_EQ(data_order.front(), ids[0]) << "the waiting stream goes first";
  p.pump();
  // Stream 3, with nothing waiting: framed at once, right after its HEADERS.
  ASSERT_TRUE(p.server.submit_response(ids[2], resp_fields(), false));
  ASSERT_EQ(*p.server.send_data(ids[2], small, false), small.size());
  ASSERT_EQ(*p.server.send_data(ids[2], {}, true), 0u);
  auto frames = parse(p.server.pending_output());
  std::vector<std::pair<int, int>> third;  // type, flags
  for (auto& f : frames)
    if (f.stream == static_cast<std::uint32_t>(ids[2])) third.emplace_back(f.type, f.flags);
  ASSERT_EQ(third.size(), 3u);
  EXPECT_EQ(third[0].first, 0x1);  // HEADERS
  EXPECT_EQ(third[1], (std::pair<int, int>{0x0, 0}));
  EXPECT_EQ(third[2], (std::pair<int, int>{0x0, 0x1}));  // an empty DATA with END_STREAM
  p.pump();
  std::map<std::int32_t, std::string> bodies;
  for (int round = 0; round < 100 && Pair::take(p.cev, EventKind::EndStream).size() < 3; ++round) {
    for (auto id : ids) bodies[id] += Pair::read_all(p.client, id);  // (frees window)
    p.pump();
  }
  for (auto id : ids) bodies[id] += Pair::read_all(p.client, id);
  EXPECT_EQ(Pair::take(p.cev, EventKind::EndStream).size(), 3u);
  EXPECT_EQ(bodies[ids[0]], big);
  EXPECT_EQ(bodies[ids[1]], small);
  EXPECT_EQ(bodies[ids[2]], small);
}

TEST(H2Session, InformationalThenFinalResponse) {
  Pair p;
  auto id = p.client.submit_request(req_fields(), true);
  p.pump();
  auto early = resp_fields("103");
  early.append("link", "</style.css>; rel=preload");
  ASSERT_TRUE(p.server.submit_informational(*id, early));
  ASSERT_TRUE(p.server.submit_response(*id, resp_fields(), true));
  p.pump();
  auto info = Pair::take(p.cev, EventKind::Informational);
  ASSERT_EQ(info.size(), 1u);
  EXPECT_EQ(info[0].fields.get("link").value(), "</style.css>; rel=preload");
  EXPECT_EQ(Pair::take(p.cev, EventKind::Head).size(), 1u);
}

TEST(H2Session, ManyConcurrentStreams) {
  Pair p;
  p.pump();  // SETTINGS both ways
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 100; ++i) {
    auto id = p.client.submit_request(req_fields("POST", "/" + std::to_string(i)), false);
    ASSERT_TRUE(id) << i;
    ASSERT_TRUE(p.client.send_data(*id, "req" + std::to_string(i), true));
    ids.push_back(*id);
  }
  EXPECT_FALSE(p.client.can_open_stream());  // max_outbound_streams = 100
  p.pump();
  ASSERT_EQ(Pair::take(p.sev, EventKind::Head).size(), 100u);
  EXPECT_EQ(p.server.open_streams(), 100u);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(Pair::read_all(p.server, ids[i]), "req" + std::to_string(i));
    ASSERT_TRUE(p.server.submit_response(ids[i], resp_fields(), false));
    ASSERT_TRUE(p.server.send_data(ids[i], "resp" + std::to_string(i), true));
  }
  p.pump();
  for (std::size_t i = 0; i < ids.size(); ++i)
    EXPECT_EQ(Pair::read_all(p.client, ids[i]), "resp" + std::to_string(i));
  EXPECT_EQ(Pair::take(p.cev, EventKind::Closed).size(), 100u);
  EXPECT_EQ(p.client.open_streams(), 0u);
  EXPECT_EQ(p.client.available_streams(), 100u);
}

// Stream objects, their small buffers and the field lists given back are reused by later
// streams: rounds of 30 streams (more than the 16 spare objects that keep their buffers) with
// bodies of every size around the kept 4 KiB, read in pieces and out of order, each checked.
TEST(H2Session, ReusedStreamsAndBuffersKeepBodiesApart) {
  Pair p;
  p.pump();
  const std::size_t sizes[] = {0, 1, 5, 4095, 4096, 4097, 5000, 20000, 70000};
  auto body = [](std::int32_t id, std::size_t n, char tag) {
    std::string b(n, tag);
    for (std::size_t i = 0; i < n; i += 7) b[i] = static_cast<char>('a' + (id + i) % 26);
    return b;
  };
  std::size_t k = 0;
  for (int round = 0; round < 6; ++round) {
    std::vector<std::int32_t> ids;
    std::map<std::int32_t, std::size_t> req_size, resp_size;
    for (int i = 0; i < 30; ++i) {
      auto id = p.client.submit_request(req_fields("POST", "/r"), false);
      ASSERT_TRUE(id);
      ids.push_back(*id);
      req_size[*id] = sizes[k++ % std::size(sizes)];
      resp_size[*id] = sizes[(k + 4) % std::size(sizes)];
    }
    // Bodies go as the windows allow: submit what the send buffer takes, pump, repeat.
    std::map<std::int32_t, std::size_t> sent;
    std::map<std::int32_t, bool> ended;
    std::map<std::int32_t, std::string> in;
    for (int guard = 0; guard < 1000; ++guard) {
      for (auto id : ids) {
        if (ended[id]) continue;
        const std::string b = body(id, req_size[id], 'q');
        auto n = p.client.send_data(id, std::string_view(b).substr(sent[id]), true);
        ASSERT_TRUE(n);
        sent[id] += *n;
        ended[id] = sent[id] == b.size();
      }
      p.pump();
      // The server reads in pieces of up to 3000 bytes, newest stream first.
      for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
        auto v = p.server.received(*it);
        const std::size_t n = std::min<std::size_t>(v.size(), 3000);
        in[*it].append(v.substr(0, n));
        p.server.consume(*it, n);
      }
      p.pump();
      bool all = true;
      for (auto id : ids) all = all && ended[id] && in[id].size() == req_size[id];
      if (all) break;
    }
    for (auto id : ids) ASSERT_EQ(in[id], body(id, req_size[id], 'q')) << "round " << round;
    for (auto& e : p.sev)
      if (e.kind == EventKind::Head) p.server.recycle(std::move(e.fields));
    p.sev.clear();
    for (auto id : ids) {
      ASSERT_TRUE(p.server.submit_response(id, resp_fields(), resp_size[id] == 0));
      sent[id] = 0;
    }
    std::map<std::int32_t, std::string> out;
    for (int guard = 0; guard < 1000; ++guard) {
      for (auto id : ids) {
        const std::string b = body(id, resp_size[id], 'r');
        if (b.empty() || sent[id] == b.size()) continue;
        auto n = p.server.send_data(id, std::string_view(b).substr(sent[id]), true);
        ASSERT_TRUE(n);
        sent[id] += *n;
      }
      p.pump();
      for (auto id : ids) {
        auto v = p.client.received(id);
        const std::size_t n = std::min<std::size_t>(v.size(), 3000);
        out[id].append(v.substr(0, n));
        p.client.consume(id, n);
      }
      p.pump();
      bool all = true;
      for (auto id : ids) all = all && out[id].size() == resp_size[id];
      if (all) break;
    }
    for (auto id : ids) ASSERT_EQ(out[id], body(id, resp_size[id], 'r')) << "round " << round;
    for (auto& e : p.cev)
      if (e.kind == EventKind::Head) p.client.recycle(std::move(e.fields));
    p.cev.clear();
    EXPECT_EQ(p.client.open_streams(), 0u);
    EXPECT_EQ(p.server.open_streams(), 0u);
    EXPECT_EQ(p.client.buffered(), 0u);
    EXPECT_EQ(p.server.buffered(), 0u);
  }
}

// The session's event queue: first in, first out; an event handled in place does not move
// while more are queued; blocks come back for reuse; events left at the end are destroyed.
TEST(H2Session, EventQueueKeepsOrderAndEventsInPlace) {
  portico::h2::EventQueue q;
  EXPECT_TRUE(q.empty());
  std::int32_t next_in = 1, next_out = 1;
  for (int round = 0; round < 50; ++round) {
    const int n = 1 + round % 23;  // across block boundaries
    for (int i = 0; i < n; ++i) {
      Event e{EventKind::Head, next_in++};
      e.fields.append("x-n", std::to_string(e.stream_id));  // an event that owns memory
      q.push(std::move(e));
    }
    Event* front = &q.front();
    const std::int32_t id = front->stream_id;
    for (int i = 0; i < 20; ++i) q.push(Event{EventKind::Data, next_in++});
    EXPECT_EQ(&q.front(), front);  // not moved by the pushes
    EXPECT_EQ(front->stream_id, id);
    EXPECT_EQ(q.back().stream_id, next_in - 1);
    while (!q.empty() && next_out < next_in - 3) {  // leaves a few for the next round
      ASSERT_EQ(q.front().stream_id, next_out);
      if (q.front().kind == EventKind::Head)
        EXPECT_EQ(q.front().fields.get("x-n").value(), std::to_string(next_out));
      q.pop();
      ++next_out;
    }
    if (round % 10 == 9) q.release();  // spares freed; the events left stay
  }
  EXPECT_FALSE(q.empty());  // destroyed with the queue (no leak under ASan)
}

TEST(H2Session, ClientRespectsThePeersMaxConcurrentStreams) {
  Settings ss;
  ss.max_concurrent_streams = 3;
  Pair p({}, ss);
  p.pump();
  EXPECT_EQ(Pair::take(p.cev, EventKind::Settings).size(), 1u);
  EXPECT_EQ(p.client.available_streams(), 3u);
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(*p.client.submit_request(req_fields(), true));
  EXPECT_FALSE(p.client.can_open_stream());
  auto refused = p.client.submit_request(req_fields(), true);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().source(), ErrorSource::Upstream);
  p.pump();
  ASSERT_TRUE(p.server.submit_response(ids[0], resp_fields(), true));
  p.pump();
  EXPECT_EQ(p.client.available_streams(), 1u);
  EXPECT_TRUE(p.client.submit_request(req_fields(), true));
  p.pump();
  EXPECT_EQ(Pair::take(p.sev, EventKind::Head).size(), 4u);
  EXPECT_TRUE(p.server.want_read());
}

TEST(H2Session, SlowConsumerHoldsTheSenderAtTheWindowThenResumes) {
  Settings ss;
  ss.stream_window = 65535;
  ss.connection_window = 4 * 65535;
  Pair p({}, ss);
  auto id = p.client.submit_request(req_fields("POST", "/upload"), false);
  ASSERT_TRUE(id);
  const std::size_t total = 1 << 20;
  std::string chunk(16384, 'x');
  std::size_t sent = 0;
  bool ended = false;
  auto push = [&] {
    for (int i = 0; i < 1000 && !ended; ++i) {
      std::size_t want = std::min(chunk.size(), total - sent);
      auto n =
          p.client.send_data(*id, std::string_view(chunk).substr(0, want), sent + want == total);
      ASSERT_TRUE(n);
      sent += *n;
      ended = sent == total;
      if (*n < want) break;  // full: wait for Writable
    }
  };
  push();
  p.pump();
  push();
  p.pump();
  // The server consumed nothing: exactly one stream window is buffered and no more is sent.
  EXPECT_EQ(p.server.buffered(*id), 65535u);
  EXPECT_EQ(p.server.buffered(), 65535u);
  EXPECT_FALSE(ended);
  EXPECT_LE(p.client.send_capacity(*id), ss.stream_window);
  // More pumping changes nothing.
  push();
  p.pump();
  EXPECT_EQ(p.server.buffered(*id), 65535u);
  EXPECT_LT(sent, total);

  // Consume and keep going: everything arrives, and memory never exceeded one window.
  std::string got;
  for (int round = 0; round < 10000 && Pair::take(p.sev, EventKind::EndStream).empty(); ++round) {
    got += Pair::read_all(p.server, *id);
    push();
    p.pump();
    EXPECT_LE(p.server.buffered(*id), 65535u);
  }
  got += Pair::read_all(p.server, *id);
  EXPECT_EQ(got.size(), total);
  EXPECT_TRUE(ended);
  EXPECT_LE(p.server.stats().peak_buffered, 65535u);
  EXPECT_GE(Pair::take(p.cev, EventKind::Writable, *id).size(), 1u);
}

TEST(H2Session, ConnectionWindowBoundsAllStreams) {
  Settings ss;
  ss.stream_window = 65535;
  ss.connection_window = 100000;
  Pair p({}, ss);
  std::vector<std::int32_t> ids;
  std::string body(65535, 'y');
  for (int i = 0; i < 4; ++i) {
    auto id = p.client.submit_request(req_fields("POST"), false);
    ASSERT_TRUE(id);
    ASSERT_EQ(*p.client.send_data(*id, body, true), 65535u);
    ids.push_back(*id);
  }
  p.pump();
  EXPECT_EQ(p.server.buffered(), 100000u);
  EXPECT_LE(p.server.stats().peak_buffered, 100000u);
  for (int round = 0; round < 1000; ++round) {
    bool any = false;
    for (auto id : ids) any |= !Pair::read_all(p.server, id).empty();
    p.pump();
    if (!any) break;
  }
  EXPECT_EQ(Pair::take(p.sev, EventKind::EndStream).size(), 4u);
  EXPECT_EQ(p.server.buffered(), 0u);
}

TEST(H2Session, ResponseLargerThanTheSendBufferIsAcceptedInParts) {
  Settings ss;
  ss.send_buffer_bytes = 1000;
  Pair p({}, ss);
  auto id = *p.client.submit_request(req_fields(), true);
  p.pump();
  ASSERT_TRUE(p.server.submit_response(id, resp_fields(), false));
  std::string body(5000, 'z');
  std::size_t off = 0;
  for (int i = 0; i < 100 && off < body.size(); ++i) {
    auto n = p.server.send_data(id, std::string_view(body).substr(off), true);
    ASSERT_TRUE(n);
    EXPECT_LE(*n, 1000u);
    off += *n;
    p.pump();
  }
  EXPECT_EQ(off, body.size());
  EXPECT_EQ(Pair::read_all(p.client, id), body);
  EXPECT_GE(Pair::take(p.sev, EventKind::Writable, id).size(), 1u);
}

TEST(H2Session, OutboundBodyMustMatchContentLength) {
  Pair p;
  auto h = req_fields("POST");
  h.append("content-length", "5");
  EXPECT_FALSE(p.client.submit_request(h, true));  // declares a body, sends none
  auto id = p.client.submit_request(h, false);
  ASSERT_TRUE(id);
  EXPECT_FALSE(p.client.send_data(*id, "toolong", false));
  EXPECT_FALSE(p.client.send_data(*id, "abc", true));  // ends short
  ASSERT_TRUE(p.client.send_data(*id, "abc", false));
  EXPECT_FALSE(p.client.send_trailers(*id, HeaderMap{}));
  ASSERT_TRUE(p.client.send_data(*id, "de", true));
  p.pump();
  EXPECT_EQ(Pair::read_all(p.server, *id), "abcde");
  EXPECT_EQ(Pair::take(p.sev, EventKind::EndStream).size(), 1u);

  // A response to HEAD carries no body whatever its content-length says.
  auto hid = *p.client.submit_request(req_fields("HEAD"), true);
  p.pump();
  auto r = resp_fields();
  r.append("content-length", "100");
  ASSERT_TRUE(p.server.submit_response(hid, r, true));
  p.pump();
  auto heads = Pair::take(p.cev, EventKind::Head, hid);
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_TRUE(heads[0].end_stream);
}

TEST(H2Session, ResetFromTheClientReachesTheServer) {
  Pair p;
  auto id = *p.client.submit_request(req_fields("POST"), false);
  ASSERT_TRUE(p.client.send_data(id, "partial", false));
  p.pump();
  p.client.reset(id, ErrorCode::Cancel);
  p.pump();
  auto resets = Pair::take(p.sev, EventKind::Reset, id);
  ASSERT_EQ(resets.size(), 1u);
  EXPECT_EQ(resets[0].code, code(ErrorCode::Cancel));
  auto closed = Pair::take(p.sev, EventKind::Closed, id);
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].code, code(ErrorCode::Cancel));
  // The unread body is still there until the owner lets it go; then the stream is gone.
  EXPECT_EQ(p.server.buffered(id), 7u);
  p.server.discard(id);
  EXPECT_EQ(p.server.buffered(), 0u);
  EXPECT_FALSE(p.server.send_data(id, "x", true));
  // The client's own close is reported too, not as a peer reset.
  EXPECT_EQ(Pair::take(p.cev, EventKind::Reset).size(), 0u);
  EXPECT_EQ(Pair::take(p.cev, EventKind::Closed, id).size(), 1u);
}

TEST(H2Session, ResetFromTheServerReachesTheClient) {
  Pair p;
  auto id = *p.client.submit_request(req_fields(), true);
  p.pump();
  p.server.reset(id, ErrorCode::InternalError);
  p.pump();
  auto resets = Pair::take(p.cev, EventKind::Reset, id);
  ASSERT_EQ(resets.size(), 1u);
  EXPECT_EQ(resets[0].code, code(ErrorCode::InternalError));
  auto closed = Pair::take(p.cev, EventKind::Closed, id);
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_FALSE(closed[0].retry_safe);
  // A server reset the owner asked for is not held against the client.
  EXPECT_EQ(p.server.stats().peer_resets, 0u);
}

TEST(H2Session, RefusedStreamIsSafeToRetry) {
  Pair p;
  auto id = *p.client.submit_request(req_fields(), true);
  p.pump();
  p.server.reset(id, ErrorCode::RefusedStream);
  p.pump();
  auto closed = Pair::take(p.cev, EventKind::Closed, id);
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_TRUE(closed[0].retry_safe);
}

TEST(H2Session, GracefulShutdownLetsStreamsInFlightFinish) {
  Pair p;
  auto a = *p.client.submit_request(req_fields(), true);
  p.pump();
  p.server.shutdown();
  // The notice (2^31-1) and the PING go out together; the client's second request raced them.
  auto notice = std::string(p.server.pending_output());
  p.server.consume_output(notice.size());
  auto b = *p.client.submit_request(req_fields(), true);
  auto req_b = std::string(p.client.pending_output());
  p.client.consume_output(req_b.size());
  ASSERT_TRUE(p.server.feed(req_b));
  ASSERT_TRUE(p.client.feed(notice));
  p.drain();
  auto g = Pair::take(p.cev, EventKind::Goaway);
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].last_stream_id, 0x7fffffff);
  EXPECT_EQ(g[0].code, code(ErrorCode::NoError));
  EXPECT_FALSE(p.client.can_open_stream());
  p.pump();  // PING ACK -> final GOAWAY with the last stream processed: b
  auto sent = Pair::take(p.sev, EventKind::GoawaySent);
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[1].last_stream_id, b);
  EXPECT_EQ(Pair::take(p.sev, EventKind::Head).size(), 2u);
  EXPECT_TRUE(p.server.want_read());
  ASSERT_TRUE(p.server.submit_response(a, resp_fields(), true));
  ASSERT_TRUE(p.server.submit_response(b, resp_fields(), true));
  p.pump();
  EXPECT_EQ(Pair::take(p.cev, EventKind::Head).size(), 2u);
  EXPECT_TRUE(p.server.finished());
}

TEST(H2Session, UpstreamGoawayMakesUnprocessedStreamsRetrySafe) {
  Pair p;
  p.pump();
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(*p.client.submit_request(req_fields(), true));
  auto reqs = std::string(p.client.pending_output());
  p.client.consume_output(reqs.size());
  // The server processed only the first one.
  ASSERT_TRUE(p.client.feed(frame(kGoaway, 0, 0, u32(ids[0]) + u32(0))));
  p.drain();
  auto g = Pair::take(p.cev, EventKind::Goaway);
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].last_stream_id, ids[0]);
  auto closed = Pair::take(p.cev, EventKind::Closed);
  ASSERT_EQ(closed.size(), 2u);
  for (auto& c : closed) {
    EXPECT_TRUE(c.retry_safe);
    EXPECT_GT(c.stream_id, ids[0]);
  }
  EXPECT_FALSE(p.client.can_open_stream());
  EXPECT_FALSE(p.client.submit_request(req_fields(), true));
}

TEST(H2Session, RequestNotYetSentWhenGoawayArrivesIsRetrySafe) {
  Session client(Mode::Client);
  auto id = client.submit_request(req_fields(), true);
  ASSERT_TRUE(id);
  // The server's preface and an immediate GOAWAY arrive before the request left.
  ASSERT_TRUE(client.feed(frame(kSettings, 0, 0, "") + frame(kGoaway, 0, 0, u32(0) + u32(0))));
  for (int i = 0; i < 10; ++i) {
    auto o = client.pending_output();
    if (o.empty()) break;
    client.consume_output(o.size());
  }
  bool closed = false;
  while (auto e = client.poll_event())
    if (e->kind == EventKind::Closed && e->stream_id == *id) {
      closed = true;
      EXPECT_TRUE(e->retry_safe);
    }
  EXPECT_TRUE(closed);
  EXPECT_EQ(client.open_streams(), 0u);
}

// RFC 7541 §7.1.3: a field sent never-indexed arrives marked so (Field::sensitive), both ways,
// and a field marked so is sent as a never-indexed literal, which never enters the table.
TEST(H2Session, NeverIndexedFieldsArriveMarked) {
  Pair p;
  p.pump();
  for (int round = 0; round < 2; ++round) {  // the second time, a table entry would be used
    auto req = req_fields();
    req.append("x-secret", "s3cr3t", true);
    req.append("x-plain", "visible");
    auto id = p.client.submit_request(req, true);
    ASSERT_TRUE(id);
    p.pump();
    auto heads = Pair::take(p.sev, EventKind::Head, *id);
    ASSERT_EQ(heads.size(), 1u);
    std::size_t checked = 0;
    for (auto f : heads[0].fields) {
      if (f.name == "x-secret") {
        EXPECT_TRUE(f.sensitive) << "round " << round;
        EXPECT_EQ(f.value, "s3cr3t");
        ++checked;
      } else {
        EXPECT_FALSE(f.sensitive) << f.name;
      }
    }
    EXPECT_EQ(checked, 1u);
    auto resp = resp_fields();
    resp.append("set-cookie", "id=42", true);
    ASSERT_TRUE(p.server.submit_response(*id, resp, true));
    p.pump();
    auto ch = Pair::take(p.cev, EventKind::Head, *id);
    ASSERT_EQ(ch.size(), 1u);
    ASSERT_EQ(ch[0].fields.size(), 2u);
    EXPECT_FALSE(ch[0].fields[0].sensitive);  // :status
    EXPECT_TRUE(ch[0].fields[1].sensitive);
  }
}

// The representation on the wire: a never-indexed literal (RFC 7541 §6.2.3), which never
// enters the table, each time it is sent.
TEST(H2Session, SensitiveFieldsGoOutAsNeverIndexedLiterals) {
  Session client(Mode::Client);
  portico::h2::hpack::Decoder peer;  // the server's view of the client's blocks
  for (int round = 0; round < 2; ++round) {
    auto req = req_fields();
    req.append("x-secret", "s3cr3t", true);
    req.append("x-plain", "visible");
    ASSERT_TRUE(client.submit_request(req, true));
    std::string out(client.pending_output());
    client.consume_output(out.size());
    if (round == 0) out.erase(0, kMagic.size());
    auto frames = parse(out);
    auto h = std::find_if(frames.begin(), frames.end(),
                          [](const Frame& f) { return f.type == kHeaders; });
    ASSERT_NE(h, frames.end());
    struct Seen {
      portico::h2::hpack::Decoder* d;
      int secret = 0, secret_never = 0, plain_never = 0;
    } seen{&peer};
    auto e = peer.decode(
        h->payload,
        [](void* c, std::string_view n, std::string_view) {
          auto& x = *static_cast<Seen*>(c);
          if (n == "x-secret") {
            ++x.secret;
            x.secret_never += x.d->never_indexed();
          }
          if (n == "x-plain") x.plain_never += x.d->never_indexed();
        },
        &seen);
    ASSERT_EQ(e, portico::h2::hpack::DecodeError::None);
    EXPECT_EQ(seen.secret, 1) << "round " << round;
    EXPECT_EQ(seen.secret_never, 1) << "round " << round;
    EXPECT_EQ(seen.plain_never, 0) << "round " << round;
  }
}

TEST(H2Session, PingIsAcknowledged) {
  Pair p;
  p.client.ping();
  p.pump();
  EXPECT_EQ(Pair::take(p.cev, EventKind::PingAck).size(), 1u);
}

TEST(H2Session, ClientRejectsOversizedResponseHead) {
  Settings cs;
  cs.max_header_list_size = 4096;
  Pair p(cs, {});
  auto id = *p.client.submit_request(req_fields(), true);
  p.pump();
  auto big = resp_fields();
  big.append("x-big", std::string(5000, 'b'));
  ASSERT_TRUE(p.server.submit_response(id, big, true));
  p.pump();
  auto rej = Pair::take(p.cev, EventKind::Rejected, id);
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].code, 502u);
  EXPECT_EQ(Pair::take(p.cev, EventKind::Head).size(), 0u);
  EXPECT_EQ(Pair::take(p.cev, EventKind::Closed, id).size(), 1u);
}

TEST(H2Session, OversizedTrailersResetTheStream) {
  Settings ss;
  ss.max_header_list_size = 2048;
  Pair p({}, ss);
  auto id = *p.client.submit_request(req_fields("POST"), false);
  ASSERT_TRUE(p.client.send_data(id, "body", false));
  HeaderMap t;
  t.append("x-trailer", std::string(3000, 't'));
  ASSERT_TRUE(p.client.send_trailers(id, t));
  p.pump();
  EXPECT_EQ(Pair::take(p.sev, EventKind::Head).size(), 1u);
  EXPECT_EQ(Pair::take(p.sev, EventKind::Trailers).size(), 0u);
  auto rej = Pair::take(p.sev, EventKind::Rejected, id);
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].code, 431u);
  auto creset = Pair::take(p.cev, EventKind::Reset, id);
  ASSERT_EQ(creset.size(), 1u);
  EXPECT_EQ(creset[0].code, code(ErrorCode::Cancel));
  EXPECT_EQ(Pair::take(p.sev, EventKind::Closed, id).size(), 1u);
  p.server.discard(id);
  EXPECT_EQ(p.server.buffered(), 0u);
}

namespace {
/// A client session with one request sent, fed `frames` from the server (after its SETTINGS);
/// returns the session's events and whether it reset the stream with PROTOCOL_ERROR.
struct ClientSees {
  std::vector<Event> events;
  bool reset_protocol_error = false;
  bool goaway_protocol_error = false;
};
ClientSees client_sees(std::string_view frames) {
  Session client(Mode::Client);
  auto id = client.submit_request(req_fields(), true);
  EXPECT_EQ(id ? *id : 0, 1) << "the request is stream 1";
  auto drain_output = [&] {
    std::string out;
    for (int i = 0; i < 10; ++i) {
      auto o = client.pending_output();
      if (o.empty()) break;
      out += o;
      client.consume_output(o.size());
    }
    return out;
  };
  drain_output();
  EXPECT_TRUE(client.feed(frame(kSettings, 0, 0, "") + std::string(frames)));
  ClientSees r;
  for (const Frame& f : parse(drain_output())) {
    if (f.type == kRst && f.stream == 1 && f.payload == u32(code(ErrorCode::ProtocolError)))
      r.reset_protocol_error = true;
    if (f.type == kGoaway && f.payload.size() >= 8 &&
        f.payload.substr(4, 4) == u32(code(ErrorCode::ProtocolError)))
      r.goaway_protocol_error = true;
  }
  while (auto e = client.poll_event()) r.events.push_back(std::move(*e));
  return r;
}
std::size_t count(const ClientSees& r, EventKind k) {
  return static_cast<std::size_t>(
      std::count_if(r.events.begin(), r.events.end(), [k](const Event& e) { return e.kind == k; }));
}
}  // namespace

// The client checks what the server sends: a
// response RFC 9113 calls malformed resets the stream with PROTOCOL_ERROR, is reported as
// Malformed with the reason, and nothing of it reaches the caller as a head, data or trailers.
TEST(H2Session, ClientResetsMalformedResponses) {
  // HPACK: 0x88 is ":status: 200" from the static table, 0x89 ":status: 204".
  const std::string s200 = "\x88";
  const std::string s103 = std::string("\x08\x03") + "103";  // literal, indexed name ":status"
  const std::string s101 = std::string("\x08\x03") + "101";
  struct Case {
    const char* what;
    std::string frames;
    const char* why;
  };
  const Case cases[] = {
      {"DATA after an interim head",
       frame(kHeaders, kEndHeaders, 1, s103) + frame(kData, 0, 1, "x"),
       "DATA before the response head"},
      {"101", frame(kHeaders, kEndHeaders, 1, s101), "101 in HTTP/2"},
      {"an interim head ending the stream", frame(kHeaders, kEndHeaders | kEndStream, 1, s103),
       "interim response with END_STREAM"},
      {"no :status", frame(kHeaders, kEndHeaders | kEndStream, 1, block({{"server", "x"}})),
       "missing :status"},
      {"a request pseudo-header",
       frame(kHeaders, kEndHeaders | kEndStream, 1, s200 + block({{":path", "/"}})),
       "unknown or request pseudo-header field"},
      {"an uppercase name",
       frame(kHeaders, kEndHeaders | kEndStream, 1, s200 + block({{"Server", "x"}})),
       "uppercase field name"},
      {"a connection-specific field",
       frame(kHeaders, kEndHeaders | kEndStream, 1, s200 + block({{"connection", "close"}})),
       nullptr},
      {"a control character in a value",
       frame(kHeaders, kEndHeaders | kEndStream, 1,
             s200 + block({{"x-a",
                            "b\x01"
                            "c"}})),
       "invalid field value"},
      {"a pseudo-header in trailers",
       frame(kHeaders, kEndHeaders, 1, s200) + frame(kData, 0, 1, "body") +
           frame(kHeaders, kEndHeaders | kEndStream, 1, block({{":status", "200"}})),
       "pseudo-header field in trailers"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.what);
    const ClientSees r = client_sees(k.frames);
    EXPECT_TRUE(r.reset_protocol_error);
    const auto m = std::find_if(r.events.begin(), r.events.end(),
                                [](const Event& e) { return e.kind == EventKind::Malformed; });
    ASSERT_NE(m, r.events.end());
    EXPECT_EQ(m->stream_id, 1);
    if (k.why) EXPECT_STREQ(m->why, k.why);
    EXPECT_EQ(count(r, EventKind::Trailers), 0u);
    EXPECT_EQ(count(r, EventKind::EndStream), 0u);
  }
  // Before the head went: no head, no data.
  for (const Case& k : {cases[1], cases[3], cases[5]}) {
    const ClientSees r = client_sees(k.frames);
    EXPECT_EQ(count(r, EventKind::Head), 0u) << k.what;
    EXPECT_EQ(count(r, EventKind::Data), 0u) << k.what;
  }

  // DATA before any head: a malformed response (RFC 9113 §8.1), a stream error; the
  // connection goes on.
  const ClientSees early = client_sees(frame(kData, kEndStream, 1, "early"));
  EXPECT_TRUE(early.reset_protocol_error);
  EXPECT_FALSE(early.goaway_protocol_error);
  EXPECT_EQ(count(early, EventKind::Malformed), 1u);
  EXPECT_EQ(count(early, EventKind::Head), 0u);
  EXPECT_EQ(count(early, EventKind::Data), 0u);

  // What is well-formed passes: an interim head, the final one, data and trailers.
  const ClientSees ok =
      client_sees(frame(kHeaders, kEndHeaders, 1, s103 + block({{"link", "</a>; rel=preload"}})) +
                  frame(kHeaders, kEndHeaders, 1, s200 + block({{"content-length", "4"}})) +
                  frame(kData, 0, 1, "body") +
                  frame(kHeaders, kEndHeaders | kEndStream, 1, block({{"grpc-status", "0"}})));
  EXPECT_FALSE(ok.reset_protocol_error);
  EXPECT_EQ(count(ok, EventKind::Malformed), 0u);
  EXPECT_EQ(count(ok, EventKind::Informational), 1u);
  EXPECT_EQ(count(ok, EventKind::Head), 1u);
  EXPECT_EQ(count(ok, EventKind::Data), 1u);
  EXPECT_EQ(count(ok, EventKind::Trailers), 1u);
  EXPECT_EQ(count(ok, EventKind::EndStream), 1u);
  // A 204 with no body, ended by its head.
  const ClientSees empty = client_sees(frame(kHeaders, kEndHeaders | kEndStream, 1, "\x89"));
  EXPECT_FALSE(empty.reset_protocol_error);
  EXPECT_EQ(count(empty, EventKind::Head), 1u);
}

TEST(H2Session, ClientPrefaceMatch) {
  EXPECT_EQ(match_client_preface(""), PrefaceMatch::Partial);
  EXPECT_EQ(match_client_preface("PRI * HTTP/2"), PrefaceMatch::Partial);
  EXPECT_EQ(match_client_preface(kMagic), PrefaceMatch::Yes);
  EXPECT_EQ(match_client_preface(preface()), PrefaceMatch::Yes);
  EXPECT_EQ(match_client_preface("GET / HTTP/1.1\r\n"), PrefaceMatch::No);
  EXPECT_EQ(match_client_preface("PRI * HTTP/1.1"), PrefaceMatch::No);
}

TEST(H2Session, SessionsNeverExchangeMoreThanTheyAnnounce) {
  // Our SETTINGS as the peer sees them.
  Settings ss;
  ss.max_concurrent_streams = 77;
  ss.stream_window = 100000;
  ss.max_header_list_size = 12345;
  RawServer r(ss);
  r.send(preface());
  auto f = r.frames();
  ASSERT_FALSE(f.empty());
  ASSERT_EQ(f[0].type, kSettings);
  std::map<std::uint16_t, std::uint32_t> got;
  for (std::size_t i = 0; i + 6 <= f[0].payload.size(); i += 6)
    got[static_cast<std::uint16_t>(static_cast<unsigned char>(f[0].payload[i]) << 8 |
                                   static_cast<unsigned char>(f[0].payload[i + 1]))] =
        be32(f[0].payload, i + 2);
  EXPECT_EQ(got[0x3], 77u);
  EXPECT_EQ(got[0x4], 100000u);
  EXPECT_EQ(got[0x6], 12345u);
  EXPECT_EQ(got[0x5], 16384u);
  EXPECT_EQ(got[0x9], 1u);
  // The connection window is opened to connection_window right away.
  bool wu = false;
  for (auto& fr : f)
    if (fr.type == kWindowUpdate && fr.stream == 0)
      wu = be32(fr.payload, 0) == ss.connection_window - 65535;
  EXPECT_TRUE(wu);
}

// =============================================================================================
// raw frames: conformance (RFC 9113)

TEST(H2Conformance, ServerPrefaceGoesOutFirst) {
  RawServer r;
  r.send(preface());
  auto f = r.frames();
  ASSERT_GE(f.size(), 2u);
  EXPECT_EQ(f[0].type, kSettings);
  EXPECT_FALSE(r.failed);
  EXPECT_FALSE(r.goaway());
}

TEST(H2Conformance, BadPrefaceIsProtocolError) {
  RawServer r;
  r.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(r.failed);
  auto g = r.goaway();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->code, code(ErrorCode::ProtocolError));
  EXPECT_FALSE(r.server.feed(preface()));  // the session is over
  EXPECT_FALSE(r.server.want_read());
}

TEST(H2Conformance, FirstFrameNotSettingsIsProtocolError) {
  RawServer r;
  r.send(kMagic + frame(kPing, 0, 0, std::string(8, '\0')));
  auto g = r.goaway();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->code, code(ErrorCode::ProtocolError));
}

TEST(H2Conformance, FrameOnIdleStreamIsProtocolError) {
  RawServer r;
  r.send(preface() + frame(kData, 0, 1, "abc"));
  auto g = r.goaway();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->code, code(ErrorCode::ProtocolError));
  EXPECT_FALSE(r.server.want_read());

  RawServer w;
  w.send(preface() + frame(kWindowUpdate, 0, 3, u32(100)));
  ASSERT_TRUE(w.goaway());
  EXPECT_EQ(w.goaway()->code, code(ErrorCode::ProtocolError));

  RawServer rs;
  rs.send(preface() + frame(kRst, 0, 5, u32(8)));
  ASSERT_TRUE(rs.goaway());
  EXPECT_EQ(rs.goaway()->code, code(ErrorCode::ProtocolError));
}

TEST(H2Conformance, DataAfterEndStreamIsStreamClosed) {
  RawServer r;
  r.send(preface() + frame(kHeaders, kEndHeaders | kEndStream, 1, get_block()) +
         frame(kData, 0, 1, "late"));
  auto g = r.goaway();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->code, code(ErrorCode::StreamClosed));
}

// The closed streams the server remembers are bounded: a frame on one of the oldest, forgotten,
// is ignored (it may have been in flight), one on a recently closed stream is still the
// client's error.
TEST(H2Conformance, ClosedStreamHistoryIsBoundedAndForgetsTheOldest) {
  RawServer r;
  r.send(preface());
  constexpr std::uint32_t kStreams = 1500;  // past the history (1024, plus a quarter)
  for (std::uint32_t i = 0; i < kStreams; ++i) {
    const std::uint32_t id = 1 + 2 * i;
    r.send(frame(kHeaders, kEndHeaders | kEndStream, id, get_block()), false);
    ASSERT_TRUE(r.server.submit_response(static_cast<std::int32_t>(id), resp_fields("204"), true))
        << id;
    r.flush();
  }
  ASSERT_FALSE(r.goaway());
  r.send(frame(kData, 0, 1, "late"));  // stream 1: forgotten
  EXPECT_FALSE(r.goaway()) << "a frame on a forgotten stream is ignored";
  EXPECT_TRUE(r.server.want_read());
  r.send(frame(kData, 0, 1 + 2 * (kStreams - 1), "late"));  // the last one: remembered
  auto g = r.goaway();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->code, code(ErrorCode::StreamClosed));
}

TEST(H2Conformance, EvenStreamIdFromClientIsProtocolError) {
  RawServer r;
  r.send(preface() + frame(kHeaders, kEndHeaders | kEndStream, 2, get_block()));
  ASSERT_TRUE(r.goaway());
  EXPECT_EQ(r.goaway()->code, code(ErrorCode::ProtocolError));
}

TEST(H2Conformance, MalformedRequestsAreResetWithProtocolError) {
  struct Case {
    const char* what;
    std::string block;
  };
  std::vector<Case> cases = {
      {"duplicate :path", get_block({{":path", "/again"}})},
      {"missing :method", block({{":scheme", "https"}, {":authority", "h"}, {":path", "/"}})},
      {"uppercase name", get_block({{"X-Upper", "1"}})},
      {"connection", get_block({{"connection", "keep-alive"}})},
      {"transfer-encoding", get_block({{"transfer-encoding", "chunked"}})},
      {"upgrade", get_block({{"upgrade", "h2c"}})},
      {"te gzip", get_block({{"te", "gzip"}})},
      {"pseudo after regular",
       block({{":method", "GET"}, {"a", "b"}, {":scheme", "https"}, {":path", "/"}})},
      {"status in request", get_block({{":status", "200"}})},
      {"CONNECT with :path",
       block({{":method", "CONNECT"}, {":authority", "h:1"}, {":path", "/"}})},
      {"empty :path", block({{":method", "GET"}, {":scheme", "https"}, {":path", ""}})},
      {"space in :path", block({{":method", "GET"}, {":scheme", "https"}, {":path", "/a b"}})},
      {"invalid :authority",
       block({{":method", "GET"}, {":scheme", "https"}, {":authority", "a/b"}, {":path", "/"}})},
      {"invalid name", get_block({{"a b", "1"}})},
      {"control character in a value", get_block({{"a", std::string("x\x01y", 3)}})},
  };
  for (auto& c : cases) {
    RawServer r;
    r.send(preface() + frame(kHeaders, kEndHeaders | kEndStream, 1, c.block));
    EXPECT_EQ(r.rst(1), code(ErrorCode::ProtocolError)) << c.what;
    EXPECT_FALSE(r.goaway()) << c.what;
    EXPECT_EQ(r.count(EventKind::Head), 0u) << c.what;  // the owner never sees it
    EXPECT_EQ(r.count(EventKind::Closed), 0u) << c.what;
    // It is told why, to log it.
    auto m = std::find_if(r.events.begin(), r.events.end(),
                          [](const Event& e) { return e.kind == EventKind::Malformed; });
    ASSERT_NE(m, r.events.end()) << c.what;
    EXPECT_EQ(m->stream_id, 1) << c.what;
    ASSERT_NE(m->why, nullptr) << c.what;
    // The connection survives: the next request is served.
    r.events.clear();
    r.send(frame(kHeaders, kEndHeaders | kEndStream, 3, get_block()));
    EXPECT_EQ(r.count(EventKind::Head), 1u) << c.what;
  }
}

TEST(H2Conformance, TeTrailersIsAllowed) {
  RawServer r;
  r.send(preface() + frame(kHeaders, kEndHeaders | kEndStream, 1, get_block({{"te", "trailers"}})));
  EXPECT_FALSE(r.rst(1));
  EXPECT_EQ(r.count(EventKind::Head), 1u);
}

TEST(H2Conformance, TrailersWithoutEndStreamAreProtocolError) {
  // RFC 9113 §8.1: a HEADERS frame after the head must end the stream.
  RawServer r;
  r.send(preface() + frame(kHeaders, kEndHeaders, 1, get_block()) + frame(kData, 0, 1, "abc") +
         frame(kHeaders, kEndHeaders, 1, block({{"x-t", "1"}})));
  EXPECT_EQ(r.rst(1), code(ErrorCode::ProtocolError));
  EXPECT_EQ(r.count(EventKind::Head), 1u);
  EXPECT_EQ(r.count(EventKind::Trailers), 0u);
  EXPECT_EQ(r.count(EventKind::Closed), 1u);
  EXPECT_FALSE(r.goaway());

  // With END_STREAM they are trailers.
  RawServer ok;
  ok.send(preface() + frame(kHeaders, kEndHeaders, 1, get_block()) + frame(kData, 0, 1, "abc") +
          frame(kHeaders, kEndHeaders | kEndStream, 1, block({{"x-t", "1"}})));
  EXPECT_FALSE(ok.rst(1));
  EXPECT_EQ(ok.count(EventKind::Trailers), 1u);
  EXPECT_EQ(ok.count(EventKind::EndStream), 1u);
}

TEST(H2Conformance, ContentLengthMismatchIsProtocolError) {
  RawServer r;
  r.send(preface() + frame(kHeaders, kEndHeaders, 1, get_block({{"content-length", "3"}})) +
         frame(kData, 0, 1, "12345"));
  EXPECT_EQ(r.rst(1), code(ErrorCode::ProtocolError));
  EXPECT_EQ(r.server.buffered(), 0u);

  RawServer s;
  s.send(preface() + frame(kHeaders, kEndHeaders, 1, get_block({{"content-length", "3"}})) +
         frame(kData, kEndStream, 1, "12"));
  EXPECT_EQ(s.rst(1), code(ErrorCode::ProtocolError));
  EXPECT_EQ(s.count(EventKind::EndStream), 0u);

  RawServer ok;
  ok.send(preface() + frame(kHeaders, kEndHeaders, 1, get_block({{"content-length", "3"}})) +
          frame(kData, kEndStream, 1, "123"));
  EXPECT_FALSE(ok.rst(1));
  EXPECT_EQ(ok.count(EventKind::EndStream), 1u);
}

TEST(H2Conformance, WindowOverflowIsFlowControlError) {
  RawServer r;
  r.send(preface() + frame(kWindowUpdate, 0, 0, u32(0x7fffffff)));
  ASSERT_TRUE(r.goaway());
  EXPECT_EQ(r.goaway()->code, code(ErrorCode::FlowControlError));

  RawServer s;
  s.send(preface() + frame(kHeaders, kEndHeaders, 1, get_block()) +
         frame(kWindowUpdate, 0, 1, u32(0x7fffffff)));
  EXPECT_EQ(s.rst(1), code(ErrorCode::FlowControlError));
  EXPECT_FALSE(s.goaway());
}

TEST(H2Conformance, ZeroWindowIncrementIsProtocolError) {
  RawServer r;
  r.send(preface() + frame(kWindowUpdate, 0, 0, u32(0)));
  ASSERT_TRUE(r.goaway());
  EXPECT_EQ(r.goaway()->code, code(ErrorCode::ProtocolError));
}

TEST(H2Conformance, DataBeyondTheWindowIsFlowControlError) {
  Settings st;
  st.stream_window = 65535;
  st.connection_window = 65535;
  RawServer r(st);
  std::string frames = preface() + frame(kHeaders, kEndHeaders, 1, get_block());
  for (int i = 0; i < 5; ++i) frames += frame(kData, 0, 1, std::string(16384, 'a'));
  r.send(frames);
  ASSERT_TRUE(r.goaway());
  EXPECT_EQ(r.goaway()->code, code(ErrorCode::FlowControlError));
  EXPECT_LE(r.server.buffered(), 65535u);
}

TEST(H2Conformance, InvalidSettingsValues) {
  struct Case {
    const char* what;
    std::string payload;
    ErrorCode expect;
  };
  std::vector<Case> cases = {
      {"ENABLE_PUSH=2", setting(0x2, 2), ErrorCode::ProtocolError},
      {"INITIAL_WINDOW_SIZE=2^31", setting(0x4, 0x80000000u), ErrorCode::FlowControlError},
      {"MAX_FRAME_SIZE=16383", setting(0x5, 16383), ErrorCode::ProtocolError},
      {"MAX_FRAME_SIZE=2^24", setting(0x5, 1u << 24), ErrorCode::ProtocolError},
  };
  for (auto& c : cases) {
    RawServer r;
    r.send(kMagic + frame(kSettings, 0, 0, c.payload));
    auto g = r.goaway();
    ASSERT_TRUE(g) << c.what;
    EXPECT_EQ(g->code, code(c.expect)) << c.what;
  }
  RawServer len;
  len.send(kMagic + frame(kSettings, 0, 0, "12345"));  // not a multiple of 6
  ASSERT_TRUE(len.goaway());
  EXPECT_EQ(len.goaway()->code, code(ErrorCode::FrameSizeError));
  RawServer ack;
  ack.send(preface() + frame(kSettings, kAck, 0, setting(0x3, 1)));  // ACK with a payload
  ASSERT_TRUE(ack.goaway());
  EXPECT_EQ(ack.goaway()->code, code(ErrorCode::FrameSizeError));
}

TEST(H2Conformance, OversizedFrameIsFrameSizeError) {
  RawServer r;
  r.send(preface() + frame(kHeaders, kEndHeaders, 1, get_block()) +
         frame(kData, 0, 1, std::string(16385, 'a')));
  ASSERT_TRUE(r.goaway());
  EXPECT_EQ(r.goaway()->code, code(ErrorCode::FrameSizeError));
  // At the limit it is fine.
  RawServer ok;
  ok.send(preface() + frame(kHeaders, kEndHeaders, 1, get_block()) +
          frame(kData, 0, 1, std::string(16384, 'a')));
  EXPECT_FALSE(ok.goaway());
  EXPECT_EQ(ok.server.buffered(1), 16384u);
}

TEST(H2Conformance, StreamsOverTheLimitAreRefused) {
  Settings st;
  st.max_concurrent_streams = 2;
  // Before the client acknowledged our SETTINGS: REFUSED_STREAM (retryable).
  RawServer r(st);
  std::string frames = preface();
  for (std::uint32_t id : {1u, 3u, 5u}) frames += frame(kHeaders, kEndHeaders, id, get_block());
  r.send(frames);
  EXPECT_FALSE(r.rst(1));
  EXPECT_FALSE(r.rst(3));
  EXPECT_EQ(r.rst(5), code(ErrorCode::RefusedStream));
  EXPECT_FALSE(r.goaway());
  EXPECT_EQ(r.count(EventKind::Head), 2u);

  // After it acknowledged them, exceeding the limit it knows is a connection error.
  RawServer a(st);
  std::string f2 = preface() + frame(kSettings, kAck, 0, "");
  for (std::uint32_t id : {1u, 3u, 5u}) f2 += frame(kHeaders, kEndHeaders, id, get_block());
  a.send(f2);
  ASSERT_TRUE(a.goaway());
  EXPECT_EQ(a.goaway()->code, code(ErrorCode::ProtocolError));
  EXPECT_EQ(a.goaway()->last, 3u);
}

TEST(H2Conformance, OversizedRequestHeadIsAnswered431) {
  Settings st;
  st.max_header_list_size = 1024;
  RawServer r(st);
  r.send(preface() + frame(kHeaders, kEndHeaders | kEndStream, 1,
                           get_block({{"x-big", std::string(2000, 'a')}})));
  EXPECT_EQ(r.count(EventKind::Head), 0u);
  EXPECT_FALSE(r.goaway());
  bool answered = false;
  for (auto& f : r.frames())
    if (f.type == kHeaders && f.stream == 1) answered = f.flags & kEndStream;
  EXPECT_TRUE(answered);
  EXPECT_EQ(r.server.stats().headers_rejected, 1u);
  ASSERT_EQ(r.count(EventKind::Rejected), 1u);
  for (auto& e : r.events) {
    if (e.kind == EventKind::Rejected) {
      EXPECT_EQ(e.code, 431u);
    }
  }
  EXPECT_EQ(r.count(EventKind::Closed), 0u);
  // At the limit it passes: 4 pseudo fields + x-big.
  RawServer ok(st);
  std::size_t base = 7 + 3 + 32 + 7 + 5 + 32 + 10 + 11 + 32 + 5 + 1 + 32;
  std::string v(1024 - base - 5 - 32, 'a');
  ok.send(preface() + frame(kHeaders, kEndHeaders | kEndStream, 1, get_block({{"x-big", v}})));
  EXPECT_EQ(ok.count(EventKind::Head), 1u);
  RawServer over(st);
  over.send(preface() +
            frame(kHeaders, kEndHeaders | kEndStream, 1, get_block({{"x-big", v + "a"}})));
  EXPECT_EQ(over.count(EventKind::Head), 0u);
}

// =============================================================================================
// raw frames: floods

TEST(H2Protection, RapidResetIsEnhanceYourCalm) {
  Settings st;
  st.max_resets_per_window = 10;
  RawServer r(st);
  std::string frames = preface();
  for (std::uint32_t i = 0; i < 11; ++i) {
    std::uint32_t id = 1 + 2 * i;
    frames += frame(kHeaders, kEndHeaders, id, get_block()) + frame(kRst, 0, id, u32(8));
  }
  r.send(frames);
  EXPECT_TRUE(r.failed);
  auto g = r.goaway();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->code, code(ErrorCode::EnhanceYourCalm));
  EXPECT_EQ(r.server.stats().peer_resets, 11u);
  EXPECT_FALSE(r.server.want_read());
}

TEST(H2Protection, ResetsSpreadOverWindowsAreAllowed) {
  Settings st;
  st.max_resets_per_window = 10;
  RawServer r(st);
  r.send(preface());
  std::uint32_t id = 1;
  for (int window = 0; window < 3; ++window) {
    std::string frames;
    for (int i = 0; i < 10; ++i, id += 2)
      frames += frame(kHeaders, kEndHeaders, id, get_block()) + frame(kRst, 0, id, u32(8));
    r.send(frames);
    r.clock->now += st.flood_window;
  }
  EXPECT_FALSE(r.failed);
  EXPECT_FALSE(r.goaway());
  EXPECT_EQ(r.server.stats().peer_resets, 30u);
}

TEST(H2Protection, MalformedRequestsCountAsResets) {
  Settings st;
  st.max_resets_per_window = 5;
  RawServer r(st);
  std::string frames = preface();
  for (std::uint32_t i = 0; i < 6; ++i)
    frames +=
        frame(kHeaders, kEndHeaders | kEndStream, 1 + 2 * i, get_block({{"connection", "x"}}));
  r.send(frames);
  auto g = r.goaway();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->code, code(ErrorCode::EnhanceYourCalm));
}

TEST(H2Protection, ContinuationFloodIsEnhanceYourCalm) {
  RawServer r;  // max_continuations = 8
  std::string hb = get_block();
  std::string frames = preface() + frame(kHeaders, 0, 1, hb);
  for (int i = 0; i < 9; ++i) frames += frame(kContinuation, 0, 1, block({{"x-c", "v"}}));
  r.send(frames);
  EXPECT_TRUE(r.failed);
  ASSERT_TRUE(r.goaway());
  EXPECT_EQ(r.goaway()->code, code(ErrorCode::EnhanceYourCalm));

  // Eight are fine.
  RawServer ok;
  std::string f2 = preface() + frame(kHeaders, 0, 1, hb);
  for (int i = 0; i < 7; ++i) f2 += frame(kContinuation, 0, 1, block({{"x-c", "v"}}));
  f2 += frame(kContinuation, kEndHeaders, 1, block({{"x-c", "v"}}));
  ok.send(f2);
  EXPECT_FALSE(ok.goaway());
  EXPECT_EQ(ok.count(EventKind::Head), 1u);
}

TEST(H2Protection, ContinuationFloodWithHugeHeaderListIsBounded) {
  // Headers beyond max_header_list_size across CONTINUATION frames are never stored.
  Settings st;
  st.max_continuations = 100;
  st.max_header_list_size = 4096;
  RawServer r(st);
  std::string frames = preface() + frame(kHeaders, 0, 1, get_block());
  for (int i = 0; i < 50; ++i)
    frames += frame(kContinuation, 0, 1, block({{"x-c", std::string(1000, 'v')}}));
  frames += frame(kContinuation, kEndHeaders | 0, 1, block({{"x-end", "1"}}));
  r.send(frames);
  EXPECT_EQ(r.count(EventKind::Head), 0u);
  EXPECT_EQ(r.server.stats().headers_rejected, 1u);
}

TEST(H2Protection, PingFloodIsEnhanceYourCalm) {
  Settings st;
  st.max_pings_per_window = 5;
  RawServer r(st);
  std::string frames = preface();
  for (int i = 0; i < 5; ++i) frames += frame(kPing, 0, 0, std::string(8, 'p'));
  r.send(frames);
  EXPECT_FALSE(r.goaway());
  std::size_t acks = 0;
  for (auto& f : r.frames()) acks += f.type == kPing && (f.flags & kAck);
  EXPECT_EQ(acks, 5u);
  r.send(frame(kPing, 0, 0, std::string(8, 'p')));
  EXPECT_TRUE(r.failed);
  ASSERT_TRUE(r.goaway());
  EXPECT_EQ(r.goaway()->code, code(ErrorCode::EnhanceYourCalm));
}

TEST(H2Protection, UnreadAcksAreAFlood) {
  // A peer that sends PINGs but never reads our ACKs: the cap on queued ACKs (max_outbound_ack).
  Settings st;
  st.max_outbound_ack = 20;
  st.max_pings_per_window = 1000000;
  RawServer r(st);
  r.send(preface(), /*flush=*/false);
  std::string frames;
  for (int i = 0; i < 30; ++i) frames += frame(kPing, 0, 0, std::string(8, 'p'));
  r.send(frames, /*flush=*/false);
  EXPECT_TRUE(r.failed);
  r.flush();
  ASSERT_TRUE(r.goaway());
  EXPECT_EQ(r.goaway()->code, code(ErrorCode::EnhanceYourCalm));
}

TEST(H2Protection, SettingsFloodIsEnhanceYourCalm) {
  Settings st;
  st.max_settings_per_window = 5;
  RawServer r(st);
  std::string frames = preface();  // the first SETTINGS counts
  for (int i = 0; i < 5; ++i) frames += frame(kSettings, 0, 0, setting(0x3, 100));
  r.send(frames);
  ASSERT_TRUE(r.goaway());
  EXPECT_EQ(r.goaway()->code, code(ErrorCode::EnhanceYourCalm));
}

TEST(H2Protection, EmptyDataFloodIsEnhanceYourCalm) {
  RawServer r;  // max_empty_frames = 32
  std::string frames = preface() + frame(kHeaders, kEndHeaders, 1, get_block());
  for (int i = 0; i < 33; ++i) frames += frame(kData, 0, 1, "");
  r.send(frames);
  ASSERT_TRUE(r.goaway());
  EXPECT_EQ(r.goaway()->code, code(ErrorCode::EnhanceYourCalm));

  // Empty frames between frames with payload do not add up.
  RawServer ok;
  std::string f2 = preface() + frame(kHeaders, kEndHeaders, 1, get_block());
  for (int i = 0; i < 100; ++i) f2 += frame(kData, 0, 1, "") + frame(kData, 0, 1, "x");
  ok.send(f2);
  EXPECT_FALSE(ok.goaway());
}

TEST(H2Protection, PriorityFloodIsEnhanceYourCalm) {
  Settings st;
  st.max_priority_per_window = 50;
  RawServer r(st);
  std::string frames = preface();
  for (std::uint32_t i = 0; i < 51; ++i)
    frames += frame(kPriority, 0, 1 + 2 * i, u32(0) + std::string(1, '\x10'));
  r.send(frames);
  ASSERT_TRUE(r.goaway());
  EXPECT_EQ(r.goaway()->code, code(ErrorCode::EnhanceYourCalm));
}
