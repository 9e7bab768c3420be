// The fields that belong to one connection, not to the message (RFC 9110 §7.6.1), by name: what
// the HTTP/1 codec strips before forwarding and what HTTP/2 forbids (RFC 9113 §8.2.2).
#pragma once

#include <string_view>

#include <portico/http/header_map.hpp>

namespace portico {

/// Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade (case-insensitive); TE,
/// hop-by-hop too but kept when it asks for trailers, is left to the callers.
inline bool is_connection_specific(std::string_view name) noexcept {
  // By length first: most names are none of these, and are told so by one comparison.
  switch (name.size()) {
    case 7: return iequals(name, "upgrade");
    case 10: return iequals(name, "connection") || iequals(name, "keep-alive");
    case 16: return iequals(name, "proxy-connection");
    case 17: return iequals(name, "transfer-encoding");
    default: return false;
  }
}

}  // namespace portico
