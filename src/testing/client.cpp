#include <portico/testing/client.hpp>

#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <portico/http/header_map.hpp>

namespace portico::testing {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;

std::string ClientResponse::header(std::string_view name) const {
  for (auto& [n, v] : headers)
    if (iequals(n, name)) return v;
  return {};
}
bool ClientResponse::has_header(std::string_view name) const {
  for (auto& [n, v] : headers)
    if (iequals(n, name)) return true;
  return false;
}

struct Client::Impl {
  asio::io_context ctx;
  tcp::socket sock{ctx};
  boost::beast::flat_buffer buf;
  std::uint16_t port;
  bool ok = false;
};

Client::Client(std::uint16_t port, std::chrono::milliseconds timeout) : impl_(std::make_unique<Impl>()) {
  impl_->port = port;
  boost::system::error_code ec;
  impl_->sock.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  impl_->ok = !ec;
  if (impl_->ok) {
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    ::setsockopt(impl_->sock.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(impl_->sock.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
}

Client::~Client() = default;

bool Client::connected() const noexcept { return impl_->ok; }
int Client::fd() const noexcept { return const_cast<tcp::socket&>(impl_->sock).native_handle(); }

bool Client::send(std::string_view raw) {
  boost::system::error_code ec;
  asio::write(impl_->sock, asio::buffer(raw.data(), raw.size()), ec);
  return !ec;
}

std::optional<ClientResponse> Client::read_response(bool head) {
  http::response_parser<http::string_body> p;
  p.body_limit(1ull << 31);
  p.skip(head);
  boost::system::error_code ec;
  http::read(impl_->sock, impl_->buf, p, ec);
  if (ec) return std::nullopt;
  auto& res = p.get();
  ClientResponse out;
  out.status = res.result_int();
  out.reason = std::string(res.reason());
  for (auto& f : res) out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  out.body = std::move(res.body());
  out.keep_alive = res.keep_alive();
  return out;
}

std::optional<ClientResponse> Client::request(std::string_view method, std::string_view target,
                                              const Fields& headers, std::string_view body) {
  std::string raw;
  raw.append(method).append(" ").append(target).append(" HTTP/1.1\r\n");
  bool host = false;
  for (auto& [n, v] : headers) {
    if (iequals(n, "host")) host = true;
    raw.append(n).append(": ").append(v).append("\r\n");
  }
  if (!host) raw.append("Host: 127.0.0.1:").append(std::to_string(impl_->port)).append("\r\n");
  if (!body.empty() || method == "POST" || method == "PUT")
    raw.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  raw.append("\r\n").append(body);
  if (!send(raw)) return std::nullopt;
  return read_response(method == "HEAD");
}

bool Client::closed_by_peer() {
  char c;
  for (;;) {
    ssize_t n = ::recv(fd(), &c, 1, 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
}

}  // namespace portico::testing
