#include <portico/proxy/proxy_http.hpp>

namespace portico {

namespace detail {

std::uint16_t default_error_status(const Error& e) noexcept {
  if (e.type() == ErrorType::HTTPStatus) return e.status();
  switch (e.source()) {
    case ErrorSource::Upstream:
      if (e.type() == ErrorType::ReadTimedout || e.type() == ErrorType::WriteTimedout) return 504;
      return 502;
    case ErrorSource::Downstream:
      switch (e.type()) {
        case ErrorType::ReadError:
        case ErrorType::WriteError:
        case ErrorType::ConnectionClosed:
        case ErrorType::ReadTimedout:
        case ErrorType::WriteTimedout:
        case ErrorType::PrematureBodyEnd:
          return 0;
        default:
          return 400;
      }
    case ErrorSource::Internal:
    case ErrorSource::Unset:
      break;
  }
  return 500;
}

task<FailToProxy> default_fail_to_proxy(Session& s, const Error& e) {
  if (s.response_written()) co_return FailToProxy{0, false};
  const std::uint16_t code = default_error_status(e);
  if (code > 0) co_await s.respond_error(code);
  co_return FailToProxy{code, false};
}

Error default_error_while_proxy(const HttpPeer& peer, Error e, bool client_reused) {
  e.decide_reuse(client_reused);
  if (e.context().find("peer: ") == std::string_view::npos)
    return e.more_context("peer: " + peer.to_string());
  return e;
}

}  // namespace detail

std::uint64_t HttpPeer::reuse_hash() const noexcept {
  std::uint64_t h = address.hash();
  auto mix = [&h](std::uint64_t v) { h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2); };
  // Most of the strings are empty (plain text, default verification): not hashed.
  auto text = [](const std::string& s) -> std::uint64_t {
    return s.empty() ? 0 : std::hash<std::string>{}(s);
  };
  mix(tls);
  mix(text(sni));
  mix(options.verify_cert);
  mix(options.verify_hostname);
  mix(text(options.ca_file));
  mix(text(options.client_cert_file));
  mix(text(options.client_key_file));
  mix(static_cast<std::uint64_t>(options.alpn));
  mix(static_cast<std::uint64_t>(options.proxy_protocol));
  mix(group_key);
  return h;
}

std::string HttpPeer::to_string() const {
  if (!tls) return address.to_string();
  return "tls://" + sni + "@" + address.to_string();
}

HttpPeerPtr make_peer(SocketAddr addr, bool tls, std::string sni) {
  return std::make_shared<const HttpPeer>(addr, tls, std::move(sni));
}

}  // namespace portico
