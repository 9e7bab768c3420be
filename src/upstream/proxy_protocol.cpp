// PROXY protocol v1 (text) and v2 (binary) headers, as HAProxy's specification defines them.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include "upstream/connection.hpp"

namespace portico::detail {

namespace {

const sockaddr_in* v4(const SocketAddr& a) { return reinterpret_cast<const sockaddr_in*>(a.data()); }
const sockaddr_in6* v6(const SocketAddr& a) { return reinterpret_cast<const sockaddr_in6*>(a.data()); }

void put16(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}

}  // namespace

std::string proxy_protocol_header(ProxyProtocol version, const SocketAddr& src, const SocketAddr& dst) {
  // Both ends must be IP addresses of one family; anything else is sent as "unknown".
  const bool known = src.is_ip() && src.family() == dst.family();
  const bool ipv6 = known && src.family() == AF_INET6;
  if (version == ProxyProtocol::V1) {
    if (!known) return "PROXY UNKNOWN\r\n";
    return std::string("PROXY ") + (ipv6 ? "TCP6 " : "TCP4 ") + src.host() + " " + dst.host() +
           " " + std::to_string(src.port()) + " " + std::to_string(dst.port()) + "\r\n";
  }
  static constexpr char kSig[12] = {'\r', '\n', '\r', '\n', '\0', '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};
  std::string out(kSig, sizeof kSig);
  if (!known) {
    out.push_back(static_cast<char>(0x20));  // version 2, LOCAL: the receiver uses the real peer
    out.push_back(static_cast<char>(0x00));  // UNSPEC
    put16(out, 0);
    return out;
  }
  out.push_back(static_cast<char>(0x21));                  // version 2, PROXY
  out.push_back(static_cast<char>(ipv6 ? 0x21 : 0x11));    // TCP over IPv6 / IPv4
  put16(out, ipv6 ? 36 : 12);
  if (ipv6) {
    out.append(reinterpret_cast<const char*>(&v6(src)->sin6_addr), 16);
    out.append(reinterpret_cast<const char*>(&v6(dst)->sin6_addr), 16);
  } else {
    out.append(reinterpret_cast<const char*>(&v4(src)->sin_addr), 4);
    out.append(reinterpret_cast<const char*>(&v4(dst)->sin_addr), 4);
  }
  put16(out, src.port());
  put16(out, dst.port());
  return out;
}

}  // namespace portico::detail
