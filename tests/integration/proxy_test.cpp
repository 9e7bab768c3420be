// HTTP/1.1 proxying over real sockets: methods, framing, keep-alive and pooling.
#include "integration/helpers.hpp"

using namespace itest;
using portico::testing::Client;
using portico::testing::Origin;
using portico::testing::OriginRequest;
using portico::testing::OriginResponse;
using portico::testing::RawOrigin;

namespace {
Origin::Handler echo() {
  return [](const OriginRequest& r) {
    OriginResponse o;
    o.body = r.method + " " + r.target + " [" + r.body + "]";
    o.headers.emplace_back("X-Origin-Saw-Host", r.header("host"));
    return o;
  };
}
}  // namespace

TEST(Proxy, GetIsForwardedWithPathQueryAndHost) {
  Origin origin(echo());
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  auto r = c.request("GET", "/a/b?c=d", {{"Host", "example.test"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(r->body, "GET /a/b?c=d []");
  EXPECT_EQ(r->header("X-Origin-Saw-Host"), "example.test");
}

TEST(Proxy, HeadGetsHeadersWithoutBody) {
  Origin origin(Origin::text("0123456789"));
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  auto r = c.request("HEAD", "/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(r->header("Content-Length"), "10");
  EXPECT_TRUE(r->body.empty());
  // The connection is still in sync: a GET after the HEAD works.
  auto g = c.get("/");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->body, "0123456789");
}

TEST(Proxy, PostWithContentLength) {
  Origin origin(echo());
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  auto r = c.request("POST", "/submit", {}, "hello body");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "POST /submit [hello body]");
  auto seen = origin.received();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].header("Content-Length"), "10");
}

TEST(Proxy, ChunkedUploadIsForwardedChunked) {
  Origin origin(echo());
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  ASSERT_TRUE(c.send("POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "POST /up [hello, world]");
  auto seen = origin.received();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].header("Transfer-Encoding"), "chunked");
  EXPECT_FALSE(seen[0].has_header("Content-Length"));
}

TEST(Proxy, ChunkedResponseIsRelayed) {
  Origin origin([](const OriginRequest&) {
    OriginResponse o;
    o.body = std::string(100000, 'z');
    o.chunked = true;
    return o;
  });
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  auto r = c.get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("Transfer-Encoding"), "chunked");
  EXPECT_EQ(r->body, std::string(100000, 'z'));
}

TEST(Proxy, KeepAliveOnBothSidesReusesOneUpstreamConnection) {
  Origin origin(echo());
  auto fwd = std::make_shared<Forward>(origin.addr());
  pt::TestProxy px(fwd);
  Client c(px.port());
  for (int i = 0; i < 20; ++i) {
    auto r = c.get("/n" + std::to_string(i));
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->body, "GET /n" + std::to_string(i) + " []");
    EXPECT_TRUE(r->keep_alive);
  }
  ASSERT_TRUE(fwd->logged.wait_for(20));
  EXPECT_EQ(origin.connections(), 1u);
  EXPECT_EQ(px.service().upstream_connections_opened(), 1u);
  EXPECT_EQ(px.service().upstream_connections_reused(), 19u);
  std::lock_guard lk(fwd->mu);
  EXPECT_TRUE(fwd->last_reused);
}

TEST(Proxy, UpstreamConnectionCloseIsNotPooled) {
  Origin origin([](const OriginRequest&) {
    OriginResponse o;
    o.body = "bye";
    o.close = true;
    return o;
  });
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  for (int i = 0; i < 3; ++i) {
    auto r = c.get("/");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "bye");
    EXPECT_TRUE(r->keep_alive) << "the client connection stays up";
  }
  EXPECT_EQ(origin.connections(), 3u);
}

TEST(Proxy, PipelinedRequestsAreAnsweredInOrder) {
  Origin origin(echo());
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  ASSERT_TRUE(c.send("GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\n"
                     "Content-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: h\r\n\r\n"));
  for (auto want : {"GET /1 []", "POST /2 [abc]", "GET /3 []"}) {
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, want);
  }
}

TEST(Proxy, HopByHopFieldsAreRemovedAndOthersKeepCaseAndOrder) {
  Origin origin([](const OriginRequest& r) {
    OriginResponse o;
    std::string names;
    for (auto& [n, v] : r.headers) names += n + ";";
    o.body = names;
    o.headers.emplace_back("Keep-Alive", "timeout=5");
    o.headers.emplace_back("X-Resp-Case", "v");
    return o;
  });
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  auto r = c.request("GET", "/", {{"Host", "h"}, {"X-First", "1"}, {"Connection", "X-Secret"},
                                  {"X-Secret", "s"}, {"Keep-Alive", "300"}, {"x-LAST", "2"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "Host;X-First;x-LAST;");
  EXPECT_FALSE(r->has_header("Keep-Alive"));
  EXPECT_TRUE(r->has_header("X-Resp-Case"));
}

TEST(Proxy, Http10ClientGetsALengthOrACloseDelimitedBody) {
  Origin origin([](const OriginRequest&) {
    OriginResponse o;
    o.body = "chunked upstream";
    o.chunked = true;
    return o;
  });
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  ASSERT_TRUE(c.send("GET / HTTP/1.0\r\n\r\n"));
  int fd = c.fd();
  std::string all = read_until_close(fd);
  EXPECT_EQ(all.rfind("HTTP/1.0 200", 0), 0u) << all;
  EXPECT_EQ(all.find("chunked\r\n"), std::string::npos) << "no chunked framing to a 1.0 client";
  EXPECT_NE(all.find("\r\n\r\nchunked upstream"), std::string::npos) << all;
}

TEST(Proxy, ContinueIsRelayedBeforeTheFinalResponse) {
  pt::RawOrigin origin([](int fd) {
    std::string extra;
    std::string head = pt::read_head(fd, extra);
    if (head.find("Expect: 100-continue") == std::string::npos) return;
    pt::write_all(fd, "HTTP/1.1 100 Continue\r\n\r\n");
    std::string body = extra;
    char b[64];
    while (body.size() < 4) {
      ssize_t n = ::recv(fd, b, sizeof b, 0);
      if (n <= 0) return;
      body.append(b, static_cast<std::size_t>(n));
    }
    pt::write_all(fd, "HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\n" + body);
  });
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  ASSERT_TRUE(c.send("PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"));
  auto interim = c.read_response();
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->status, 100u);
  ASSERT_TRUE(c.send("data"));
  auto final_resp = c.read_response();
  ASSERT_TRUE(final_resp);
  EXPECT_EQ(final_resp->status, 201u);
  EXPECT_EQ(final_resp->body, "data");
}

TEST(Proxy, NoContentAndNotModifiedHaveNoBody) {
  Origin origin([](const OriginRequest& r) {
    OriginResponse o;
    o.status = r.target == "/204" ? 204 : 304;
    return o;
  });
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  for (auto path : {"/204", "/304", "/204"}) {
    auto r = c.get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_TRUE(r->body.empty());
    EXPECT_FALSE(r->has_header("Transfer-Encoding"));
  }
}

TEST(Proxy, CloseDelimitedUpstreamBodyIsRechunkedForKeepAliveClients) {
  pt::RawOrigin origin([](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    pt::write_all(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end");
  });
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  for (int i = 0; i < 2; ++i) {
    auto r = c.get("/");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "until the end");
    EXPECT_EQ(r->header("Transfer-Encoding"), "chunked");
  }
}

TEST(Proxy, MultipleWorkersServeConcurrentClients) {
  Origin origin(echo());
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), {}, 2);
  std::vector<std::thread> ts;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      Client c(px.port());
      for (int i = 0; i < 25; ++i) {
        auto r = c.get("/t" + std::to_string(t));
        if (r && r->body == "GET /t" + std::to_string(t) + " []") ++good;
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(good.load(), 100);
}

TEST(Proxy, StaleReusedConnectionIsRetriedOnAFreshOne) {
  // The origin closes every connection right after its response, without saying so: the
  // proxy pools it, and the next request finds it dead.
  RawOrigin origin([](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh");
  });
  auto fwd = std::make_shared<Forward>(origin.addr());
  pt::TestProxy px(fwd);
  Client c(px.port());
  for (int i = 0; i < 3; ++i) {
    auto r = c.get("/");
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->status, 200u);
    EXPECT_EQ(r->body, "fresh");
  }
  ASSERT_TRUE(fwd->logged.wait_for(3));
  std::lock_guard lk(fwd->mu);
  EXPECT_FALSE(fwd->last_error.has_value());
  EXPECT_LE(fwd->last_retries, 1u);
}
