#include <portico/core/socket_addr.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <charconv>
#include <cstring>

namespace portico {

SocketAddr::SocketAddr() noexcept { std::memset(&storage_, 0, sizeof storage_); }

std::optional<SocketAddr> SocketAddr::parse(std::string_view text) {
  SocketAddr a;
  if (text.starts_with("unix:")) {
    auto path = text.substr(5);
    sockaddr_un un{};
    if (path.empty() || path.size() >= sizeof un.sun_path) return std::nullopt;
    un.sun_family = AF_UNIX;
    std::memcpy(un.sun_path, path.data(), path.size());
    std::memcpy(&a.storage_, &un, sizeof un);
    a.len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    return a;
  }
  std::string_view host, port;
  if (text.starts_with('[')) {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return std::nullopt;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  unsigned p = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc{} || ptr != port.data() + port.size() || p > 65535 || port.empty())
    return std::nullopt;
  std::string h(host);
  sockaddr_in v4{};
  sockaddr_in6 v6{};
  if (inet_pton(AF_INET, h.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(static_cast<std::uint16_t>(p));
    std::memcpy(&a.storage_, &v4, sizeof v4);
    a.len_ = sizeof v4;
    return a;
  }
  if (inet_pton(AF_INET6, h.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(static_cast<std::uint16_t>(p));
    std::memcpy(&a.storage_, &v6, sizeof v6);
    a.len_ = sizeof v6;
    return a;
  }
  return std::nullopt;
}

SocketAddr SocketAddr::from_sockaddr(const sockaddr* sa, socklen_t len) {
  SocketAddr a;
  if (len > sizeof a.storage_) len = sizeof a.storage_;
  std::memcpy(&a.storage_, sa, len);
  a.len_ = len;
  return a;
}

SocketAddr SocketAddr::ipv4(std::uint32_t host_order_addr, std::uint16_t port) {
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  v4.sin_port = htons(port);
  v4.sin_addr.s_addr = htonl(host_order_addr);
  return from_sockaddr(reinterpret_cast<const sockaddr*>(&v4), sizeof v4);
}

std::uint16_t SocketAddr::port() const noexcept {
  if (storage_.ss_family == AF_INET)
    return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (storage_.ss_family == AF_INET6)
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  return 0;
}

SocketAddr SocketAddr::with_port(std::uint16_t port) const noexcept {
  SocketAddr a = *this;
  if (a.storage_.ss_family == AF_INET)
    reinterpret_cast<sockaddr_in*>(&a.storage_)->sin_port = htons(port);
  else if (a.storage_.ss_family == AF_INET6)
    reinterpret_cast<sockaddr_in6*>(&a.storage_)->sin6_port = htons(port);
  return a;
}

std::string SocketAddr::host() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (storage_.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf, sizeof buf);
    return buf;
  }
  if (storage_.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf,
              sizeof buf);
    return buf;
  }
  if (storage_.ss_family == AF_UNIX) return reinterpret_cast<const sockaddr_un*>(&storage_)->sun_path;
  return {};
}

std::string SocketAddr::to_string() const {
  switch (storage_.ss_family) {
    case AF_INET: return host() + ":" + std::to_string(port());
    case AF_INET6: return "[" + host() + "]:" + std::to_string(port());
    case AF_UNIX: return "unix:" + host();
    default: return "unset";
  }
}

std::uint64_t SocketAddr::hash() const noexcept {
  // Eight bytes at a time (an IPv4 address is two words), each multiplied in and folded.
  auto mix = [](std::uint64_t h, std::uint64_t w) {
    w *= 0x9e3779b97f4a7c15ull;
    return (h ^ w ^ (w >> 29)) * 0xbf58476d1ce4e5b9ull;
  };
  const auto* p = reinterpret_cast<const unsigned char*>(&storage_);
  std::uint64_t h = len_;
  socklen_t i = 0;
  for (; i + 8 <= len_; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = mix(h, w);
  }
  if (i < len_) {
    std::uint64_t w = 0;
    std::memcpy(&w, p + i, len_ - i);
    h = mix(h, w);
  }
  return h ^ (h >> 32);
}

bool operator==(const SocketAddr& a, const SocketAddr& b) noexcept {
  return a.len_ == b.len_ && std::memcmp(&a.storage_, &b.storage_, a.len_) == 0;
}

}  // namespace portico
