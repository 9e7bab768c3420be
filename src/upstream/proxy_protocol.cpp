// PROXY protocol v1 (text) and v2 (binary) headers, as HAProxy's specification defines them.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <string_view>

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

namespace {

constexpr unsigned char kV2Sig[12] = {'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

/// A decimal port without leading zeros, 0..65535.
bool parse_port(std::string_view t, std::uint16_t& out) {
  if (t.empty() || t.size() > 5 || (t.size() > 1 && t[0] == '0')) return false;
  unsigned v = 0;
  for (char c : t) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > 65535) return false;
  out = static_cast<std::uint16_t>(v);
  return true;
}

SocketAddr make_addr(int family, const void* ip, std::uint16_t port) {
  if (family == AF_INET) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    std::memcpy(&sa.sin_addr, ip, 4);
    sa.sin_port = htons(port);
    return SocketAddr::from_sockaddr(reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
  }
  sockaddr_in6 sa{};
  sa.sin6_family = AF_INET6;
  std::memcpy(&sa.sin6_addr, ip, 16);
  sa.sin6_port = htons(port);
  return SocketAddr::from_sockaddr(reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
}

ProxyParse parse_v1(std::string_view d, ProxyHeaderIn& out, std::string& why) {
  // "PROXY TCP4 1.2.3.4 5.6.7.8 111 222\r\n", at most 107 bytes with the CRLF.
  constexpr std::size_t kMaxV1 = 107;
  const auto crlf = d.substr(0, kMaxV1).find("\r\n");
  if (crlf == std::string_view::npos) {
    if (d.size() >= kMaxV1) {
      why = "PROXY v1 line longer than 107 bytes";
      return ProxyParse::Invalid;
    }
    if (d.find('\n') != std::string_view::npos) {
      why = "PROXY v1 line not ended by CRLF";
      return ProxyParse::Invalid;
    }
    return ProxyParse::Incomplete;
  }
  std::string_view line = d.substr(0, crlf);
  out.length = crlf + 2;
  line.remove_prefix(6);  // "PROXY "
  if (line.substr(0, 7) == "UNKNOWN") {
    out.local = true;
    return ProxyParse::Complete;
  }
  int family = 0;
  if (line.substr(0, 5) == "TCP4 ")
    family = AF_INET;
  else if (line.substr(0, 5) == "TCP6 ")
    family = AF_INET6;
  if (family == 0) {
    why = "PROXY v1: protocol is not TCP4, TCP6 or UNKNOWN";
    return ProxyParse::Invalid;
  }
  line.remove_prefix(5);
  std::string_view f[4];
  for (int i = 0; i < 4; ++i) {
    const auto sp = line.find(' ');
    if ((i < 3) == (sp == std::string_view::npos)) {
      why = "PROXY v1: expected four fields after the protocol, separated by single spaces";
      return ProxyParse::Invalid;
    }
    f[i] = line.substr(0, sp);
    line = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
  }
  unsigned char src[16], dst[16];
  std::uint16_t sport = 0, dport = 0;
  const std::string s0(f[0]), s1(f[1]);
  if (::inet_pton(family, s0.c_str(), src) != 1 || ::inet_pton(family, s1.c_str(), dst) != 1) {
    why = "PROXY v1: addresses are not " + std::string(family == AF_INET ? "IPv4" : "IPv6");
    return ProxyParse::Invalid;
  }
  if (!parse_port(f[2], sport) || !parse_port(f[3], dport)) {
    why = "PROXY v1: ports must be decimal numbers 0..65535 without leading zeros";
    return ProxyParse::Invalid;
  }
  out.src = make_addr(family, src, sport);
  out.dst = make_addr(family, dst, dport);
  return ProxyParse::Complete;
}

ProxyParse parse_v2(const unsigned char* d, std::size_t len, ProxyHeaderIn& out,
                    std::string& why) {
  if (len < 16) return ProxyParse::Incomplete;
  const unsigned ver = d[12] >> 4, cmd = d[12] & 0x0f;
  if (ver != 2) {
    why = "PROXY v2: version " + std::to_string(ver);
    return ProxyParse::Invalid;
  }
  if (cmd > 1) {
    why = "PROXY v2: command " + std::to_string(cmd) + " is neither LOCAL nor PROXY";
    return ProxyParse::Invalid;
  }
  const std::size_t body = (std::size_t{d[14]} << 8) | d[15];
  if (16 + body > kMaxProxyHeader) {
    why = "PROXY v2 header of " + std::to_string(16 + body) + " bytes (limit " +
          std::to_string(kMaxProxyHeader) + ")";
    return ProxyParse::Invalid;
  }
  if (len < 16 + body) return ProxyParse::Incomplete;
  out.length = 16 + body;
  const unsigned fam = d[13] >> 4, proto = d[13] & 0x0f;
  if (fam > 3 || proto > 2) {
    why = "PROXY v2: unknown address family or protocol";
    return ProxyParse::Invalid;
  }
  const unsigned char* a = d + 16;
  if (cmd == 1 && proto == 1 && fam == 1) {  // TCP over IPv4
    if (body < 12) {
      why = "PROXY v2: TCP4 addresses need 12 bytes";
      return ProxyParse::Invalid;
    }
    out.src = make_addr(AF_INET, a, static_cast<std::uint16_t>((a[8] << 8) | a[9]));
    out.dst = make_addr(AF_INET, a + 4, static_cast<std::uint16_t>((a[10] << 8) | a[11]));
    return ProxyParse::Complete;
  }
  if (cmd == 1 && proto == 1 && fam == 2) {  // TCP over IPv6
    if (body < 36) {
      why = "PROXY v2: TCP6 addresses need 36 bytes";
      return ProxyParse::Invalid;
    }
    out.src = make_addr(AF_INET6, a, static_cast<std::uint16_t>((a[32] << 8) | a[33]));
    out.dst = make_addr(AF_INET6, a + 16, static_cast<std::uint16_t>((a[34] << 8) | a[35]));
    return ProxyParse::Complete;
  }
  // LOCAL (health checks of the balancer itself), UNSPEC, UDP or Unix: keep the real addresses.
  out.local = true;
  return ProxyParse::Complete;
}

}  // namespace

ProxyParse parse_proxy_header(const unsigned char* data, std::size_t len, ProxyHeaderIn& out,
                              std::string& why) {
  out = ProxyHeaderIn{};
  static constexpr std::string_view kV1 = "PROXY ";
  const std::size_t v1n = std::min(len, kV1.size());
  if (len > 0 && data[0] == 'P') {
    if (std::memcmp(data, kV1.data(), v1n) != 0) {
      why = "not a PROXY protocol header";
      return ProxyParse::Invalid;
    }
    if (len < kV1.size()) return ProxyParse::Incomplete;
    return parse_v1(std::string_view(reinterpret_cast<const char*>(data), len), out, why);
  }
  const std::size_t v2n = std::min(len, sizeof kV2Sig);
  if (len == 0) return ProxyParse::Incomplete;
  if (std::memcmp(data, kV2Sig, v2n) != 0) {
    why = "not a PROXY protocol header";
    return ProxyParse::Invalid;
  }
  return parse_v2(data, len, out, why);
}

}  // namespace portico::detail
