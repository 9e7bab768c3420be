// RequestHeader and ResponseHeader: the start line plus a HeaderMap.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <portico/http/header_map.hpp>

namespace portico {

/// HTTP version of a message as major*10+minor: 10, 11 or 20.
enum class Version : std::uint8_t { Http10 = 10, Http11 = 11, Http2 = 20 };

/// The fields of a request or response head, and the shorthands Pingora users know.
class MessageFields {
 public:
  HeaderMap& headers() noexcept { return headers_; }
  const HeaderMap& headers() const noexcept { return headers_; }
  /// Replaces every field named `n` with one field (Pingora's insert_header).
  void insert_header(std::string_view n, std::string_view v) { headers_.insert(n, v); }
  void append_header(std::string_view n, std::string_view v) { headers_.append(n, v); }
  std::size_t remove_header(std::string_view n) { return headers_.remove(n); }

 protected:
  HeaderMap headers_;
};

/// The request line and fields of an HTTP request.
class RequestHeader : public MessageFields {
 public:
  RequestHeader() = default;
  /// A request for `method` on `target` (origin form: "/path?query").
  static RequestHeader build(std::string_view method, std::string_view target,
                             Version v = Version::Http11);

  std::string_view method() const noexcept { return method_; }
  void set_method(std::string_view m) { method_.assign(m); }
  /// The request-target as received, e.g. "/a/b?c=d".
  std::string_view uri() const noexcept { return target_; }
  void set_uri(std::string_view target) { target_.assign(target); }
  /// The path part of the target (before '?').
  std::string_view path() const noexcept;
  /// The query part after '?', empty when none.
  std::string_view query() const noexcept;
  Version version() const noexcept { return version_; }
  void set_version(Version v) noexcept { version_ = v; }

  /// The Host field, or empty.
  std::string_view host() const noexcept { return headers_.get("host").value_or(std::string_view{}); }

  void clear() noexcept;

 private:
  std::string method_;
  std::string target_;
  Version version_ = Version::Http11;
};

/// The status line and fields of an HTTP response.
class ResponseHeader : public MessageFields {
 public:
  ResponseHeader() = default;
  static ResponseHeader build(std::uint16_t status, Version v = Version::Http11);

  std::uint16_t status() const noexcept { return status_; }
  void set_status(std::uint16_t s) noexcept {
    status_ = s;
    reason_.clear();
  }
  /// The reason phrase; the canonical one for the status when none was received or set.
  std::string_view reason() const noexcept;
  void set_reason(std::string_view r) { reason_.assign(r); }
  Version version() const noexcept { return version_; }
  void set_version(Version v) noexcept { version_ = v; }


  void clear() noexcept;

 private:
  std::uint16_t status_ = 200;
  Version version_ = Version::Http11;
  std::string reason_;
};

/// The canonical reason phrase of a status code ("OK", "Bad Gateway", ...), or "Unknown".
std::string_view reason_phrase(std::uint16_t status) noexcept;

}  // namespace portico
