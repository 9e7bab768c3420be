// portico::Error: what went wrong, on which side, and whether another attempt may fix it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace portico {

/// The kind of failure. Mirrors Pingora's ErrorType; `HTTPStatus` carries an explicit status code.
enum class ErrorType : std::uint16_t {
  ConnectTimedout,
  ConnectRefused,
  ConnectNoRoute,
  ConnectError,
  TLSHandshakeFailure,
  TLSHandshakeTimedout,
  InvalidCert,
  BindError,
  AcceptError,
  SocketError,
  InvalidHTTPHeader,
  H1Error,
  H2Error,
  InvalidH2,
  ReadError,
  WriteError,
  ReadTimedout,
  WriteTimedout,
  ConnectionClosed,
  PrematureBodyEnd,
  InvalidChunk,
  HTTPStatus,
  InternalError,
  HookPanic,
  UnknownError,
};

/// Which side of the proxy caused the failure.
enum class ErrorSource : std::uint8_t { Unset, Upstream, Downstream, Internal };

/// Whether a failed attempt may be retried. `ReusedOnly` is decided by the engine: it becomes
/// `Yes` only when the failing upstream connection came from the pool (the stale-connection race).
enum class RetryType : std::uint8_t { No, Yes, ReusedOnly };

/// The name of an error type, e.g. "ConnectRefused".
std::string_view to_string(ErrorType t) noexcept;
/// "Upstream", "Downstream", "Internal" or "Unset".
std::string_view to_string(ErrorSource s) noexcept;

/// A cheap-to-move error value. The optional context string and cause chain live in one shared,
/// immutable allocation made only when they are set; type, source, retry and status are inline.
class Error {
 public:
  Error() noexcept = default;
  Error(ErrorType type, ErrorSource source) noexcept : type_(type), source_(source) {}

  /// An error that makes the proxy answer with `status` (any source).
  static Error http_status(std::uint16_t status, std::string_view context = {});
  static Error upstream(ErrorType t, std::string_view context = {});
  static Error downstream(ErrorType t, std::string_view context = {});
  static Error internal(ErrorType t, std::string_view context = {});

  ErrorType type() const noexcept { return type_; }
  ErrorSource source() const noexcept { return source_; }
  RetryType retry_type() const noexcept { return retry_; }
  /// True when the engine may try the request again (after `ReusedOnly` was decided).
  bool retry() const noexcept { return retry_ == RetryType::Yes; }
  /// The status carried by an `HTTPStatus` error, else 0.
  std::uint16_t status() const noexcept { return status_; }
  /// Free-form context, empty when none was given.
  std::string_view context() const noexcept;
  /// The error this one was caused by, or nullptr.
  const Error* cause() const noexcept;
  /// The innermost error type of the cause chain.
  ErrorType root_type() const noexcept;

  Error& set_retry(bool r) noexcept {
    retry_ = r ? RetryType::Yes : RetryType::No;
    return *this;
  }
  Error& set_retry_type(RetryType r) noexcept {
    retry_ = r;
    return *this;
  }
  Error& set_source(ErrorSource s) noexcept {
    source_ = s;
    return *this;
  }
  /// Resolves `ReusedOnly`: retryable only when the connection was reused.
  Error& decide_reuse(bool reused) noexcept {
    if (retry_ == RetryType::ReusedOnly) retry_ = reused ? RetryType::Yes : RetryType::No;
    return *this;
  }
  /// Returns a copy with more context; type, source, retry and the previous context are kept.
  Error more_context(std::string_view extra) const;
  /// A new error of `type` whose cause is `*this`; it inherits the retry flag of the cause.
  Error because(ErrorType type, ErrorSource source, std::string_view context = {}) const;

  /// "Upstream ConnectRefused context: ... cause: ..." (the whole chain).
  std::string to_string() const;

 private:
  struct Detail;
  ErrorType type_ = ErrorType::UnknownError;
  ErrorSource source_ = ErrorSource::Unset;
  RetryType retry_ = RetryType::No;
  std::uint16_t status_ = 0;
  std::shared_ptr<const Detail> detail_;
};

}  // namespace portico
