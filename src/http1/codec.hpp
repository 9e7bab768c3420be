// HTTP/1.x codec: bytes in, events out. No sockets, no timers.
#pragma once

#include <cstddef>
#include <cstdint>
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

/// An incremental, strict HTTP/1 parser (RFC 9112): request and status lines, field lines,
/// Content-Length, chunked and close-delimited bodies, trailers.
///
/// `feed()` parses from `data` and stops after the first of: header section complete, message
/// complete, error, or end of input. Body events carry views into `data` (valid until the caller
/// reuses that memory). Header bytes are copied, so the input may be discarded after `Headers`.
///
/// Strictness (each is a request-smuggling or cache-poisoning vector when a proxy is lenient):
/// every line ends in CRLF (no bare LF or CR); no obs-fold; no whitespace before a field's
/// colon; field names are tokens, values hold no control character but HTAB; single spaces in
/// the start line; HTTP/1.0 and HTTP/1.1 only (505 for other versions of a request); known
/// methods only (501); origin-, absolute-, authority- (CONNECT) or asterisk-form (OPTIONS)
/// targets of visible ASCII with no fragment; one Host of valid syntax; one Content-Length of
/// digits; Transfer-Encoding exactly "chunked", never with Content-Length, never in HTTP/1.0
/// requests; hexadecimal chunk sizes without overflow, well-formed chunk extensions, CRLF after
/// every chunk and at the end of the trailers.
class Parser {
 public:
  Parser(Kind kind, ParserLimits limits);
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
  /// Whether the connection may carry another message after this one (Connection, version,
  /// and for a response, whether its body ends with the connection).
  bool keep_alive() const noexcept { return keep_alive_; }
  /// A request asking for a protocol switch (Upgrade with Connection: upgrade, or CONNECT); a
  /// 101 response.
  bool upgrade() const noexcept { return upgrade_; }
  std::uint16_t status() const noexcept { return status_; }

  /// After Event::Body: the de-chunked body bytes of the last feed().
  const std::vector<std::string_view>& body_chunks() const noexcept { return body_; }
  /// Bytes of a Content-Length body still to come (0 in any other state).
  std::uint64_t length_remaining() const noexcept {
    return state_ == State::BodyLength ? remaining_ : 0;
  }
  /// Accounts for `n` bytes (at most length_remaining()) of a Content-Length body that went
  /// around the parser (spliced from socket to socket): MessageComplete when they were the last,
  /// else NeedMore.
  Step skip_body(std::uint64_t n);
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

 private:
  struct Slot {
    std::uint32_t no, nl, vo, vl;
  };
  enum class State : std::uint8_t {
    Head, BodyNone, BodyLength, BodyClose,
    ChunkSize, ChunkExt, ChunkExtName, ChunkExtValue, ChunkExtToken, ChunkExtQuoted,
    ChunkExtQuotedEnd, ChunkSizeLf,
    ChunkData, ChunkDataCr, ChunkDataLf, Trailers,
  };

  Step feed_head(const char* data, std::size_t len);
  /// Parses the complete lines of the head in [b, b+n) from the saved position. Returns the
  /// offset just past the blank line that ends the head, 0 when more bytes are needed, or
  /// npos after an error.
  std::size_t parse_head(const char* b, std::size_t n);
  bool start_line(const char* b, std::size_t s, std::size_t e);
  bool field_line(const char* b, std::size_t s, std::size_t e);
  bool head_complete(const char* b);
  Step feed_chunked(const char* data, std::size_t len);
  bool trailer_line();
  Step complete(std::size_t consumed);
  bool fail(std::uint16_t request_status, ErrorType t, std::string_view why);
  bool fail_head(std::string_view why) { return fail(400, ErrorType::InvalidHTTPHeader, why); }
  bool fail_chunk(std::string_view why) { return fail(400, ErrorType::InvalidChunk, why); }
  /// Moves the fields of the head just parsed into `h` (empty): `h` takes the parse buffer and
  /// the parser keeps h's old one for the next message, so nothing is copied or allocated.
  void hand_over_fields(HeaderMap& h);

  Kind kind_;
  ParserLimits limits_;
  State state_ = State::Head;
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

  // The head: its bytes (copied from the input once the blank line is found, or as they come
  // when a head spans reads) and its fields as offsets into them.
  std::string raw_;
  std::vector<Slot> slots_;
  bool buffered_ = false;        // raw_ holds the first bytes of a head still incomplete
  bool start_line_done_ = false;
  std::size_t line_pos_ = 0;     // start of the first line not parsed yet
  std::size_t scan_pos_ = 0;     // where the search for its LF resumes
  std::uint32_t method_off_ = 0, method_len_ = 0, target_off_ = 0, target_len_ = 0;
  std::uint32_t reason_off_ = 0, reason_len_ = 0;
  std::uint16_t status_ = 0;
  std::uint8_t minor_ = 1;
  bool keep_alive_ = false;
  bool upgrade_ = false;
  // What the fields said, gathered as they are parsed.
  std::uint8_t hosts_ = 0, content_lengths_ = 0, transfer_encodings_ = 0;
  bool te_chunked_ = true;  // every Transfer-Encoding value is exactly "chunked"
  bool conn_close_ = false, conn_keep_alive_ = false, conn_upgrade_ = false, has_upgrade_ = false;
  std::uint32_t first_host_ = 0;  // slot of the first Host field

  // A chunked body: the current chunk, the size line's length, the trailer section.
  std::uint64_t remaining_ = 0;
  std::uint32_t size_digits_ = 0;
  std::size_t size_line_bytes_ = 0;
  std::string traw_;
  std::vector<Slot> tslots_;
  std::size_t tline_pos_ = 0;
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
