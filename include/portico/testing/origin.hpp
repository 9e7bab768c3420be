// Test origins that run on their own thread, listening on 127.0.0.1 port 0.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <portico/core/socket_addr.hpp>

namespace portico::testing {

using Fields = std::vector<std::pair<std::string, std::string>>;

/// A request as the origin received it.
struct OriginRequest {
  std::string method;
  std::string target;
  Fields headers;
  std::string body;
  /// The first value of `name` (case-insensitive), or empty.
  std::string header(std::string_view name) const;
  bool has_header(std::string_view name) const;
};

struct OriginResponse {
  unsigned status = 200;
  Fields headers;
  std::string body;
  /// Send the body chunked instead of with Content-Length.
  bool chunked = false;
  /// Close the connection after this response.
  bool close = false;
};

/// A well-behaved HTTP/1.1 origin (Beast), answering each request with `handler`.
class Origin {
 public:
  using Handler = std::function<OriginResponse(const OriginRequest&)>;
  /// With no handler every request gets 200 and the body "origin".
  explicit Origin(Handler handler = {});
  ~Origin();
  Origin(const Origin&) = delete;
  Origin& operator=(const Origin&) = delete;

  /// A handler answering 200 with `body`.
  static Handler text(std::string body);

  std::uint16_t port() const noexcept;
  SocketAddr addr() const { return SocketAddr::loopback(port()); }
  /// Requests answered and connections accepted so far.
  std::size_t requests() const noexcept;
  std::size_t connections() const noexcept;
  /// Every request received, in order.
  std::vector<OriginRequest> received() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

/// An origin that hands each accepted connection's blocking socket to `fn` on its own thread,
/// for misbehaving or streaming upstreams. The socket is closed when `fn` returns.
class RawOrigin {
 public:
  using Fn = std::function<void(int fd)>;
  explicit RawOrigin(Fn fn);
  ~RawOrigin();
  RawOrigin(const RawOrigin&) = delete;
  RawOrigin& operator=(const RawOrigin&) = delete;

  std::uint16_t port() const noexcept;
  SocketAddr addr() const { return SocketAddr::loopback(port()); }
  std::size_t connections() const noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

/// Blocking helpers for RawOrigin functions and raw clients.
bool write_all(int fd, std::string_view data);
/// Reads until "\r\n\r\n"; returns the header block (including it) and leaves any extra bytes
/// in `extra`. Empty on EOF or error.
std::string read_head(int fd, std::string& extra);

}  // namespace portico::testing
