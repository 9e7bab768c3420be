// TlsStream, both ends over a loopback TCP pair: handshake, gathered and large writes, a reader
// and a writer at once, close_notify (eof) versus a bare close (stream_truncated), and an SSL
// moved from one stream to another mid-connection.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <openssl/ssl.h>

#include <portico/testing/tls.hpp>

#include "tls/tls_stream.hpp"

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using portico::task;
using Stream = portico::detail::TlsStream<tcp::socket>;

struct Pair {
  Pair() : server_sock(io), client_sock(io) {
    tcp::acceptor acc(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    client_sock.connect(acc.local_endpoint());
    acc.accept(server_sock);
    static portico::testing::TestPki pki;
    static const auto leaf = pki.issue({"tls-stream.test"});
    server_ctx = SSL_CTX_new(TLS_server_method());
    client_ctx = SSL_CTX_new(TLS_client_method());
    EXPECT_EQ(SSL_CTX_use_certificate_chain_file(server_ctx, leaf.cert_file.c_str()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey_file(server_ctx, leaf.key_file.c_str(), SSL_FILETYPE_PEM), 1);
    EXPECT_EQ(SSL_CTX_load_verify_locations(client_ctx, pki.ca_file().c_str(), nullptr), 1);
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_PEER, nullptr);
    server = std::make_unique<Stream>(server_sock, SSL_new(server_ctx));
    client = std::make_unique<Stream>(client_sock, SSL_new(client_ctx));
  }
  ~Pair() {
    server.reset();
    client.reset();
    SSL_CTX_free(server_ctx);
    SSL_CTX_free(client_ctx);
  }

  /// Runs both coroutines to completion (bounded by `limit`).
  void run(task<void> a, task<void> b, std::chrono::seconds limit = std::chrono::seconds(20)) {
    int done = 0;
    asio::co_spawn(io, std::move(a), [&](std::exception_ptr e) {
      EXPECT_FALSE(e);
      ++done;
    });
    asio::co_spawn(io, std::move(b), [&](std::exception_ptr e) {
      EXPECT_FALSE(e);
      ++done;
    });
    io.run_for(limit);
    io.restart();
    EXPECT_EQ(done, 2) << "both sides finished";
  }

  void handshake() {
    run([](Stream& s) -> task<void> {
          error_code ec;
          co_await s.handshake(true, ec);
          EXPECT_FALSE(ec) << ec.message();
        }(*server),
        [](Stream& s) -> task<void> {
          error_code ec;
          co_await s.handshake(false, ec);
          EXPECT_FALSE(ec) << ec.message();
        }(*client));
  }

  asio::io_context io;
  tcp::socket server_sock, client_sock;
  SSL_CTX* server_ctx = nullptr;
  SSL_CTX* client_ctx = nullptr;
  std::unique_ptr<Stream> server, client;
};

/// Reads until `want` bytes arrived or the stream ends; the error that ended it in `end`.
task<std::string> read_all(Stream& s, std::size_t want, error_code& end) {
  std::string got;
  char buf[7000];  // not a multiple of a record: reads straddle records
  while (got.size() < want) {
    const std::size_t n = co_await s.read_some(asio::buffer(buf), end);
    if (end) break;
    got.append(buf, n);
  }
  co_return got;
}

TEST(TlsStream, SmallPiecesAreGatheredAndALargeWriteArrivesWhole) {
  Pair p;
  p.handshake();
  std::string big(3 * 1024 * 1024 + 17, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 23);
  const std::string head = "HTTP/1.1 200 OK\r\n", fields = "Content-Length: 5\r\n\r\n", body = "hello";
  const std::string expect = head + fields + body + big;
  std::string got;
  p.run(
      [&](Stream& s) -> task<void> {
        error_code ec;
        std::vector<asio::const_buffer> pieces{asio::buffer(head), asio::buffer(fields),
                                               asio::buffer(body), asio::const_buffer()};
        co_await s.write(pieces, ec);  // one record
        EXPECT_FALSE(ec) << ec.message();
        std::vector<asio::const_buffer> nothing{asio::const_buffer(), asio::const_buffer()};
        co_await s.write(nothing, ec);  // no record at all, and no error
        EXPECT_FALSE(ec) << ec.message();
        co_await s.write(asio::buffer(big), ec);
        EXPECT_FALSE(ec) << ec.message();
      }(*p.server),
      [&](Stream& s) -> task<void> {
        error_code ec;
        got = co_await read_all(s, expect.size(), ec);
        EXPECT_FALSE(ec) << ec.message();
      }(*p.client));
  EXPECT_EQ(got.size(), expect.size());
  EXPECT_TRUE(got == expect);
}

TEST(TlsStream, OneReaderAndOneWriterAtOnceBothWays) {
  Pair p;
  p.handshake();
  const std::string a(1024 * 1024, 'a'), b(1024 * 1024 + 5, 'b');
  std::string at_server, at_client;
  auto duplex = [](Stream& s, const std::string& out, std::string& in,
                   std::size_t want) -> task<void> {
    // The writer runs as its own coroutine next to this reader, like an HTTP/2 connection's.
    auto ex = co_await asio::this_coro::executor;
    asio::co_spawn(
        ex,
        [](Stream& st, const std::string& data) -> task<void> {
          error_code ec;
          for (std::size_t at = 0; at < data.size(); at += 10000) {
            co_await st.write(asio::buffer(data.data() + at, std::min<std::size_t>(10000, data.size() - at)), ec);
            EXPECT_FALSE(ec) << ec.message();
          }
        }(s, out),
        asio::detached);
    error_code ec;
    in = co_await read_all(s, want, ec);
    EXPECT_FALSE(ec) << ec.message();
  };
  p.run(duplex(*p.server, a, at_server, b.size()), duplex(*p.client, b, at_client, a.size()));
  EXPECT_TRUE(at_server == b);
  EXPECT_TRUE(at_client == a);
}

TEST(TlsStream, CloseNotifyIsEofAndABareCloseIsTruncation) {
  {
    Pair p;
    p.handshake();
    error_code end;
    p.run(
        [](Stream& s) -> task<void> {
          error_code ec;
          co_await s.write(asio::buffer(std::string("bye")), ec);
          SSL_set_shutdown(s.native_handle(), SSL_RECEIVED_SHUTDOWN);  // do not wait for theirs
          co_await s.shutdown(ec);
          EXPECT_FALSE(ec) << ec.message();
        }(*p.server),
        [&](Stream& s) -> task<void> {
          auto got = co_await read_all(s, 100, end);
          EXPECT_EQ(got, "bye");
        }(*p.client));
    EXPECT_EQ(end, asio::error::eof);
  }
  {
    Pair p;
    p.handshake();
    error_code end;
    p.run(
        [](Stream& s, tcp::socket& sock) -> task<void> {
          error_code ec;
          co_await s.write(asio::buffer(std::string("cut")), ec);
          sock.close(ec);
        }(*p.server, p.server_sock),
        [&](Stream& s) -> task<void> {
          auto got = co_await read_all(s, 100, end);
          EXPECT_EQ(got, "cut");
        }(*p.client));
    EXPECT_EQ(end, asio::ssl::error::stream_truncated);
  }
}

TEST(TlsStream, AnSslMovedToAnotherStreamKeepsTheSession) {
  Pair p;
  p.handshake();
  // Like a pooled connection handed to another worker: the SSL leaves one stream, idle, and
  // continues in another over the same socket.
  EXPECT_FALSE(p.client->buffered());
  SSL* ssl = p.client->release();
  p.client = std::make_unique<Stream>(p.client_sock, ssl);
  std::string got;
  p.run(
      [](Stream& s) -> task<void> {
        error_code ec;
        co_await s.write(asio::buffer(std::string("after the move")), ec);
        EXPECT_FALSE(ec) << ec.message();
      }(*p.server),
      [&](Stream& s) -> task<void> {
        error_code ec;
        got = co_await read_all(s, 14, ec);
        EXPECT_FALSE(ec) << ec.message();
      }(*p.client));
  EXPECT_EQ(got, "after the move");
}

TEST(TlsStream, HandshakeWithAnUntrustedPeerFailsWithTheVerifyError) {
  Pair p;
  // A client that trusts nothing: the server's chain cannot be verified.
  SSL_CTX* empty = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(empty, SSL_VERIFY_PEER, nullptr);
  p.client = std::make_unique<Stream>(p.client_sock, SSL_new(empty));
  error_code client_ec, server_ec;
  p.run(
      [&](Stream& s) -> task<void> { co_await s.handshake(true, server_ec); }(*p.server),
      [&](Stream& s) -> task<void> { co_await s.handshake(false, client_ec); }(*p.client));
  EXPECT_TRUE(client_ec);
  EXPECT_NE(SSL_get_verify_result(p.client->native_handle()), X509_V_OK);
  EXPECT_TRUE(server_ec) << "the server sees the client's alert";
  p.client.reset();
  SSL_CTX_free(empty);
}

}  // namespace
