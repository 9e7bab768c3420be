// SocketAddr: an IPv4, IPv6 or Unix-domain socket address, without pulling Asio into headers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <sys/socket.h>

namespace portico {

class SocketAddr {
 public:
  SocketAddr() noexcept;
  /// Parses "1.2.3.4:80", "[::1]:80" or "unix:/path/to.sock". Names are not resolved.
  static std::optional<SocketAddr> parse(std::string_view text);
  static SocketAddr from_sockaddr(const sockaddr* sa, socklen_t len);
  static SocketAddr ipv4(std::uint32_t host_order_addr, std::uint16_t port);
  static SocketAddr loopback(std::uint16_t port) { return ipv4(0x7f000001u, port); }

  bool is_unix() const noexcept { return storage_.ss_family == AF_UNIX; }
  bool is_ip() const noexcept { return storage_.ss_family == AF_INET || storage_.ss_family == AF_INET6; }
  bool empty() const noexcept { return len_ == 0; }
  std::uint16_t port() const noexcept;
  SocketAddr with_port(std::uint16_t port) const noexcept;
  const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
  socklen_t size() const noexcept { return len_; }
  int family() const noexcept { return storage_.ss_family; }
  /// "1.2.3.4:80", "[::1]:80" or "unix:/path".
  std::string to_string() const;
  /// The host part alone: "1.2.3.4", "::1" or the Unix path.
  std::string host() const;
  std::uint64_t hash() const noexcept;

  friend bool operator==(const SocketAddr& a, const SocketAddr& b) noexcept;

 private:
  sockaddr_storage storage_;
  socklen_t len_ = 0;
};

}  // namespace portico
