// Opt-in helpers for the de-facto forwarding fields. Call them from upstream_request_filter.
#pragma once

#include <string_view>

#include <portico/http/message.hpp>
#include <portico/proxy/session.hpp>

namespace portico {

/// Appends the client's address to X-Forwarded-For (keeping the hops already listed), and sets
/// X-Forwarded-Proto ("http" or "https") and X-Forwarded-Host (from Host) when absent.
void add_forwarded_headers(const Session& s, RequestHeader& req, bool tls = false);

/// Appends "1.1 <pseudonym>" to the Via field of a request or response (RFC 9110 §7.6.3).
void add_via(HeaderMap& h, std::string_view pseudonym, Version received = Version::Http11);

}  // namespace portico
