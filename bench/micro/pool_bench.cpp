// The upstream pool on the request path: a connection taken for a request and put back after
// it, over a real connected socket. Putting it back arms no idle watch (that waits 20 ms, see
// src/core/deferred.hpp), so the pair costs no system call.
#include <benchmark/benchmark.h>

#include <memory>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <portico/proxy/peer.hpp>

#include "upstream/connection.hpp"

using namespace portico;
namespace asio = boost::asio;

static void BM_PoolTakeAndPut(benchmark::State& st) {
  asio::io_context io(1);
  asio::ip::tcp::acceptor acc(io, asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  asio::ip::tcp::socket client(io), server(io);
  client.connect(acc.local_endpoint());
  acc.accept(server);

  auto registry = std::make_shared<detail::PoolRegistry>();
  auto pool = std::make_shared<detail::Pool>(io.get_executor(), detail::PoolLimits{},
                                             http1::ParserLimits{}, registry, false);
  const HttpPeer peer(*SocketAddr::parse("127.0.0.1:80"), false);
  const std::uint64_t key = 42;
  pool->opened(peer, key);
  auto conn = std::make_unique<detail::UpstreamConn>(io.get_executor(), http1::ParserLimits{});
  const auto ep = client.local_endpoint();
  conn->sock.assign(asio::generic::stream_protocol(ep.protocol().family(), IPPROTO_TCP),
                    client.release());
  conn->key = key;
  conn->idle_timeout = std::chrono::seconds(60);
  pool->put(std::move(conn));
  for (auto _ : st) {
    auto c = pool->take(key);
    benchmark::DoNotOptimize(c.get());
    pool->put(std::move(c));
  }
  if (pool->idle() != 1) st.SkipWithError("the connection was not pooled again");
  io.poll();
}
BENCHMARK(BM_PoolTakeAndPut);
