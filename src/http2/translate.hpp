// HTTP/1.1 <-> HTTP/2 message heads: pseudo-header fields, Host/:authority, cookie crumbs,
// connection-specific fields (RFC 9113 §8.2, §8.3), and the Content-Length check of §8.1.1.
//
// An HTTP/2 field list is a HeaderMap whose pseudo-header fields (":method", ":status", ...) come
// first, with lowercase names, exactly as HPACK carries it. The `to_*` functions validate such a
// list as a recipient must (a failure means the message is malformed: the stream is reset with
// PROTOCOL_ERROR, or a request answered 400) and build portico's types; the `from_*` functions
// build a list a peer accepts from portico's types, dropping what HTTP/2 forbids.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <portico/core/result.hpp>
#include <portico/http/header_map.hpp>
#include <portico/http/message.hpp>

#include "http/connection_fields.hpp"

namespace portico::h2 {

/// Validates a received request field list (RFC 9113 §8.2, §8.3.1) and converts it.
///
/// Rejects: a pseudo-header field after a regular one, unknown, duplicated or missing
/// pseudo-header fields, a response pseudo-header, an empty ":path" (or "*" on a method other than
/// OPTIONS), an ":authority" with userinfo, uppercase or invalid field names, values with CR, LF,
/// NUL or leading/trailing whitespace, connection-specific fields (connection, keep-alive,
/// proxy-connection, transfer-encoding, upgrade) and TE with a value other than "trailers".
/// CONNECT (RFC 9113 §8.5) takes ":method" and ":authority" only, and becomes
/// "CONNECT authority". Otherwise ":path" becomes the target and ":authority", when present,
/// becomes the Host field (replacing a Host the client sent); without it the Host field is kept.
/// Cookie crumbs are joined with "; " into one field at the place of the first one (§8.2.3).
/// `out` gets version Http2. `scheme`, when given, receives ":scheme" (empty for CONNECT).
/// Errors are `InvalidH2` from the Downstream side, with the reason as context.
/// `checked`: `in` passed request_problem() already (the session checks every request head).
Result<void> to_request(const HeaderMap& in, RequestHeader& out, std::string* scheme = nullptr,
                        bool checked = false);

/// As to_request, but the field list `in` becomes the request's (no field is copied); `in` gets
/// the memory of the head it replaces.
Result<void> take_request(HeaderMap& in, RequestHeader& out, std::string* scheme = nullptr,
                          bool checked = false);

/// What request_problem and response_problem note on their way through a list they find valid,
/// for a caller that would otherwise walk it again.
struct HeadSeen {
  bool content_length = false;  ///< a content-length field is present
  bool head = false;            ///< a request's ":method" is HEAD
};

/// Why a received request field list is malformed (RFC 9113 §8.1.1, §8.2, §8.3.1), or null: the
/// checks of `to_request` without the translation. Beyond the RFC's musts, what the request
/// becomes upstream must be valid HTTP/1: `:path` visible ASCII without a fragment, `:authority`
/// a host and optional port, `:scheme` a URI scheme, field values without control characters.
const char* request_problem(const HeaderMap& in, HeadSeen* seen = nullptr) noexcept;

/// Why a received response field list is malformed (RFC 9113 §8.1.1, §8.2, §8.3.2: ":status"
/// only, first, three digits, not 101; the field rules of `request_problem`), or null, and then
/// `status` holds its code.
const char* response_problem(const HeaderMap& in, std::uint16_t& status,
                             HeadSeen* seen = nullptr) noexcept;

/// Why a received trailer section is malformed (a pseudo-header field, or the field rules of
/// `request_problem`), or null.
const char* trailers_problem(const HeaderMap& in) noexcept;

/// Validates a received response field list (response_problem; not again when `checked`, as
/// the client session checks every head it reports) and makes it `out`, without copying: the
/// fields of `in` become `out`'s (":status" left out) and `in` gets the map `out` had, cleared.
/// On failure both are unchanged. A 1xx status is taken as is: the caller forwards 100/103 as
/// interim responses and waits for the final one. Errors are `InvalidH2` from the Upstream side.
Result<void> take_response(HeaderMap& in, ResponseHeader& out, bool checked = false);

/// Validates a received trailer section (trailers_problem). Fields are appended to `out`.
Result<void> to_trailers(const HeaderMap& in, HeaderMap& out, bool from_upstream);

/// Builds the field list of `r` for an HTTP/2 peer.
///
/// ":authority" comes from the Host field, else from an absolute-form target; ":path" is the
/// origin-form target ("/" when empty, "*" kept for OPTIONS); ":scheme" is `scheme`. CONNECT gets
/// ":method" and ":authority" only. Connection-specific fields and every field named in Connection
/// are dropped, TE is kept only as "te: trailers" when it listed trailers, Host is dropped (it is
/// ":authority"), names are lowercased. With `split_cookies`, a Cookie field is split into crumbs,
/// which compress better in HPACK (RFC 9113 §8.2.3).
void from_request(const RequestHeader& r, HeaderMap& out, std::string_view scheme = "https",
                  bool split_cookies = false);

/// Builds the field list of `r`: ":status" then the fields, with the same dropping rules as
/// `from_request`. A 101 response cannot be carried by HTTP/2 (RFC 9113 §8.6): that is an error
/// (`H2Error`, Internal); 100 and 103 become interim HEADERS frames.
Result<void> from_response(const ResponseHeader& r, HeaderMap& out);

/// Copies trailer fields to send, lowercased, without connection-specific or pseudo-header fields.
void from_trailers(const HeaderMap& in, HeaderMap& out);

/// False for the statuses an HTTP/2 response cannot carry: 101 (RFC 9113 §8.6), and any not of
/// three digits.
bool status_expressible(std::uint16_t status) noexcept;

/// Receives one field for an HTTP/2 peer; `name` keeps the case it had. `sensitive`: to be sent
/// never-indexed (HeaderMap::Field::sensitive).
using FieldSink = void (*)(void* ctx, std::string_view name, std::string_view value,
                           bool sensitive);
/// Passes to `sink` the regular fields of `h` an HTTP/2 peer may get, by the dropping rules of
/// `from_request` (without lowercasing; Host dropped when `skip_host`, Cookie split into crumbs
/// with `split_cookies`): the walk behind from_request/from_response, for a caller that builds
/// its own list. Returns whether TE listed trailers.
bool for_each_h2_field(const HeaderMap& h, bool skip_host, bool split_cookies, FieldSink sink,
                       void* ctx);
/// What from_request appends, given field by field to `sink` instead (names as they are in `r`,
/// not lowercased): for a caller that encodes them at once.
void for_each_request_field(const RequestHeader& r, std::string_view scheme, bool split_cookies,
                            FieldSink sink, void* ctx);

/// True for the fields RFC 9113 §8.2.2 forbids in HTTP/2 (TE aside): connection, keep-alive,
/// proxy-connection, transfer-encoding, upgrade; the HTTP/1 codec's hop-by-hop set too.
using portico::is_connection_specific;

/// A field name as HTTP/2 allows it: a non-empty token of lowercase characters (RFC 9113 §8.2.1).
bool valid_field_name(std::string_view name) noexcept;
/// A field value as RFC 9113 §8.2.1 allows it (no leading or trailing SP or HTAB) made of what
/// RFC 9110 §5.5 allows (HTAB, SP, VCHAR, obs-text): no control character, no DEL.
bool valid_field_value(std::string_view value) noexcept;

/// Checks that a message body matches its Content-Length (RFC 9113 §8.1.1): a DATA total above
/// it, or an end of stream below it, makes the message malformed.
class ContentLength {
 public:
  ContentLength() = default;
  /// Parses the Content-Length fields of `h` (several must carry the same number). `no_body`: the
  /// message has no content whatever the field says (a response to HEAD, a 204 or 304).
  static Result<ContentLength> from_fields(const HeaderMap& h, bool no_body, bool from_upstream);
  /// A message without a Content-Length field (what from_fields finds then).
  static ContentLength absent(bool no_body) noexcept {
    ContentLength cl;
    cl.no_body_ = no_body;
    return cl;
  }

  /// Whether a Content-Length applies to the body.
  bool known() const noexcept { return expected_ >= 0; }
  std::int64_t expected() const noexcept { return expected_; }
  std::uint64_t received() const noexcept { return received_; }
  /// Counts `n` body bytes; false when the total now exceeds the declared length (or the message
  /// has no body at all).
  bool add(std::uint64_t n) noexcept;
  /// Whether `n` more bytes would still fit.
  bool fits(std::uint64_t n) const noexcept;
  /// At end of stream: false when fewer bytes than declared arrived.
  bool complete() const noexcept;

 private:
  std::int64_t expected_ = -1;
  std::uint64_t received_ = 0;
  bool no_body_ = false;
};

}  // namespace portico::h2
