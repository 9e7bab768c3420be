// HTTP/1.x codec: bytes in, events out. No sockets, no timers; llhttp stays behind this header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <portico/core/error.hpp>
#include <portico/http/header_map.hpp>
#include <portico/http/message.hpp>

namespace portico::http1 {

enum class Kind : std::uint8_t { Request, Response };

struct ParserLimits {
  std::size_t max_header_bytes = 64 * 1024;
  std::size_t max_header_count = 128;
  std::size_t max_target_bytes = 8 * 1024;
};

enum class Event : std::uint8_t {
  NeedMore,         ///< all input consumed; feed more bytes
  Headers,          ///< a header section is complete: take_request/take_response
  Body,             ///< body bytes in body_chunks(); consumed bytes may contain more
  MessageComplete,  ///< the message ended; the rest of the input is the next message
  Error,            ///< the input is invalid; see error_status()/error_reason()
};

/// How the body of a parsed message is delimited.
enum class Framing : std::uint8_t { None, ContentLength, Chunked, UntilClose };

/// An incremental HTTP/1 parser wrapping llhttp in strict mode.
///
/// `feed()` parses from `data` and stops after the first of: header section complete, message
/// complete, error, or end of input. Body events carry views into `data` (valid until the caller
/// reuses that memory). Header bytes are copied, so the input may be discarded after `Headers`.
class Parser {
 public:
  Parser(Kind kind, ParserLimits limits);
  ~Parser();
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  struct Step {
    Event event;
    std::size_t consumed;
  };
  Step feed(const char* data, std::size_t len);
  /// Signals EOF: completes a close-delimited body, or reports a truncated message.
  Step finish();

  /// For a response parser: the request was HEAD (or the status forbids a body), so the next
  /// response has no body whatever its framing fields say.
  void set_no_body_expected(bool v) noexcept { no_body_expected_ = v; }

  /// After Event::Headers.
  void take_request(RequestHeader& out);
  void take_response(ResponseHeader& out);
  Framing framing() const noexcept { return framing_; }
  std::uint64_t content_length() const noexcept { return content_length_; }
  bool keep_alive() const noexcept;
  bool upgrade() const noexcept;
  std::uint16_t status() const noexcept;

  /// After Event::Body: the de-chunked body bytes of the last feed().
  const std::vector<std::string_view>& body_chunks() const noexcept { return body_; }
  /// Trailer fields of a chunked message, complete at MessageComplete.
  HeaderMap& trailers() noexcept { return trailers_; }
  /// True between Headers and MessageComplete.
  bool in_body() const noexcept { return in_body_; }
  /// True when no byte of the current message arrived yet.
  bool idle() const noexcept { return !started_; }

  /// After Event::Error: the status to answer with (400, 413, 414, 431, 501, 505) and why.
  std::uint16_t error_status() const noexcept { return err_status_; }
  std::string_view error_reason() const noexcept { return err_reason_; }
  ErrorType error_type() const noexcept { return err_type_; }

  struct Impl;

 private:
  bool scan_head(Impl& i, const char* data, std::size_t n);
  /// Moves the fields of the head just parsed into `h` (empty): `h` takes the parse buffer and
  /// the parser keeps h's old one for the next message, so nothing is copied or allocated.
  static void hand_over_fields(Impl& i, HeaderMap& h);

  std::unique_ptr<Impl> impl_;
  Kind kind_;
  ParserLimits limits_;
  bool no_body_expected_ = false;
  bool in_body_ = false;
  bool started_ = false;
  Framing framing_ = Framing::None;
  std::uint64_t content_length_ = 0;
  std::vector<std::string_view> body_;
  HeaderMap trailers_;
  std::uint16_t err_status_ = 0;
  ErrorType err_type_ = ErrorType::InvalidHTTPHeader;
  std::string err_reason_;
  friend struct Callbacks;
};

/// Appends "METHOD target HTTP/1.1\r\n" + fields + "\r\n".
void serialize_request_head(const RequestHeader& r, std::string& out);
/// Appends "HTTP/1.1 status reason\r\n" + fields + "\r\n".
void serialize_response_head(const ResponseHeader& r, std::string& out);
/// Appends the chunk-size line of a chunk of `n` bytes ("1a\r\n").
void append_chunk_size(std::size_t n, std::string& out);
/// Appends the last chunk and trailers ("0\r\n" fields "\r\n").
void append_last_chunk(const HeaderMap* trailers, std::string& out);

/// Removes the hop-by-hop fields of RFC 9110 §7.6.1 (Connection and the fields it names,
/// Keep-Alive, Proxy-Connection, TE except "trailers", Transfer-Encoding, Upgrade).
void strip_hop_by_hop(HeaderMap& h);

}  // namespace portico::http1
