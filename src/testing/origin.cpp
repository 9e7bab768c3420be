#include <portico/testing/origin.hpp>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cerrno>

#include <list>
#include <mutex>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <portico/http/header_map.hpp>

namespace portico::testing {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;

namespace {
std::string find(const Fields& f, std::string_view name) {
  for (auto& [n, v] : f)
    if (iequals(n, name)) return v;
  return {};
}
bool has(const Fields& f, std::string_view name) {
  for (auto& [n, v] : f)
    if (iequals(n, name)) return true;
  return false;
}
}  // namespace

std::string OriginRequest::header(std::string_view name) const { return find(headers, name); }
bool OriginRequest::has_header(std::string_view name) const { return has(headers, name); }

struct Origin::Impl {
  Handler handler;
  asio::io_context ctx{1};
  tcp::acceptor acc{ctx};
  std::thread thread;
  std::atomic<std::size_t> requests{0};
  std::atomic<std::size_t> connections{0};
  mutable std::mutex mu;
  std::vector<OriginRequest> received;

  asio::awaitable<void> session(tcp::socket sock) {
    boost::beast::flat_buffer buf;
    for (;;) {
      http::request_parser<http::string_body> p;
      p.body_limit(256 * 1024 * 1024);
      p.header_limit(1024 * 1024);
      auto [ec, n] = co_await http::async_read(sock, buf, p, asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      auto& req = p.get();
      OriginRequest r;
      r.method = std::string(req.method_string());
      r.target = std::string(req.target());
      for (auto& f : req) r.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
      r.body = req.body();
      OriginResponse out = handler ? handler(r) : OriginResponse{200, {}, "origin"};
      {
        std::lock_guard lk(mu);
        received.push_back(std::move(r));
      }
      ++requests;
      http::response<http::string_body> res{static_cast<http::status>(out.status), 11};
      for (auto& [k, v] : out.headers) res.insert(k, v);
      res.body() = out.body;
      if (out.chunked)
        res.chunked(true);
      else if (!res.has_content_length() && out.status >= 200 && out.status != 204 && out.status != 304)
        res.prepare_payload();
      const bool close = out.close || !req.keep_alive();
      res.keep_alive(!close);
      const bool head = req.method() == http::verb::head;
      if (head) {
        http::response_serializer<http::string_body> sr(res);
        auto [wec, wn] = co_await http::async_write_header(sock, sr, asio::as_tuple(asio::use_awaitable));
        if (wec) co_return;
      } else {
        auto [wec, wn] = co_await http::async_write(sock, res, asio::as_tuple(asio::use_awaitable));
        if (wec) co_return;
      }
      if (close) {
        boost::system::error_code ec2;
        sock.shutdown(tcp::socket::shutdown_send, ec2);
        co_return;
      }
    }
  }

  asio::awaitable<void> accept() {
    for (;;) {
      auto [ec, s] = co_await acc.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      ++connections;
      asio::co_spawn(ctx, session(std::move(s)), asio::detached);
    }
  }
};

Origin::Origin(Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->handler = std::move(handler);
  tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
  impl_->acc.open(ep.protocol());
  impl_->acc.set_option(asio::socket_base::reuse_address(true));
  impl_->acc.bind(ep);
  impl_->acc.listen();
  asio::co_spawn(impl_->ctx, impl_->accept(), asio::detached);
  impl_->thread = std::thread([this] { impl_->ctx.run(); });
}

Origin::~Origin() {
  impl_->ctx.stop();
  impl_->thread.join();
}

Origin::Handler Origin::text(std::string body) {
  return [body = std::move(body)](const OriginRequest&) {
    OriginResponse r;
    r.body = body;
    r.headers.emplace_back("Content-Type", "text/plain");
    return r;
  };
}

std::uint16_t Origin::port() const noexcept { return impl_->acc.local_endpoint().port(); }
std::size_t Origin::requests() const noexcept { return impl_->requests.load(); }
std::size_t Origin::connections() const noexcept { return impl_->connections.load(); }
std::vector<OriginRequest> Origin::received() const {
  std::lock_guard lk(impl_->mu);
  return impl_->received;
}

// ---------------------------------------------------------------------------------------------

struct RawOrigin::Impl {
  Fn fn;
  int lfd = -1;
  std::uint16_t port = 0;
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> connections{0};
  std::thread acceptor;
  std::mutex mu;
  std::list<std::thread> threads;
  std::vector<int> fds;
};

RawOrigin::RawOrigin(Fn fn) : impl_(std::make_unique<Impl>()) {
  impl_->fn = std::move(fn);
  impl_->lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(impl_->lfd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::listen(impl_->lfd, 128);
  socklen_t len = sizeof a;
  ::getsockname(impl_->lfd, reinterpret_cast<sockaddr*>(&a), &len);
  impl_->port = ntohs(a.sin_port);
  impl_->acceptor = std::thread([this] {
    Impl& I = *impl_;
    while (!I.stop) {
      pollfd p{I.lfd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int fd = ::accept4(I.lfd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      ++I.connections;
      std::lock_guard lk(I.mu);
      I.fds.push_back(fd);
      I.threads.emplace_back([this, fd] {
        impl_->fn(fd);
        std::lock_guard lk2(impl_->mu);
        for (auto& f : impl_->fds)
          if (f == fd) f = -1;
        ::close(fd);
      });
    }
  });
}

RawOrigin::~RawOrigin() {
  impl_->stop = true;
  impl_->acceptor.join();
  {
    std::lock_guard lk(impl_->mu);
    for (int fd : impl_->fds)
      if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : impl_->threads) t.join();
  ::close(impl_->lfd);
}

std::uint16_t RawOrigin::port() const noexcept { return impl_->port; }
std::size_t RawOrigin::connections() const noexcept { return impl_->connections.load(); }

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::string read_head(int fd, std::string& extra) {
  std::string buf;
  char tmp[4096];
  for (;;) {
    auto pos = buf.find("\r\n\r\n");
    if (pos != std::string::npos) {
      extra = buf.substr(pos + 4);
      buf.resize(pos + 4);
      return buf;
    }
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return {};
    buf.append(tmp, static_cast<std::size_t>(n));
  }
}

}  // namespace portico::testing
