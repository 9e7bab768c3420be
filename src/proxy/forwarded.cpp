#include <portico/proxy/forwarded.hpp>

#include <string>

namespace portico {

void add_forwarded_headers(const Session& s, RequestHeader& req, bool tls) {
  HeaderMap& h = req.headers();
  std::string client = s.client_addr().host();
  auto prior = h.get_all("x-forwarded-for");
  if (!prior.empty()) {
    std::string joined;
    for (auto v : prior) {
      if (!joined.empty()) joined += ", ";
      joined.append(v);
    }
    client = joined + ", " + client;
  }
  h.insert("X-Forwarded-For", client);
  if (!h.contains("x-forwarded-proto")) h.append("X-Forwarded-Proto", tls ? "https" : "http");
  if (!h.contains("x-forwarded-host")) {
    if (auto host = h.get("host")) {
      std::string copy(*host);
      h.append("X-Forwarded-Host", copy);
    }
  }
}

void add_via(HeaderMap& h, std::string_view pseudonym, Version received) {
  std::string hop = received == Version::Http10 ? "1.0 " : received == Version::Http2 ? "2 " : "1.1 ";
  hop.append(pseudonym);
  auto prior = h.get_all("via");
  if (prior.empty()) {
    h.append("Via", hop);
    return;
  }
  std::string joined;
  for (auto v : prior) {
    joined.append(v);
    joined += ", ";
  }
  joined += hop;
  h.insert("Via", joined);
}

}  // namespace portico
