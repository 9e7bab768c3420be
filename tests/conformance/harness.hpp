// Raw-socket HTTP/1.1 conformance harness: one table entry (a Case) describes the bytes a client
// sends, what it must get back, what happens to its connection afterwards, and what a recording
// origin behind the proxy must have received. run() plays one case against a fresh proxy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <portico/testing/origin.hpp>

namespace conformance {

using portico::testing::Fields;

/// One assertion on a message: a response the client got, or a request the origin got.
struct Check {
  enum class Kind : std::uint8_t {
    Has,           ///< a field named `name` (any case) is present
    Lacks,         ///< no field named `name` (any case)
    Equals,        ///< exactly one field named `name`, whose value is `value`
    Body,          ///< the (de-chunked) body is exactly `value`
    Method,        ///< origin side: the request method is exactly `value`
    Target,        ///< origin side: the request-target is exactly `value`
    Order,         ///< `lines` ("Name: value", exact case) appear in this order among the fields
    Trailer,       ///< exactly one trailer field `name` with `value`
    LacksTrailer,  ///< no trailer field named `name`
  };
  Kind kind;
  std::string name;
  std::string value;
  std::vector<std::string> lines;
};

/// Chainable checks shared by Reply and Seen: `reply(200).body("x").lacks("Y")`.
template <class Self>
struct Checks {
  std::vector<Check> checks;

  Self has(std::string name) && { return add({Check::Kind::Has, std::move(name), {}, {}}); }
  Self lacks(std::string name) && { return add({Check::Kind::Lacks, std::move(name), {}, {}}); }
  Self header(std::string name, std::string value) && {
    return add({Check::Kind::Equals, std::move(name), std::move(value), {}});
  }
  Self body(std::string value) && { return add({Check::Kind::Body, {}, std::move(value), {}}); }
  Self order(std::vector<std::string> lines) && {
    return add({Check::Kind::Order, {}, {}, std::move(lines)});
  }
  Self trailer(std::string name, std::string value) && {
    return add({Check::Kind::Trailer, std::move(name), std::move(value), {}});
  }
  Self lacks_trailer(std::string name) && {
    return add({Check::Kind::LacksTrailer, std::move(name), {}, {}});
  }

 protected:
  Self add(Check c) {
    checks.push_back(std::move(c));
    return std::move(static_cast<Self&>(*this));
  }
};

/// A response the client must receive, in order.
struct Reply : Checks<Reply> {
  /// Any of these statuses is accepted. 0 in the list also accepts "the connection was closed
  /// without a single byte of response" (then nothing else is read).
  std::vector<unsigned> statuses;
  /// The request was HEAD: the response has no body whatever its framing fields say.
  bool head_request = false;
  /// Bytes the client sends once this response arrived (e.g. a body after "100 Continue").
  std::string then;

  Reply head() && {
    head_request = true;
    return std::move(*this);
  }
  Reply then_send(std::string bytes) && {
    then = std::move(bytes);
    return std::move(*this);
  }
};

inline Reply reply(unsigned status) {
  Reply r;
  r.statuses = {status};
  return r;
}
inline Reply reply_any(std::vector<unsigned> statuses) {
  Reply r;
  r.statuses = std::move(statuses);
  return r;
}

/// Checks on the `index`-th complete request the origin received (probes excluded).
struct Seen : Checks<Seen> {
  std::size_t index = 0;
  Seen method(std::string m) && { return add({Check::Kind::Method, {}, std::move(m), {}}); }
  Seen target(std::string t) && { return add({Check::Kind::Target, {}, std::move(t), {}}); }
};

inline Seen seen(std::size_t index) {
  Seen s;
  s.index = index;
  return s;
}

/// What the client connection must do once the expected responses arrived.
enum class After : std::uint8_t {
  Close,      ///< the proxy closes it, with no further byte
  KeepAlive,  ///< it stays usable: a probe request on it gets its own, correct response
  Any,        ///< not checked
};

/// HttpServerOptions limits for one case; 0 keeps the default.
struct Limits {
  std::size_t header_bytes = 0;
  std::size_t header_count = 0;
  std::size_t target_bytes = 0;
  std::size_t response_header_bytes = 0;
};

struct Case {
  /// GoogleTest name: letters, digits and '_' only.
  std::string name;
  /// Raw bytes the client sends at once.
  std::string send;
  /// Responses the client must get, in order; empty: the connection closes without a response.
  std::vector<Reply> replies;
  After after = After::Close;
  /// Exact number of complete requests the origin must receive (probe requests not counted).
  std::size_t origin_requests = 0;
  /// Checks on those requests.
  std::vector<Seen> seen = {};
  /// Raw bytes the origin answers every (non-probe) request with. Empty: a well-behaved
  /// "200 OK" whose body is the request-target. If it contains "Connection: close" the origin
  /// closes the connection after writing it.
  std::string origin_response = {};
  Limits limits = {};
  /// The proxy streams request bodies, so a request whose body turns out invalid has already
  /// had its head (and maybe part of its body) forwarded; the origin then sees an incomplete
  /// request and a closed connection. True allows that; a complete request is never allowed.
  bool partial_ok = false;
};

/// Runs one case against a fresh origin and proxy; reports failures with GoogleTest.
void run(const Case& c);

/// Printable bytes: CR, LF, NUL and other non-printables escaped.
std::string escape(std::string_view bytes);

void PrintTo(const Case& c, std::ostream* os);

}  // namespace conformance
