// Graceful upgrade: handing listening sockets from a running process to its successor over a
// Unix socket (SCM_RIGHTS), as Pingora does, plus a confirmation back.
//
// Protocol, on a SOCK_SEQPACKET Unix socket the new process listens on (`upgrade_sock`):
//   old -> new  one or more messages "PORTICO-UPGRADE 1 <more>\n<address>\n<address>\n..." each
//               carrying as many fds (SCM_RIGHTS) as it has address lines, at most 64; `more` is
//               1 when another message follows, 0 on the last. The address of each fd is the
//               address it is bound to, as SocketAddr::to_string() writes it ("127.0.0.1:8080").
//   new -> old  "OK\n" once every socket it took is being accepted on.
// Each side checks the other's credentials (SO_PEERCRED): root, its own uid, or (new side) the
// uid of the configured `user`, to which the old process may have switched.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include <portico/core/result.hpp>

namespace portico::detail {

/// A listening socket and the address it is bound to.
struct ListenerFd {
  std::string address;
  int fd = -1;
};

/// The new process's side: the sockets received, and the confirmation still owed.
class ListenerHandover {
 public:
  /// Binds a Unix socket at `path` (replacing a stale one), waits up to `wait` for the old
  /// process to connect and send its sockets, then removes `path`. The error says what was
  /// expected and did not come.
  static Result<ListenerHandover> receive(const std::string& path, std::chrono::milliseconds wait,
                                          uid_t also_allowed);

  ListenerHandover() = default;
  ListenerHandover(ListenerHandover&& o) noexcept;
  ListenerHandover& operator=(ListenerHandover&& o) noexcept;
  ~ListenerHandover();

  /// The sockets received; set an entry's fd to -1 to take it over, the others are closed by
  /// the destructor.
  std::vector<ListenerFd>& fds() noexcept { return fds_; }
  /// Tells the old process that the sockets are being accepted on: it stops accepting and
  /// drains. Without it (this object destroyed first), the old process keeps serving.
  void confirm() noexcept;

 private:
  int conn_ = -1;
  std::vector<ListenerFd> fds_;
};

/// The old process's side: connects to `path` (up to `retries` attempts one second apart, while
/// the new process is not listening yet), sends `fds` and waits up to `confirm_timeout` for the
/// new process's confirmation. Success means the new process accepts on the sockets now; on
/// any error it may not, and the caller should keep accepting.
Result<void> send_listeners(const std::string& path, const std::vector<ListenerFd>& fds,
                            std::size_t retries, std::chrono::milliseconds confirm_timeout);

}  // namespace portico::detail
