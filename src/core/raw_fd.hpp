// RawFd: a descriptor closed with its owner.
#pragma once

#include <unistd.h>

#include <utility>

namespace portico::detail {

/// A descriptor that is closed with its owner unless released: a connection accepted by
/// accept_raw until it is given to Asio.
class RawFd {
 public:
  RawFd() noexcept = default;
  explicit RawFd(int fd) noexcept : fd_(fd) {}
  RawFd(RawFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  RawFd& operator=(RawFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~RawFd() { reset(); }
  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

}  // namespace portico::detail
