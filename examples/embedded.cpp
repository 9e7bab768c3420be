// Embedding: run a portico proxy on an io_context your application already owns, next to your
// own work, with no portico::Server.
//
//   embedded --self-test
#include <cstdio>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <portico/portico.hpp>
#include <portico/server/serve.hpp>
#include <portico/testing/client.hpp>
#include <portico/testing/origin.hpp>

using namespace portico;
namespace asio = boost::asio;

class ToOrigin : public ProxyHttp<> {
 public:
  explicit ToOrigin(HttpPeerPtr p) : peer_(std::move(p)) {}
  task<Result<HttpPeerPtr>> upstream_peer(Session&, NoCtx&) override { co_return peer_; }

 private:
  HttpPeerPtr peer_;
};

int main() {
  testing::Origin origin(testing::Origin::text("hello from the origin"));

  // The application's own event loop and acceptor.
  asio::io_context ioc(1);
  asio::ip::tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0});
  auto service = http_proxy_service(std::make_shared<ToOrigin>(make_peer(origin.addr())));
  asio::co_spawn(ioc, serve(acceptor, service), asio::detached);
  std::thread loop([&] { ioc.run(); });

  bool good = false;
  {
    testing::Client c(acceptor.local_endpoint().port());
    auto r = c.get("/");
    good = r && r->status == 200 && r->body == "hello from the origin";
  }
  std::printf("%s\n", good ? "ok" : "FAILED");

  // Closing the acceptor ends serve() once open connections are done; then run() returns.
  asio::post(ioc, [&] { acceptor.close(); });
  loop.join();
  return good ? 0 : 1;
}
