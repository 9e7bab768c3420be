// The HTTP/1 codec without sockets: bytes in, events out.
#include "http1/codec.hpp"

#include <cctype>
#include <random>

using namespace portico;
using namespace portico::http1;

namespace {
Parser req_parser() { return Parser(Kind::Request, ParserLimits{}); }

struct Parsed {
  RequestHeader head;
  std::string body;
  bool complete = false;
  std::uint16_t error = 0;
};

// Feeds `bytes` in pieces of `step` bytes, like a socket would deliver them.
Parsed parse_request(std::string_view bytes, std::size_t step = 1 << 20, ParserLimits l = {}) {
  Parser p(Kind::Request, l);
  Parsed out;
  std::string buf;
  std::size_t fed = 0;
  std::size_t off = 0;
  for (int guard = 0; guard < 100000; ++guard) {
    if (off == buf.size() && !(p.in_body() && fed == bytes.size())) {
      if (fed == bytes.size()) break;
      auto n = std::min(step, bytes.size() - fed);
      buf.assign(bytes.substr(fed, n));
      fed += n;
      off = 0;
    }
    auto s = p.feed(buf.data() + off, buf.size() - off);
    for (auto c : p.body_chunks()) out.body.append(c);
    off += s.consumed;
    if (s.event == Event::Headers) p.take_request(out.head);
    if (s.event == Event::Error) {
      out.error = p.error_status();
      return out;
    }
    if (s.event == Event::MessageComplete) {
      out.complete = true;
      return out;
    }
  }
  return out;
}
}  // namespace

TEST(Codec, ParsesRequestHeadAndKeepsFieldCase) {
  auto r = parse_request("GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-MiXeD: Yes\r\n\r\n");
  ASSERT_TRUE(r.complete);
  EXPECT_EQ(r.head.method(), "GET");
  EXPECT_EQ(r.head.uri(), "/a?b=1");
  EXPECT_EQ(r.head.version(), Version::Http11);
  ASSERT_EQ(r.head.headers().size(), 2u);
  EXPECT_EQ(r.head.headers()[1].name, "X-MiXeD");
  EXPECT_EQ(r.head.headers().get("x-mixed").value(), "Yes");
}

TEST(Codec, ByteAtATimeGivesTheSameResult) {
  const std::string req =
      "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
  auto whole = parse_request(req);
  auto bytewise = parse_request(req, 1);
  ASSERT_TRUE(whole.complete);
  ASSERT_TRUE(bytewise.complete);
  EXPECT_EQ(whole.body, "hello world");
  EXPECT_EQ(bytewise.body, "hello world");
  EXPECT_EQ(bytewise.head.headers().get("host").value(), "h");
}

TEST(Codec, ContentLengthBodyAndFraming) {
  Parser p = req_parser();
  std::string in = "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nabcdeGET / HTTP/1.1\r\n";
  auto s = p.feed(in.data(), in.size());
  ASSERT_EQ(s.event, Event::Headers);
  EXPECT_EQ(p.framing(), Framing::ContentLength);
  EXPECT_EQ(p.content_length(), 5u);
  std::size_t off = s.consumed;
  s = p.feed(in.data() + off, in.size() - off);
  EXPECT_EQ(s.event, Event::MessageComplete);
  ASSERT_EQ(p.body_chunks().size(), 1u);
  EXPECT_EQ(p.body_chunks()[0], "abcde");
  off += s.consumed;
  // The pipelined next request stays unconsumed.
  EXPECT_EQ(std::string_view(in).substr(off), "GET / HTTP/1.1\r\n");
}

TEST(Codec, PipelinedRequestsComeOutInOrder) {
  Parser p = req_parser();
  std::string in = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
  std::vector<std::string> targets;
  std::size_t off = 0;
  for (int i = 0; i < 10 && off < in.size(); ++i) {
    auto s = p.feed(in.data() + off, in.size() - off);
    off += s.consumed;
    if (s.event == Event::Headers) {
      RequestHeader h;
      p.take_request(h);
      targets.emplace_back(h.uri());
    }
  }
  EXPECT_EQ(targets, (std::vector<std::string>{"/1", "/2"}));
}

TEST(Codec, RejectsContentLengthWithTransferEncoding) {
  auto r = parse_request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  EXPECT_EQ(r.error, 400);
}

TEST(Codec, RejectsDuplicateContentLength) {
  auto r = parse_request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc");
  EXPECT_EQ(r.error, 400);
}

TEST(Codec, RejectsMissingOrDuplicateHost) {
  EXPECT_EQ(parse_request("GET / HTTP/1.1\r\n\r\n").error, 400);
  EXPECT_EQ(parse_request("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").error, 400);
  EXPECT_TRUE(parse_request("GET / HTTP/1.0\r\n\r\n").complete);
}

TEST(Codec, RejectsBadChunkSize) {
  auto r = parse_request("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
  EXPECT_EQ(r.error, 400);
}

TEST(Codec, HeaderLimitsAtAndPastTheLimit) {
  ParserLimits l;
  l.max_header_count = 3;
  EXPECT_TRUE(parse_request("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n", 1 << 20, l).complete);
  EXPECT_EQ(parse_request("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 1 << 20, l).error, 431);
  ParserLimits b;
  b.max_header_bytes = 100;
  std::string head = "GET / HTTP/1.1\r\nHost: h\r\nA: ";
  std::string fits = head + std::string(100 - head.size() - 4, 'x') + "\r\n\r\n";
  ASSERT_EQ(fits.size(), 100u);
  EXPECT_TRUE(parse_request(fits, 7, b).complete);
  std::string over = head + std::string(100 - head.size() - 3, 'x') + "\r\n\r\n";
  EXPECT_EQ(parse_request(over, 7, b).error, 431);
}

TEST(Codec, TargetLimitGives414) {
  ParserLimits l;
  l.max_target_bytes = 16;
  EXPECT_TRUE(parse_request("GET /0123456789abcde HTTP/1.1\r\nHost: h\r\n\r\n", 1 << 20, l).complete);
  EXPECT_EQ(parse_request("GET /0123456789abcdef HTTP/1.1\r\nHost: h\r\n\r\n", 1 << 20, l).error, 414);
}

TEST(Codec, UnsupportedVersionGives505) {
  EXPECT_EQ(parse_request("GET / HTTP/1.2\r\nHost: h\r\n\r\n").error, 505);
}

TEST(Codec, ResponseToHeadHasNoBody) {
  Parser p(Kind::Response, ParserLimits{});
  p.set_no_body_expected(true);
  std::string in = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
  auto s = p.feed(in.data(), in.size());
  ASSERT_EQ(s.event, Event::Headers);
  EXPECT_EQ(p.framing(), Framing::None);
  s = p.feed(in.data() + s.consumed, in.size() - s.consumed);
  EXPECT_EQ(s.event, Event::MessageComplete);
}

TEST(Codec, CloseDelimitedResponseEndsAtEof) {
  Parser p(Kind::Response, ParserLimits{});
  std::string in = "HTTP/1.1 200 OK\r\n\r\nsome body";
  auto s = p.feed(in.data(), in.size());
  ASSERT_EQ(s.event, Event::Headers);
  EXPECT_EQ(p.framing(), Framing::UntilClose);
  s = p.feed(in.data() + s.consumed, in.size() - s.consumed);
  EXPECT_EQ(s.event, Event::Body);
  EXPECT_EQ(p.body_chunks().at(0), "some body");
  EXPECT_EQ(p.finish().event, Event::MessageComplete);
}

TEST(Codec, TruncatedLengthBodyIsAnErrorAtEof) {
  Parser p(Kind::Response, ParserLimits{});
  std::string in = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
  auto s = p.feed(in.data(), in.size());
  s = p.feed(in.data() + s.consumed, in.size() - s.consumed);
  EXPECT_EQ(s.event, Event::Body);
  EXPECT_EQ(p.finish().event, Event::Error);
}

TEST(Codec, SerializeAndStripHopByHop) {
  RequestHeader r = RequestHeader::build("GET", "/p");
  r.append_header("Host", "h");
  r.append_header("Connection", "keep-alive, X-Hop");
  r.append_header("X-Hop", "1");
  r.append_header("Keep-Alive", "timeout=5");
  r.append_header("TE", "trailers, gzip");
  r.append_header("Upgrade", "websocket");
  r.append_header("X-End", "2");
  strip_hop_by_hop(r.headers());
  std::string out;
  serialize_request_head(r, out);
  EXPECT_EQ(out, "GET /p HTTP/1.1\r\nHost: h\r\nX-End: 2\r\nTE: trailers\r\n\r\n");
  std::string chunk;
  append_chunk_size(255, chunk);
  append_last_chunk(nullptr, chunk);
  EXPECT_EQ(chunk, "ff\r\n0\r\n\r\n");
}

TEST(Codec, TransferEncodingIsJudgedBeforeTheHeadIsReleased) {
  // The head must not come out as a valid request when its framing is unusable.
  for (const char* te : {"gzip", "identity", "chunked, gzip", "chunked\t"}) {
    Parser p = req_parser();
    std::string in = std::string("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ") + te +
                     "\r\n\r\n0\r\n\r\n";
    auto s = p.feed(in.data(), in.size());
    EXPECT_EQ(s.event, Event::Error) << te;
    EXPECT_EQ(p.error_status(), 501) << te;
  }
  EXPECT_EQ(parse_request("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").error, 400);
  // A coding before chunked would be lost when the proxy re-chunks the body: refused too.
  EXPECT_EQ(parse_request("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n").error, 501);
  EXPECT_TRUE(parse_request("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked \r\n\r\n0\r\n\r\n").complete);
}

TEST(Codec, ObsoleteLineFoldingIsRejected) {
  EXPECT_EQ(parse_request("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n").error, 400);
  EXPECT_EQ(parse_request("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n").error, 400);
}

TEST(Codec, BareLineFeedsAndSpaceBeforeColonAreRejected) {
  EXPECT_EQ(parse_request("GET / HTTP/1.1\nHost: h\n\n").error, 400);
  EXPECT_EQ(parse_request("GET / HTTP/1.1\r\nHost : h\r\n\r\n").error, 400);
  EXPECT_EQ(parse_request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello").error, 400);
}

TEST(Codec, HeadChecksHoldWhereverTheReadsSplitTheBytes) {
  // The field check jumps from LF to LF: a split right before or after one must not hide a
  // bare LF or a folded line.
  const std::string good = "GET /a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: 2\r\n\r\n";
  const std::string bare = "GET /a HTTP/1.1\r\nHost: h\r\nX-A: 1\nX-B: 2\r\n\r\n";
  const std::string lflf = "GET /a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\nX-B: 2\r\n\r\n";
  const std::string fold = "GET /a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n X-B: 2\r\n\r\n";
  for (std::size_t step = 1; step <= good.size(); ++step) {
    SCOPED_TRACE(step);
    EXPECT_TRUE(parse_request(good, step).complete);
    EXPECT_EQ(parse_request(bare, step).error, 400);
    EXPECT_EQ(parse_request(lflf, step).error, 400);
    EXPECT_EQ(parse_request(fold, step).error, 400);
  }
}

TEST(Codec, RequestLineChecksHoldWhereverTheReadsSplitTheBytes) {
  // The request line is checked from LF to LF: a split between the two spaces of a repeated
  // space, or between the CR and the LF, must not hide anything.
  const std::string lead = "\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n";  // an empty line first is allowed
  const std::string twice = "GET  /a HTTP/1.1\r\nHost: h\r\n\r\n";
  const std::string twice_late = "GET /a  HTTP/1.1\r\nHost: h\r\n\r\n";
  const std::string bare = "GET /a HTTP/1.1\nHost: h\r\n\r\n";
  const std::string cr_inside = "GET /a HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n";
  const std::string nul_inside = std::string("GET /a HTTP/1.1\r\nHost: h\r\nX: abcdefghij") + '\0' +
                                 "k\r\n\r\n";
  for (std::size_t step = 1; step <= twice.size(); ++step) {
    SCOPED_TRACE(step);
    auto l = parse_request(lead, step);
    EXPECT_TRUE(l.complete);
    EXPECT_EQ(l.error, 0);
    EXPECT_EQ(parse_request(twice, step).error, 400);
    EXPECT_EQ(parse_request(twice_late, step).error, 400);
    EXPECT_EQ(parse_request(bare, step).error, 400);
    EXPECT_EQ(parse_request(cr_inside, step).error, 400);
    EXPECT_EQ(parse_request(nul_inside, step).error, 400);
  }
}

TEST(Codec, StripHopByHopCommonCaseAndRemoveIf) {
  ResponseHeader r = ResponseHeader::build(200);
  r.append_header("Connection", "keep-alive");
  r.append_header("Content-Type", "text/plain");
  r.append_header("Transfer-Encoding", "chunked");
  r.append_header("keep-alive", "timeout=5");
  r.append_header("Proxy-Connection", "close");
  r.append_header("X-Keep", "1");
  strip_hop_by_hop(r.headers());
  std::string out;
  serialize_response_head(r, out);
  EXPECT_EQ(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Keep: 1\r\n\r\n");
  EXPECT_EQ(r.headers().byte_size(), std::size_t{12 + 10 + 6 + 1}) << "names and values left";
  EXPECT_EQ(r.headers().remove_if([](const HeaderMap::Field& f) { return f.value == "1"; }), 1u);
  EXPECT_EQ(r.headers().size(), 1u);
  EXPECT_EQ(r.headers().get("content-type"), "text/plain");
}

TEST(Codec, ChunkedBodyMustEndWithCrlfCrlfWhateverTheFeedSizes) {
  const std::string good = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
  const std::string bare = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "5\r\nhello\r\n0\r\n\n";
  for (std::size_t step : {1u, 2u, 3u, 5u, 1000u}) {
    auto g = parse_request(good, step);
    EXPECT_TRUE(g.complete) << step;
    EXPECT_EQ(g.body, "hello") << step;
    auto b = parse_request(bare, step);
    EXPECT_FALSE(b.complete) << step;
    EXPECT_EQ(b.error, 400) << step;
  }
}

TEST(Codec, ChunkExtensionsFollowTheGrammarWithoutWhitespace) {
  auto body = [](const std::string& size_line) {
    return parse_request("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + size_line +
                         "\r\nhello\r\n0\r\n\r\n");
  };
  for (const char* ok : {"5;a", "5;a=1", "5;a=1;b", "5;a;b=2", "5;a=\"x y;z\"", "5;a=\"\";b"}) {
    auto r = body(ok);
    EXPECT_TRUE(r.complete) << ok;
    EXPECT_EQ(r.body, "hello") << ok;
  }
  for (const char* bad : {"5 ;a", "5; a", "5;a =1", "5;=1", "5;a=", "5;a=\"x\\\"y\"", "5;a=\"x\"b", "5;", "5;a=\"x"})
    EXPECT_EQ(body(bad).error, 400) << bad;
}

TEST(Codec, FramingFieldsInTrailersAreRefused) {
  for (const char* f : {"Content-Length: 5", "transfer-encoding: chunked", "Host: other"}) {
    auto r = parse_request("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "5\r\nhello\r\n0\r\n" + std::string(f) + "\r\n\r\n");
    EXPECT_EQ(r.error, 400) << f;
  }
  EXPECT_TRUE(parse_request("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n").complete);
}

TEST(Codec, RequestTargetFormsAndMethods) {
  EXPECT_TRUE(parse_request("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n").complete);
  EXPECT_TRUE(parse_request("CONNECT [::1]:443 HTTP/1.1\r\nHost: h\r\n\r\n").complete);
  EXPECT_EQ(parse_request("CONNECT /x HTTP/1.1\r\nHost: h\r\n\r\n").error, 400);
  EXPECT_EQ(parse_request("CONNECT h HTTP/1.1\r\nHost: h\r\n\r\n").error, 400);
  EXPECT_EQ(parse_request("GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n").error, 400);
  auto abs = parse_request("GET HTTP://a.example?q HTTP/1.1\r\nHost: b\r\n\r\n");
  ASSERT_TRUE(abs.complete);
  EXPECT_EQ(abs.head.uri(), "/?q");
  EXPECT_EQ(abs.head.headers().get("host").value(), "a.example");
  EXPECT_EQ(parse_request("FOO / HTTP/1.1\r\nHost: h\r\n\r\n").error, 501);
  EXPECT_EQ(parse_request("M-SEARCH * HTTP/1.1\r\nHost: h\r\n\r\n").error, 400);  // * is OPTIONS only
  EXPECT_TRUE(parse_request("M-SEARCH / HTTP/1.1\r\nHost: h\r\n\r\n").complete);
  // The HTTP/2 preface on an HTTP/1 listener is a bad request, said so in the log.
  Parser p = req_parser();
  std::string pri = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  EXPECT_EQ(p.feed(pri.data(), pri.size()).event, Event::Error);
  EXPECT_EQ(p.error_status(), 400);
  EXPECT_NE(p.error_reason().find("HTTP/2"), std::string_view::npos) << p.error_reason();
}

TEST(Codec, TabsAfterFramingValuesAreRefused) {
  EXPECT_EQ(parse_request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\t\r\n\r\nhello").error, 400);
  EXPECT_TRUE(parse_request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\t5 \r\n\r\nhello").complete);
  EXPECT_TRUE(parse_request("GET / HTTP/1.1\r\nHost: h\r\nX-A: v\t\r\n\r\n").complete);
}

TEST(Codec, LongTargetIs414EvenBeforeItsLineEnds) {
  ParserLimits l;
  l.max_target_bytes = 100;
  l.max_header_bytes = 400;
  // Fed in small reads, the line never ends inside the header limit.
  const std::string in = "GET /" + std::string(1000, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n";
  EXPECT_EQ(parse_request(in, 7, l).error, 414);
  EXPECT_EQ(parse_request(in, 1 << 20, l).error, 414);
  // A long field line is 431.
  const std::string field = "GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(1000, 'b') + "\r\n\r\n";
  EXPECT_EQ(parse_request(field, 7, l).error, 431);
}

TEST(Codec, ResponseStatusLine) {
  auto status = [](const std::string& line, std::uint16_t* code = nullptr) {
    Parser p(Kind::Response, ParserLimits{});
    std::string in = line + "\r\nContent-Length: 0\r\n\r\n";
    auto s = p.feed(in.data(), in.size());
    if (code) *code = p.status();
    return s.event == Event::Headers ? 0 : p.error_status();
  };
  std::uint16_t code = 0;
  EXPECT_EQ(status("HTTP/1.1 200 OK", &code), 0);
  EXPECT_EQ(code, 200);
  EXPECT_EQ(status("HTTP/1.0 404", &code), 0);
  EXPECT_EQ(code, 404);
  EXPECT_EQ(status("HTTP/1.1 599 "), 0);
  for (const char* bad : {"HTTP/1.1 20 OK", "HTTP/1.1 2000 OK", "HTTP/1.1 099 Low", "HTTP/2.0 200 OK",
                          "HTTP/1.1  200 OK", "http/1.1 200 OK", "HTTP/1.1 200 O\x01K", "HTTP/1.1 200OK"})
    EXPECT_EQ(status(bad), 502) << bad;
}

TEST(Codec, ManyHostFieldsAreRefusedWhateverTheirNumber) {
  ParserLimits l;
  l.max_header_count = 1000;
  for (int n : {2, 255, 256, 257, 513}) {
    std::string in = "GET / HTTP/1.1\r\n";
    for (int k = 0; k < n; ++k) in += "Host: h\r\n";
    EXPECT_EQ(parse_request(in + "\r\n", 1 << 20, l).error, 400) << n;
  }
}

// Field lines of every length around the 16-byte steps of the parser's fast path, with names and
// values drawn from an alphabet that mixes the usual bytes with the ones that need a closer look
// (other token characters, the colon, whitespace, controls, DEL, obs-text): each is accepted or
// refused as RFC 9112 says, and an accepted one yields the name and the trimmed value.
TEST(Codec, FieldLinesOfEveryShapeAgreeWithTheGrammar) {
  const std::string alphabet = std::string("aZ9-aZ9-aZ9-_.!:  \t\"(") + '\x01' + '\x7f' + '\x80';
  auto tchar = [](unsigned char c) {
    return std::isalnum(c) ||
           std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
  };
  auto vchar = [](unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); };
  std::mt19937 rng(12345);
  int accepted = 0, refused = 0;
  for (int k = 0; k < 20000; ++k) {
    const std::size_t len = 1 + rng() % 48;
    std::string line;
    for (std::size_t i = 0; i < len; ++i) line += alphabet[rng() % alphabet.size()];
    if (k % 3 == 0) {  // most real lines: "Name: value"
      const std::size_t cut = rng() % len;
      line = std::string("X-Name-") + std::to_string(k).substr(0, cut % 9) + ": " + line;
    }
    // The grammar, byte by byte.
    std::size_t i = 0;
    while (i < line.size() && tchar(static_cast<unsigned char>(line[i]))) ++i;
    bool ok = i > 0 && i < line.size() && line[i] == ':';
    std::string name, value;
    if (ok) {
      name = line.substr(0, i);
      std::size_t v = i + 1, end = line.size();
      while (v < end && (line[v] == ' ' || line[v] == '\t')) ++v;
      while (end > v && (line[end - 1] == ' ' || line[end - 1] == '\t')) --end;
      value = line.substr(v, end - v);
      for (std::size_t j = v; j < end; ++j) ok = ok && vchar(static_cast<unsigned char>(line[j]));
    }
    // Names with rules of their own are left out.
    std::string lower = name;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == "host" || lower == "content-length" || lower == "transfer-encoding" ||
        lower == "connection" || lower == "upgrade" || lower == "te")
      continue;
    auto r = parse_request("GET / HTTP/1.1\r\nHost: h\r\n" + line + "\r\n\r\n");
    if (ok) {
      ++accepted;
      ASSERT_TRUE(r.complete) << "refused: [" << line << "]";
      ASSERT_EQ(r.head.headers().size(), 2u) << line;
      EXPECT_EQ(r.head.headers()[1].name, name) << line;
      EXPECT_EQ(r.head.headers()[1].value, value) << line;
    } else {
      ++refused;
      EXPECT_EQ(r.error, 400) << "accepted: [" << line << "]";
    }
  }
  EXPECT_GT(accepted, 1000);
  EXPECT_GT(refused, 1000);
}
