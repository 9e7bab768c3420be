// HttpServerOptions::batch_upstream_sends and batch_response_sends: the HTTP/1 request heads a
// worker sends upstream in one round, and the ends of its keep-alive responses, go to the kernel
// in one io_uring call (core/send_batch.hpp).
#include "core/send_batch.hpp"
#include "integration/helpers.hpp"

#include <portico/testing/tls.hpp>

#include <sys/uio.h>

#include <map>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace itest {
namespace {

using portico::detail::SendBatch;
using pt::Client;
using pt::Origin;

/// `clients` connections each send `per_client` requests (the requests of a round all written
/// before any answer is read, so they reach the worker together); every answer must be the
/// origin's "batched".
void burst(std::uint16_t port, int clients, int per_client) {
  std::vector<int> fds;
  struct Close {
    std::vector<int>& fds;
    ~Close() {
      for (int fd : fds) ::close(fd);
    }
  } closer{fds};
  for (int i = 0; i < clients; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  for (int round = 0; round < per_client; ++round) {
    for (int i = 0; i < clients; ++i)
      ASSERT_TRUE(
          pt::write_all(fds[i], "GET /r" + std::to_string(i) + " HTTP/1.1\r\nHost: h\r\n\r\n"));
    for (int i = 0; i < clients; ++i) {
      std::string body;
      const std::string head = pt::read_head(fds[i], body);
      ASSERT_EQ(head.rfind("HTTP/1.1 200", 0), 0u)
          << "client " << i << ", round " << round << ": " << head;
      while (body.size() < 7) {
        char b[64];
        const ssize_t n = ::recv(fds[i], b, sizeof b, 0);
        ASSERT_GT(n, 0) << "client " << i << ", round " << round;
        body.append(b, static_cast<std::size_t>(n));
      }
      EXPECT_EQ(body, "batched");
    }
  }
}

bool batch_available() {
  bool available =
      false;  // (asked on a thread of its own: a ring is tied to the thread that made it)
  std::thread([&] { available = SendBatch::available(); }).join();
  return available;
}

constexpr int kClients = 32, kRounds = 4;
constexpr auto kSends = static_cast<std::uint64_t>(kClients * kRounds);

/// burst() through a proxy with `o` to `origin`: the sends the batches made meanwhile and the
/// io_uring_enter calls that carried them. The worker counts a flush's sends when the call
/// returns, which may be after the clients read them: waited for until `kSends` are in.
std::pair<std::uint64_t, std::uint64_t> counted_burst(const HttpServerOptions& o,
                                                      const Origin& origin) {
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), o);
  const auto sends0 = SendBatch::sends(), subs0 = SendBatch::submissions();
  burst(px.port(), kClients, kRounds);
  EXPECT_TRUE(eventually([&] { return SendBatch::sends() - sends0 >= kSends; }));
  return {SendBatch::sends() - sends0, SendBatch::submissions() - subs0};
}

TEST(SendBatch, HeadsOfOneRoundGoUpstreamTogetherAndEveryRequestIsAnswered) {
  if (!batch_available())
    GTEST_SKIP() << "io_uring is not available here (no liburing at build time, or refused)";
  Origin origin(Origin::text("batched"));
  HttpServerOptions o;
  o.batch_response_sends = false;  // the heads alone are counted
  const auto [sends, subs] = counted_burst(o, origin);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(sends, kSends) << "every head went through it";
  EXPECT_LT(subs, sends) << "some system call carried more than one head";
  EXPECT_EQ(origin.received().size(), static_cast<std::size_t>(kSends));
  for (const auto& r : origin.received()) EXPECT_EQ(r.header("host"), "h") << r.target;
}

TEST(SendBatch, OffSendsEachHeadAndResponseAlone) {
  Origin origin(Origin::text("batched"));
  HttpServerOptions o;
  o.batch_upstream_sends = false;
  o.batch_response_sends = false;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), o);
  const auto sends0 = SendBatch::sends();
  burst(px.port(), 8, 2);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(SendBatch::sends(), sends0);
  EXPECT_EQ(origin.received().size(), 16u);
}

TEST(SendBatch, ResponsesOfOneRoundGoToTheClientsTogether) {
  if (!batch_available())
    GTEST_SKIP() << "io_uring is not available here (no liburing at build time, or refused)";
  Origin origin(Origin::text("batched"));
  HttpServerOptions o;
  o.batch_upstream_sends = false;  // the responses alone are counted
  const auto [sends, subs] = counted_burst(o, origin);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(sends, kSends) << "every response went through it";
  EXPECT_LT(subs, sends) << "some system call carried more than one response";
}

// A response that ends its connection keeps the usual send, whose FIN goes with the last bytes.
TEST(SendBatch, AResponseThatClosesTheConnectionIsNotBatched) {
  if (!batch_available())
    GTEST_SKIP() << "io_uring is not available here (no liburing at build time, or refused)";
  Origin origin(Origin::text("batched"));
  HttpServerOptions o;
  o.batch_upstream_sends = false;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), o);
  const auto sends0 = SendBatch::sends();
  Client c(px.port());
  ASSERT_TRUE(c.send("GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(r->body, "batched");
  EXPECT_TRUE(c.closed_by_peer()) << "the connection ends after the response";
  EXPECT_EQ(SendBatch::sends(), sends0);
}

// A response body far larger than the client's socket takes at once, written by a hook in one
// call: the batch sends what fits, the rest waits for room the usual way, and every byte arrives
// in order.
class BigAnswer : public Forward {
 public:
  BigAnswer(SocketAddr origin, std::size_t size) : Forward(origin), body(pattern(size)) {}
  std::string body;
  task<Result<bool>> request_filter(Session& s, NoCtx&) override {
    if (s.req_header().uri() != "/big") co_return false;  // proxied
    if (auto r = co_await s.respond(200, body, "application/octet-stream"); !r) co_return r.error();
    co_return true;
  }
};

TEST(SendBatch, AResponseTheClientTakesInPartIsFinishedTheUsualWay) {
  if (!batch_available())
    GTEST_SKIP() << "io_uring is not available here (no liburing at build time, or refused)";
  Origin origin(Origin::text("unused"));
  auto app = std::make_shared<BigAnswer>(origin.addr(), 16 << 20);
  pt::TestProxy px(app, HttpServerOptions{});
  const auto incomplete0 = SendBatch::incomplete_sends();
  Client c(px.port());
  for (int i = 0; i < 2; ++i) {  // and the connection goes on
    ASSERT_TRUE(c.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n"));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u);
    ASSERT_EQ(r->body.size(), app->body.size());
    EXPECT_TRUE(r->body == app->body) << "the body arrived whole and in order";
  }
  EXPECT_GT(SendBatch::incomplete_sends(), incomplete0) << "the batch sent a part of the body";
  EXPECT_TRUE(origin.received().empty());
}

// The flush settles every item: a send the peer cannot take any more ends with its error (and
// `incomplete`), each item's `done` is called once, a `done` may queue an item for the next
// flush and take out one not yet settled (whose callbacks are then never called). On a thread
// of its own: when a ring is closed, the kernel may interrupt a later blocking call of the
// thread that made it with EINTR (a test client's read, in the tests that follow).
void settle_items() {
  boost::asio::io_context ctx;
  auto batch = SendBatch::make();
  ASSERT_TRUE(batch);
  int ok_pair[2], gone_pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, ok_pair), 0);
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, gone_pair), 0);
  ::close(gone_pair[1]);  // its peer is gone: a send fails with EPIPE
  struct Close {
    int a, b, c;
    ~Close() {
      ::close(a);
      ::close(b);
      ::close(c);
    }
  } closer{ok_pair[0], ok_pair[1], gone_pair[0]};

  struct Seen {
    int done = 0, incomplete = 0;
  };
  std::map<SendBatch::Item*, Seen> seen;
  const std::string text = "response";
  iovec iov[2] = {{const_cast<char*>(text.data()), 4}, {const_cast<char*>(text.data()) + 4, 4}};
  SendBatch::Item whole, failed, removed, later;
  for (auto* it : {&whole, &later}) {  // a gather list, and a plain buffer
    it->fd = ok_pair[0];
    it->size = text.size();
  }
  whole.iov = iov;
  whole.iovcnt = 2;
  later.data = text.data();
  failed.fd = gone_pair[0];
  failed.data = text.data();
  failed.size = text.size();
  removed = later;
  struct Ctx {
    std::map<SendBatch::Item*, Seen>* seen;
    SendBatch* batch;
    boost::asio::io_context* io;
    SendBatch::Item *self, *remove_me, *queue_me;
  };
  Ctx c_whole{&seen, batch.get(), &ctx, &whole, nullptr, nullptr};
  Ctx c_failed{&seen, batch.get(), &ctx, &failed, nullptr, nullptr};
  Ctx c_removed{&seen, batch.get(), &ctx, &removed, nullptr, nullptr};
  Ctx c_later{&seen, batch.get(), &ctx, &later, nullptr, nullptr};
  // Items settle from the last queued to the first: `failed` (queued last) takes `removed`
  // out before its turn and queues `later` for the next flush.
  c_failed.remove_me = &removed;
  c_failed.queue_me = &later;
  auto on_done = [](void* p) noexcept {
    auto* c = static_cast<Ctx*>(p);
    ++(*c->seen)[c->self].done;
    if (c->remove_me) SendBatch::remove(*c->remove_me);
    if (c->queue_me) c->batch->add(*c->queue_me, c->io->get_executor());
  };
  auto on_incomplete = [](void* p) noexcept {
    ++(*static_cast<Ctx*>(p)->seen)[static_cast<Ctx*>(p)->self].incomplete;
  };
  for (auto [it, cx] : {std::pair{&whole, &c_whole},
                        {&failed, &c_failed},
                        {&removed, &c_removed},
                        {&later, &c_later}}) {
    it->done = on_done;
    it->incomplete = on_incomplete;
    it->ctx = cx;
  }
  batch->add(whole, ctx.get_executor());
  batch->add(removed, ctx.get_executor());
  batch->add(failed, ctx.get_executor());
  ctx.run();  // both flushes

  EXPECT_TRUE(whole.sent_whole());
  EXPECT_EQ(failed.result, -EPIPE);
  EXPECT_TRUE(later.sent_whole()) << "queued by a callback, sent by the next flush";
  EXPECT_EQ(seen[&whole].done, 1);
  EXPECT_EQ(seen[&whole].incomplete, 0);
  EXPECT_EQ(seen[&failed].done, 1);
  EXPECT_EQ(seen[&failed].incomplete, 1);
  EXPECT_EQ(seen[&later].done, 1);
  EXPECT_EQ(seen[&removed].done + seen[&removed].incomplete, 0) << "taken out before its turn";
  for (auto* it : {&whole, &failed, &removed, &later}) EXPECT_EQ(it->queued_in, nullptr);
  char got[64];
  const ssize_t n = ::recv(ok_pair[1], got, sizeof got, MSG_DONTWAIT);
  // `removed` was sent with the first flush (its send is not undone), then `later`.
  EXPECT_EQ(std::string(got, n > 0 ? static_cast<std::size_t>(n) : 0u), text + text + text);
}

TEST(SendBatch, TheFlushSettlesEachItemOnceAndItsCallbacksMayQueueOrRemoveItems) {
  if (!batch_available())
    GTEST_SKIP() << "io_uring is not available here (no liburing at build time, or refused)";
  std::thread(settle_items).join();
}

// Over TLS the records of a response's end are encrypted first and sent in the batch. The
// origin answers /big with 12 KB, which reach the proxy with their head and leave in one
// batched send; a client asks for 400 of them and reads nothing until the socket is full and a
// batched send went in part: the records it could not send follow the usual way, in order.
TEST(SendBatch, ResponsesOverTlsGoInTheBatchAndWhatTheSocketLeavesFollowsInOrder) {
  if (!batch_available())
    GTEST_SKIP() << "io_uring is not available here (no liburing at build time, or refused)";
  const std::string big = pattern(12000);
  Origin origin([&big](const pt::OriginRequest& r) {
    pt::OriginResponse a;
    a.body = r.target == "/big" ? big : "small";
    return a;
  });
  auto app = std::make_shared<Forward>(origin.addr());
  pt::TestPki pki;
  const auto cert = pki.issue({"a.test"});
  TlsSettings tls;
  tls.certificates.push_back({cert.cert_file, cert.key_file});
  HttpServerOptions o;
  o.batch_upstream_sends = false;  // the responses alone are counted
  pt::TestProxy px(app, o, 1, tls);
  pt::TlsClientOptions co;
  co.ca_file = pki.ca_file();
  co.sni = "a.test";
  pt::TlsClient c(px.port(), co);
  ASSERT_TRUE(c.connected()) << c.error();

  const auto sends0 = SendBatch::sends(), incomplete0 = SendBatch::incomplete_sends();
  for (int i = 0; i < 3; ++i) {
    auto r = c.get("/small");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "small");
  }
  EXPECT_TRUE(eventually([&] { return SendBatch::sends() - sends0 >= 3; }))
      << "the responses went through the batch";

  constexpr int kBig = 400;
  std::string asks;
  for (int i = 0; i < kBig; ++i) asks += "GET /big HTTP/1.1\r\nHost: h\r\n\r\n";
  ASSERT_TRUE(c.send(asks));
  EXPECT_TRUE(eventually([&] { return SendBatch::incomplete_sends() > incomplete0; }))
      << "the socket took a batched send in part";
  for (int i = 0; i < kBig; ++i) {
    auto r = c.read_response();
    ASSERT_TRUE(r) << "response " << i;
    ASSERT_EQ(r->status, 200u);
    ASSERT_TRUE(r->body == big) << "response " << i << " arrived whole and in order";
  }
  auto r = c.get("/small");
  ASSERT_TRUE(r) << "the connection goes on";
  EXPECT_EQ(r->body, "small");
}

// A large head (many fields) still arrives whole, sent in batch with small ones.
TEST(SendBatch, LargeAndSmallHeadsArriveWhole) {
  Origin origin(Origin::text("batched"));
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), HttpServerOptions{});
  std::string big = "GET /big HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 90; ++i)
    big += "X-F" + std::to_string(i) + ": " + std::string(300, 'v') + "\r\n";
  big += "\r\n";
  Client a(px.port()), b(px.port());
  ASSERT_TRUE(a.send(big));
  ASSERT_TRUE(b.send("GET /small HTTP/1.1\r\nHost: h\r\n\r\n"));
  auto ra = a.read_response(), rb = b.read_response();
  ASSERT_TRUE(ra);
  ASSERT_TRUE(rb);
  EXPECT_EQ(ra->status, 200u);
  EXPECT_EQ(rb->status, 200u);
  bool seen = false;
  for (const auto& r : origin.received()) {
    if (r.target != "/big") continue;
    seen = true;
    EXPECT_EQ(r.header("x-f89"), std::string(300, 'v'));
  }
  EXPECT_TRUE(seen);
}

// A head larger than the upstream socket takes at once: the batch sends a part, the attempt
// finishes it the usual way while it waits for the answer, and the answer comes back.
TEST(SendBatch, AHeadTheSocketTakesInPartIsFinishedTheUsualWay) {
  if (!batch_available())
    GTEST_SKIP() << "io_uring is not available here (no liburing at build time, or refused)";
  // An origin with a small receive buffer (inherited from the listener), so that nothing near
  // the whole head fits at once.
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(lfd, 0);
  struct CloseL {
    int fd;
    ~CloseL() { ::close(fd); }
  } close_l{lfd};
  int small = 4096;
  ASSERT_EQ(::setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t al = sizeof a;
  ASSERT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &al), 0);
  ASSERT_EQ(::listen(lfd, 4), 0);
  std::string got;  // what the origin read, up to the end of the head
  std::thread origin([&] {
    const int c = ::accept(lfd, nullptr, nullptr);
    if (c < 0) return;
    timeval tv{10, 0};
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char b[16384];
    while (got.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = ::recv(c, b, sizeof b, 0);
      if (n <= 0) break;
      got.append(b, static_cast<std::size_t>(n));
    }
    pt::write_all(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    char x;
    ::recv(c, &x, 1, 0);  // until the proxy closes (or the timeout)
    ::close(c);
  });
  struct Join {
    std::thread& t;
    int fd;
    ~Join() {
      if (!t.joinable()) return;
      ::shutdown(fd, SHUT_RDWR);  // an origin still in accept() leaves it
      t.join();
    }
  } join{origin, lfd};

  HttpServerOptions o;
  o.max_header_bytes = 16 << 20;
  auto fwd = std::make_shared<Forward>(SocketAddr::loopback(ntohs(a.sin_port)));
  const auto incomplete0 = SendBatch::incomplete_sends();
  {
    pt::TestProxy px(fwd, o);
    std::string big = "GET /big HTTP/1.1\r\nHost: h\r\n";
    for (int i = 0; i < 100; ++i)
      big += "X-F" + std::to_string(i) + ": " + std::string(60000, 'v') + "\r\n";
    big += "\r\n";
    Client c(px.port());
    ASSERT_TRUE(c.send(big));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u);
    EXPECT_EQ(r->body, "ok");
  }
  EXPECT_GT(SendBatch::incomplete_sends(), incomplete0) << "the batch sent a part of the head";
  origin.join();
  EXPECT_NE(got.find("X-F99: " + std::string(60000, 'v') + "\r\n\r\n"), std::string::npos)
      << "the origin got the whole head (" << got.size() << " bytes)";
}

// A reused upstream connection on which the origin sent something after it left the pool and
// before the round's batch went out (stray bytes, or a close): the read that follows the queued
// head finds them first, so the head is taken out of the batch and never sent there, and the
// request is retried on a fresh connection. The hook makes the origin send a stray byte, then
// lets the event loop see it (one pass of the reactor, through a timer already due) before the
// head is queued.
TEST(SendBatch, BytesFromTheOriginBeforeTheHeadWentOutMeanItIsNeverSentThere) {
  if (!batch_available())
    GTEST_SKIP() << "io_uring is not available here (no liburing at build time, or refused)";
  std::mutex mu;
  std::condition_variable cv;
  bool poke = false, poked = false;
  std::atomic<int> conns{0};
  std::string after_stray;  // what the first connection got after its stray byte
  std::vector<std::string> targets[2];
  pt::RawOrigin origin([&](int fd) {
    const int me = conns.fetch_add(1);
    if (me > 1) return;
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string extra;
    for (;;) {
      const std::string head = pt::read_head(fd, extra);
      if (head.empty()) break;
      const auto sp = head.find(' ');
      targets[me].push_back(head.substr(sp + 1, head.find(' ', sp + 1) - sp - 1));
      const std::string body = me == 0 ? "one" : "two";
      pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n" + body);
      if (me == 1) continue;
      // The first connection: one stray byte once the proxy holds it for the next request.
      std::unique_lock lk(mu);
      if (!cv.wait_for(lk, std::chrono::seconds(10), [&] { return poke; })) break;
      pt::write_all(fd, "X");
      poked = true;
      cv.notify_all();
      lk.unlock();
      char b[4096];
      for (ssize_t n; (n = ::recv(fd, b, sizeof b, 0)) > 0;)
        after_stray.append(b, static_cast<std::size_t>(n));
      break;
    }
  });
  class Poking : public Forward {
   public:
    using Forward::Forward;
    task<Result<void>> upstream_request_filter(Session&, RequestHeader& r, NoCtx& ctx) override {
      if (r.path() != "/two" || done_) co_return ok();
      done_ = true;
      {
        std::unique_lock lk(*sync_mu);
        *poke = true;
        sync_cv->notify_all();
        if (!sync_cv->wait_for(lk, std::chrono::seconds(10), [&] { return *poked; }))
          co_return Error::internal(ErrorType::InternalError, "the origin did not poke");
      }
      // The byte is in the socket (loopback delivers within the origin's send). A timer already
      // due completes through the reactor, whose pass takes the socket's readable event.
      boost::asio::steady_timer t(co_await boost::asio::this_coro::executor,
                                  std::chrono::steady_clock::now());
      co_await t.async_wait(boost::asio::use_awaitable);
      (void)ctx;
      co_return ok();
    }
    std::mutex* sync_mu = nullptr;
    std::condition_variable* sync_cv = nullptr;
    bool* poke = nullptr;
    bool* poked = nullptr;

   private:
    bool done_ = false;
  };
  auto app = std::make_shared<Poking>(origin.addr());
  app->sync_mu = &mu;
  app->sync_cv = &cv;
  app->poke = &poke;
  app->poked = &poked;
  {
    pt::TestProxy px(app);
    Client c(px.port());
    auto r1 = c.get("/one");
    ASSERT_TRUE(r1);
    EXPECT_EQ(r1->body, "one");
    auto r2 = c.get("/two");
    ASSERT_TRUE(r2);
    EXPECT_EQ(r2->status, 200u);
    EXPECT_EQ(r2->body, "two");
    ASSERT_TRUE(app->logged.wait_for(2, std::chrono::seconds(10)));
    std::lock_guard lk(app->mu);
    EXPECT_EQ(app->last_retries, 1u) << "retried once, on a fresh connection";
  }
  EXPECT_EQ(after_stray, "")
      << "the head of /two was never sent on the connection that had the byte";
  EXPECT_EQ(targets[0], std::vector<std::string>{"/one"});
  EXPECT_EQ(targets[1], std::vector<std::string>{"/two"});
}

}  // namespace
}  // namespace itest
