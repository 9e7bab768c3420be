// h1 <-> h2 head translation (RFC 9113 §8.2, §8.3) and the Content-Length rule (§8.1.1).
#include <gtest/gtest.h>

#include "http2/translate.hpp"

using namespace portico;
using namespace portico::h2;

namespace {
HeaderMap fields(std::initializer_list<std::pair<std::string_view, std::string_view>> l) {
  HeaderMap h;
  for (auto& [n, v] : l) h.append(n, v);
  return h;
}
HeaderMap get_req(std::initializer_list<std::pair<std::string_view, std::string_view>> extra = {}) {
  HeaderMap h = fields({{":method", "GET"},
                        {":scheme", "https"},
                        {":authority", "example.com"},
                        {":path", "/a?b=1"}});
  for (auto& [n, v] : extra) h.append(n, v);
  return h;
}
std::string reason(const Result<void>& r) {
  return r ? std::string() : std::string(r.error().context());
}
}  // namespace

TEST(H2Translate, RequestAuthorityBecomesHostAndFieldsKeepOrder) {
  RequestHeader req;
  std::string scheme;
  auto r = to_request(get_req({{"accept", "*/*"}, {"x-a", "1"}}), req, &scheme);
  ASSERT_TRUE(r) << reason(r);
  EXPECT_EQ(req.method(), "GET");
  EXPECT_EQ(req.uri(), "/a?b=1");
  EXPECT_EQ(req.version(), Version::Http2);
  EXPECT_EQ(scheme, "https");
  ASSERT_EQ(req.headers().size(), 3u);
  EXPECT_EQ(req.headers()[0].name, "host");
  EXPECT_EQ(req.host(), "example.com");
  EXPECT_EQ(req.headers()[1].name, "accept");
  EXPECT_EQ(req.headers()[2].value, "1");
}

TEST(H2Translate, AuthorityWinsOverHostAndHostIsKeptWithoutAuthority) {
  RequestHeader req;
  ASSERT_TRUE(to_request(get_req({{"host", "other.example"}}), req));
  EXPECT_EQ(req.headers().count("host"), 1u);
  EXPECT_EQ(req.host(), "example.com");

  auto no_auth =
      fields({{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {"host", "h.example"}});
  ASSERT_TRUE(to_request(no_auth, req));
  EXPECT_EQ(req.host(), "h.example");
}

TEST(H2Translate, CookieCrumbsAreJoined) {
  RequestHeader req;
  ASSERT_TRUE(to_request(
      get_req({{"cookie", "a=1"}, {"x", "y"}, {"cookie", "b=2"}, {"cookie", "c=3"}}), req));
  EXPECT_EQ(req.headers().count("cookie"), 1u);
  EXPECT_EQ(req.headers().get("cookie").value(), "a=1; b=2; c=3");
  // The joined field takes the place of the first crumb.
  EXPECT_EQ(req.headers()[1].name, "cookie");
  EXPECT_EQ(req.headers()[2].name, "x");
}

TEST(H2Translate, TakenRequestGetsTheFieldListItselfAndGivesBackItsMemory) {
  // take_request is to_request without the copy: the received list, edited in place, becomes
  // the request's; the list gets the memory of the head it replaced.
  RequestHeader req;
  req.headers().append("x-old", std::string(200, 'o'));
  HeaderMap in = get_req({{"host", "client-sent.example"},
                          {"cookie", "a=1"},
                          {"accept", "*/*"},
                          {"cookie", "b=2"},
                          {"host", "again.example"}});
  std::string scheme;
  auto r = take_request(in, req, &scheme);
  ASSERT_TRUE(r) << reason(r);
  EXPECT_TRUE(in.empty());
  EXPECT_TRUE(in.has_capacity());
  EXPECT_EQ(scheme, "https");
  EXPECT_EQ(req.method(), "GET");
  EXPECT_EQ(req.uri(), "/a?b=1");
  const HeaderMap& h = req.headers();
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[0].name, "host");
  EXPECT_EQ(h[0].value, "example.com");
  EXPECT_EQ(h[1].name, "cookie");
  EXPECT_EQ(h[1].value, "a=1; b=2");
  EXPECT_EQ(h[2].name, "accept");
  EXPECT_EQ(h.byte_size(), std::size_t{4 + 11 + 6 + 8 + 6 + 3});

  // A malformed list is left as it was and the request untouched by the failure.
  HeaderMap bad = get_req({{"Upper", "x"}});
  EXPECT_EQ(reason(take_request(bad, req)), "uppercase field name");
  EXPECT_EQ(bad.size(), 5u);
}

TEST(H2Translate, ChecksNoteContentLengthAndHead) {
  // What the session reads off the checks instead of walking the head again.
  HeadSeen seen;
  ASSERT_EQ(request_problem(get_req({{"accept", "*/*"}}), &seen), nullptr);
  EXPECT_FALSE(seen.content_length);
  EXPECT_FALSE(seen.head);
  HeaderMap head = fields({{":method", "HEAD"},
                           {":scheme", "https"},
                           {":path", "/"},
                           {"x", "1"},
                           {"content-length", "0"}});
  ASSERT_EQ(request_problem(head, &seen), nullptr);
  EXPECT_TRUE(seen.content_length);
  EXPECT_TRUE(seen.head);
  HeadSeen r;
  std::uint16_t code = 0;
  ASSERT_EQ(response_problem(fields({{":status", "200"}, {"content-length", "5"}}), code, &r),
            nullptr);
  EXPECT_EQ(code, 200);
  EXPECT_TRUE(r.content_length);
  HeadSeen none;
  ASSERT_EQ(response_problem(fields({{":status", "204"}, {"content-type", "x"}}), code, &none),
            nullptr);
  EXPECT_FALSE(none.content_length);
  // A field whose name only contains the word does not count.
  HeadSeen near;
  ASSERT_EQ(response_problem(fields({{":status", "200"}, {"x-content-length", "5"}}), code, &near),
            nullptr);
  EXPECT_FALSE(near.content_length);
}

TEST(H2Translate, MalformedRequestsAreRejected) {
  RequestHeader req;
  struct Case {
    const char* what;
    HeaderMap h;
  };
  std::vector<Case> cases;
  cases.push_back({"duplicate :path", get_req({})});
  cases.back().h =
      fields({{":method", "GET"}, {":scheme", "https"}, {":path", "/"}, {":path", "/x"}});
  cases.push_back({"missing :method", fields({{":scheme", "https"}, {":path", "/"}})});
  cases.push_back({"missing :scheme", fields({{":method", "GET"}, {":path", "/"}})});
  cases.push_back({"missing :path", fields({{":method", "GET"}, {":scheme", "https"}})});
  cases.push_back(
      {"empty :path", fields({{":method", "GET"}, {":scheme", "https"}, {":path", ""}})});
  cases.push_back({"* on GET", fields({{":method", "GET"}, {":scheme", "https"}, {":path", "*"}})});
  cases.push_back({"response pseudo", get_req({})});
  cases.back().h =
      fields({{":method", "GET"}, {":scheme", "https"}, {":path", "/"}, {":status", "200"}});
  cases.push_back(
      {"unknown pseudo",
       fields({{":method", "GET"}, {":scheme", "https"}, {":path", "/"}, {":foo", "1"}})});
  cases.push_back({"pseudo after regular",
                   fields({{":method", "GET"}, {"a", "b"}, {":scheme", "https"}, {":path", "/"}})});
  cases.push_back({"uppercase name", get_req({{"X-Upper", "1"}})});
  cases.push_back({"invalid name", get_req({{"a b", "1"}})});
  cases.push_back({"CR in value", get_req({{"a", "x\ry"}})});
  cases.push_back({"leading space", get_req({{"a", " x"}})});
  cases.push_back({"connection", get_req({{"connection", "close"}})});
  cases.push_back({"keep-alive", get_req({{"keep-alive", "5"}})});
  cases.push_back({"proxy-connection", get_req({{"proxy-connection", "x"}})});
  cases.push_back({"transfer-encoding", get_req({{"transfer-encoding", "chunked"}})});
  cases.push_back({"upgrade", get_req({{"upgrade", "websocket"}})});
  cases.push_back({"te gzip", get_req({{"te", "gzip"}})});
  cases.push_back({"te list", get_req({{"te", "trailers, gzip"}})});
  cases.push_back(
      {"userinfo",
       fields({{":method", "GET"}, {":scheme", "https"}, {":authority", "u@h"}, {":path", "/"}})});
  // What the request becomes upstream must be valid HTTP/1 (as nghttp2 no longer checks it).
  auto with = [](std::string_view name, std::string_view value) {
    std::vector<std::pair<std::string, std::string>> f = {
        {":method", "GET"}, {":scheme", "https"}, {":authority", "h"}, {":path", "/"}};
    for (auto& [n, v] : f)
      if (n == name) v = value;
    HeaderMap h;
    for (auto& [n, v] : f) h.append(n, v);
    return h;
  };
  cases.push_back({"space in :path", with(":path", "/a b")});
  cases.push_back({"control character in :path", with(":path", std::string("/a\x01", 3))});
  cases.push_back({"DEL in :path", with(":path", "/a\x7f")});
  cases.push_back({"non-ASCII :path", with(":path", "/caf\xc3\xa9")});
  cases.push_back({"fragment in :path", with(":path", "/a#frag")});
  cases.push_back({"space in :authority", with(":authority", "h x")});
  cases.push_back({"slash in :authority", with(":authority", "h/x")});
  cases.push_back({"port not a number", with(":authority", "h:8o")});
  cases.push_back({"empty host before a port", with(":authority", ":80")});
  cases.push_back({":scheme not a scheme", with(":scheme", "1http")});
  cases.push_back({"space in :method", with(":method", "G T")});
  cases.push_back({"control character in a value", get_req({{"a", std::string("x\x01y", 3)}})});
  cases.push_back({"DEL in a value", get_req({{"a", "x\x7fy"}})});
  cases.push_back({"NUL in a value", get_req({{"a", std::string("x\0y", 3)}})});
  for (auto& c : cases) {
    EXPECT_NE(request_problem(c.h), nullptr) << c.what;
    auto r = to_request(c.h, req);
    ASSERT_FALSE(r) << c.what;
    EXPECT_EQ(r.error().type(), ErrorType::InvalidH2) << c.what;
    EXPECT_EQ(r.error().source(), ErrorSource::Downstream) << c.what;
  }
  EXPECT_TRUE(to_request(get_req({{"te", "trailers"}}), req));
  // Valid edges: a tab inside a value, obs-text in a value, an IPv6 authority with a port, a
  // query with every sub-delimiter, a scheme with '+', '-' and '.'.
  EXPECT_EQ(request_problem(get_req({{"a", "x\ty"}, {"b", "caf\xc3\xa9"}})), nullptr);
  EXPECT_EQ(request_problem(with(":authority", "[::1]:8443")), nullptr);
  EXPECT_EQ(request_problem(with(":path", "/p?a=1&b=$!'()*+,;=:@%20~")), nullptr);
  EXPECT_EQ(request_problem(with(":scheme", "coap+tcp-x.y")), nullptr);
  ASSERT_TRUE(to_request(with(":path", "/p?q=1"), req, nullptr, /*checked=*/true));
  EXPECT_EQ(req.uri(), "/p?q=1");
  EXPECT_EQ(req.headers().get("host").value(), "h");
  auto opts =
      fields({{":method", "OPTIONS"}, {":scheme", "https"}, {":authority", "h"}, {":path", "*"}});
  EXPECT_TRUE(to_request(opts, req));
}

TEST(H2Translate, ConnectTakesAuthorityOnly) {
  RequestHeader req;
  std::string scheme = "x";
  ASSERT_TRUE(to_request(fields({{":method", "CONNECT"}, {":authority", "db.example:5432"}}), req,
                         &scheme));
  EXPECT_EQ(req.method(), "CONNECT");
  EXPECT_EQ(req.uri(), "db.example:5432");
  EXPECT_EQ(req.host(), "db.example:5432");
  EXPECT_EQ(scheme, "");
  EXPECT_FALSE(to_request(fields({{":method", "CONNECT"}}), req));
  EXPECT_FALSE(
      to_request(fields({{":method", "CONNECT"}, {":authority", "h:1"}, {":path", "/"}}), req));
  EXPECT_FALSE(to_request(
      fields({{":method", "CONNECT"}, {":authority", "h:1"}, {":scheme", "https"}}), req));
}

TEST(H2Translate, RequestToH2StripsConnectionSpecificFields) {
  auto req = RequestHeader::build("POST", "/submit?x=1");
  req.append_header("Host", "api.example");
  req.append_header("Connection", "keep-alive, X-Hop");
  req.append_header("X-Hop", "1");
  req.append_header("Keep-Alive", "timeout=5");
  req.append_header("Proxy-Connection", "keep-alive");
  req.append_header("Transfer-Encoding", "chunked");
  req.append_header("Upgrade", "h2c");
  req.append_header("TE", "gzip, trailers");
  req.append_header("Content-Type", "application/json");
  req.append_header("Cookie", "a=1; b=2");
  HeaderMap out;
  from_request(req, out, "https");
  ASSERT_GE(out.size(), 4u);
  EXPECT_EQ(out[0].name, ":method");
  EXPECT_EQ(out[0].value, "POST");
  EXPECT_EQ(out[1].name, ":scheme");
  EXPECT_EQ(out[2].name, ":authority");
  EXPECT_EQ(out[2].value, "api.example");
  EXPECT_EQ(out[3].name, ":path");
  EXPECT_EQ(out[3].value, "/submit?x=1");
  for (auto n : {"host", "connection", "x-hop", "keep-alive", "proxy-connection",
                 "transfer-encoding", "upgrade"})
    EXPECT_FALSE(out.contains(n)) << n;
  EXPECT_EQ(out.get("te").value(), "trailers");
  EXPECT_EQ(out[4].name, "content-type");  // lowercased
  EXPECT_EQ(out.get("cookie").value(), "a=1; b=2");

  // What from_request builds, to_request accepts.
  RequestHeader back;
  auto r = to_request(out, back);
  ASSERT_TRUE(r) << reason(r);
  EXPECT_EQ(back.host(), "api.example");
  EXPECT_EQ(back.uri(), "/submit?x=1");
}

TEST(H2Translate, CookieSplitAndTeWithoutTrailersDropped) {
  auto req = RequestHeader::build("GET", "/");
  req.append_header("Host", "h");
  req.append_header("TE", "gzip");
  req.append_header("Cookie", "a=1; b=2;c=3");
  HeaderMap out;
  from_request(req, out, "http", /*split_cookies=*/true);
  EXPECT_FALSE(out.contains("te"));
  auto crumbs = out.get_all("cookie");
  ASSERT_EQ(crumbs.size(), 3u);
  EXPECT_EQ(crumbs[0], "a=1");
  EXPECT_EQ(crumbs[2], "c=3");
  RequestHeader back;
  ASSERT_TRUE(to_request(out, back));
  EXPECT_EQ(back.headers().get("cookie").value(), "a=1; b=2; c=3");
}

TEST(H2Translate, AbsoluteFormTargetAndConnect) {
  auto req = RequestHeader::build("GET", "http://origin.example:8080/p?q");
  HeaderMap out;
  from_request(req, out, "http");
  EXPECT_EQ(out.get(":authority").value(), "origin.example:8080");
  EXPECT_EQ(out.get(":path").value(), "/p?q");

  auto c = RequestHeader::build("CONNECT", "db:5432");
  HeaderMap co;
  from_request(c, co);
  EXPECT_EQ(co.size(), 2u);
  EXPECT_EQ(co.get(":authority").value(), "db:5432");
  EXPECT_FALSE(co.contains(":path"));
  EXPECT_FALSE(co.contains(":scheme"));
}

TEST(H2Translate, Responses) {
  auto resp = ResponseHeader::build(404);
  resp.append_header("Content-Type", "text/plain");
  resp.append_header("Connection", "close");
  resp.append_header("Set-Cookie", "a=1");
  resp.append_header("Set-Cookie", "b=2");
  resp.append_header("Transfer-Encoding", "chunked");
  HeaderMap out;
  ASSERT_TRUE(from_response(resp, out));
  EXPECT_EQ(out[0].name, ":status");
  EXPECT_EQ(out[0].value, "404");
  EXPECT_FALSE(out.contains("connection"));
  EXPECT_FALSE(out.contains("transfer-encoding"));
  EXPECT_EQ(out.get_all("set-cookie").size(), 2u);  // never joined

  ResponseHeader back;
  back.append_header("x-left-from-before", "1");
  const std::size_t fields_sent = out.size();
  ASSERT_TRUE(take_response(out, back));
  EXPECT_EQ(back.status(), 404);
  EXPECT_EQ(back.version(), Version::Http2);
  EXPECT_EQ(back.headers().get("content-type").value(), "text/plain");
  // The received fields became the head, without ":status"; the old head's map came back empty.
  EXPECT_EQ(back.headers().size(), fields_sent - 1);
  EXPECT_FALSE(back.headers().contains(":status"));
  EXPECT_FALSE(back.headers().contains("x-left-from-before"));
  EXPECT_EQ(back.headers().get_all("set-cookie").size(), 2u);
  std::size_t bytes = 0;
  for (auto f : back.headers()) bytes += f.name.size() + f.value.size();
  EXPECT_EQ(back.headers().byte_size(), bytes);
  EXPECT_EQ(out.size(), 0u);
  EXPECT_EQ(out.byte_size(), 0u);

  EXPECT_FALSE(from_response(ResponseHeader::build(101), out));
  HeaderMap early;
  ASSERT_TRUE(from_response(ResponseHeader::build(103), early));
  ASSERT_TRUE(take_response(early, back));
  EXPECT_EQ(back.status(), 103);
}

TEST(H2Translate, MalformedResponsesAreRejected) {
  ResponseHeader r;
  for (auto h :
       {fields({}), fields({{":status", "20"}}), fields({{":status", "2000"}}),
        fields({{":status", "abc"}}), fields({{":status", "101"}}),
        fields({{":status", "200"}, {":status", "200"}}),
        fields({{":status", "200"}, {":path", "/"}}), fields({{"a", "b"}, {":status", "200"}}),
        fields({{":status", "200"}, {"Upper", "x"}}),
        fields({{":status", "200"}, {"connection", "x"}}),
        fields({{":status", "200"}, {"te", "trailers"}})}) {
    const std::size_t n = h.size();
    auto res = take_response(h, r);
    ASSERT_FALSE(res);
    EXPECT_EQ(res.error().source(), ErrorSource::Upstream);
    EXPECT_EQ(h.size(), n) << "a rejected list is left as it was";
  }
}

TEST(H2Translate, Trailers) {
  HeaderMap out;
  ASSERT_TRUE(to_trailers(fields({{"grpc-status", "0"}, {"grpc-message", "ok"}}), out, true));
  EXPECT_EQ(out.size(), 2u);
  EXPECT_FALSE(to_trailers(fields({{":status", "200"}}), out, true));
  EXPECT_FALSE(to_trailers(fields({{"Grpc-Status", "0"}}), out, true));

  HeaderMap t;
  t.append("Grpc-Status", "0");
  t.append("Connection", "close");
  HeaderMap sent;
  from_trailers(t, sent);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].name, "grpc-status");
}

TEST(H2Translate, ContentLengthAgainstData) {
  auto cl = ContentLength::from_fields(fields({{"content-length", "10"}}), false, false);
  ASSERT_TRUE(cl);
  EXPECT_TRUE(cl->known());
  EXPECT_TRUE(cl->add(4));
  EXPECT_FALSE(cl->complete());
  EXPECT_TRUE(cl->fits(6));
  EXPECT_FALSE(cl->fits(7));
  EXPECT_TRUE(cl->add(6));
  EXPECT_TRUE(cl->complete());
  EXPECT_FALSE(cl->add(1));  // one past the limit

  auto none = ContentLength::from_fields(fields({}), false, false);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->add(1 << 20));
  EXPECT_TRUE(none->complete());

  auto head =
      ContentLength::from_fields(fields({{"content-length", "10"}}), /*no_body=*/true, true);
  ASSERT_TRUE(head);
  EXPECT_TRUE(head->complete());
  EXPECT_FALSE(head->add(1));

  EXPECT_TRUE(ContentLength::from_fields(fields({{"content-length", "5, 5"}}), false, false));
  EXPECT_FALSE(ContentLength::from_fields(fields({{"content-length", "5, 6"}}), false, false));
  EXPECT_FALSE(ContentLength::from_fields(
      fields({{"content-length", "5"}, {"content-length", "6"}}), false, false));
  EXPECT_FALSE(ContentLength::from_fields(fields({{"content-length", "-1"}}), false, false));
  EXPECT_FALSE(ContentLength::from_fields(fields({{"content-length", "1x"}}), false, false));
  EXPECT_FALSE(ContentLength::from_fields(fields({{"content-length", ""}}), false, false));
}

// A field an HTTP/2 client sent never-indexed (RFC 7541 §7.1.3) stays so through the
// translation to portico's request and back to an HTTP/2 field list; cookie crumbs keep it.
TEST(H2Translate, NeverIndexedFieldsStaySo) {
  HeaderMap in;
  in.append(":method", "GET");
  in.append(":scheme", "https");
  in.append(":authority", "example.com");
  in.append(":path", "/");
  in.append("x-token", "t0k3n", true);
  in.append("cookie", "a=1", true);
  in.append("cookie", "b=2");
  in.append("accept", "*/*");
  RequestHeader r;
  ASSERT_TRUE(to_request(in, r));
  auto sensitive_of = [](const HeaderMap& h, std::string_view name) {
    for (auto f : h)
      if (iequals(f.name, name)) return f.sensitive;
    ADD_FAILURE() << "no " << name;
    return false;
  };
  EXPECT_TRUE(sensitive_of(r.headers(), "x-token"));
  EXPECT_TRUE(sensitive_of(r.headers(), "cookie")) << "joined from a never-indexed crumb";
  EXPECT_FALSE(sensitive_of(r.headers(), "accept"));
  HeaderMap out;
  from_request(r, out, "https", /*split_cookies=*/true);
  EXPECT_TRUE(sensitive_of(out, "x-token"));
  EXPECT_FALSE(sensitive_of(out, "accept"));
  for (auto f : out)
    if (f.name == "cookie") EXPECT_TRUE(f.sensitive) << f.value;
}
