// PROXY protocol headers, byte for byte: the ones portico sends upstream, and the parser of the
// ones a listener receives.
#include <gtest/gtest.h>

#include "upstream/connection.hpp"

namespace {

using portico::ProxyProtocol;
using portico::SocketAddr;
using portico::detail::parse_proxy_header;
using portico::detail::proxy_protocol_header;
using portico::detail::ProxyHeaderIn;
using portico::detail::ProxyParse;

SocketAddr addr(const char* s) { return *SocketAddr::parse(s); }

const std::string kSig("\r\n\r\n\0\r\nQUIT\n", 12);

TEST(ProxyProtocol, V1Ipv4) {
  EXPECT_EQ(proxy_protocol_header(ProxyProtocol::V1, addr("192.0.2.7:51000"), addr("10.1.2.3:443")),
            "PROXY TCP4 192.0.2.7 10.1.2.3 51000 443\r\n");
}

TEST(ProxyProtocol, V1Ipv6) {
  EXPECT_EQ(proxy_protocol_header(ProxyProtocol::V1, addr("[2001:db8::1]:65535"), addr("[::1]:80")),
            "PROXY TCP6 2001:db8::1 ::1 65535 80\r\n");
}

TEST(ProxyProtocol, V1MixedFamiliesAreUnknown) {
  EXPECT_EQ(proxy_protocol_header(ProxyProtocol::V1, addr("192.0.2.7:1"), addr("[::1]:80")),
            "PROXY UNKNOWN\r\n");
  EXPECT_EQ(proxy_protocol_header(ProxyProtocol::V1, SocketAddr{}, SocketAddr{}), "PROXY UNKNOWN\r\n");
}

TEST(ProxyProtocol, V2Ipv4) {
  std::string h = proxy_protocol_header(ProxyProtocol::V2, addr("192.0.2.7:51000"), addr("10.1.2.3:443"));
  std::string want = kSig + std::string("\x21\x11\x00\x0c", 4) + std::string("\xc0\x00\x02\x07", 4) +
                     std::string("\x0a\x01\x02\x03", 4) + std::string("\xc7\x38\x01\xbb", 4);
  EXPECT_EQ(h, want);
}

TEST(ProxyProtocol, V2Ipv6) {
  std::string h = proxy_protocol_header(ProxyProtocol::V2, addr("[2001:db8::1]:1"), addr("[::1]:2"));
  ASSERT_EQ(h.size(), 16u + 36u);
  EXPECT_EQ(h.substr(0, 16), kSig + std::string("\x21\x21\x00\x24", 4));
  EXPECT_EQ(h.substr(16, 16), std::string("\x20\x01\x0d\xb8", 4) + std::string(12, '\0').replace(11, 1, "\x01"));
  EXPECT_EQ(h.substr(32, 16), std::string(15, '\0') + "\x01");
  EXPECT_EQ(h.substr(48), std::string("\x00\x01\x00\x02", 4));
}

TEST(ProxyProtocol, V2UnknownIsLocal) {
  EXPECT_EQ(proxy_protocol_header(ProxyProtocol::V2, SocketAddr{}, SocketAddr{}),
            kSig + std::string("\x20\x00\x00\x00", 4));
}

/// Parses `text`; `why` gets the reason of an Invalid verdict.
ProxyParse parse(const std::string& text, ProxyHeaderIn& h, std::string& why) {
  return parse_proxy_header(reinterpret_cast<const unsigned char*>(text.data()), text.size(), h, why);
}

TEST(ProxyProtocolIn, RoundTripsWhatPorticoSends) {
  // Every header the encoder writes parses back to its addresses, and each of its proper
  // prefixes is Incomplete, never Invalid: the bytes may arrive one at a time.
  struct Case {
    ProxyProtocol v;
    const char* src;
    const char* dst;
  };
  for (const Case& c : {Case{ProxyProtocol::V1, "192.0.2.7:51000", "10.1.2.3:443"},
                        Case{ProxyProtocol::V1, "[2001:db8::1]:65535", "[::1]:80"},
                        Case{ProxyProtocol::V2, "192.0.2.7:51000", "10.1.2.3:443"},
                        Case{ProxyProtocol::V2, "[2001:db8::1]:1", "[::1]:2"}}) {
    const std::string h = proxy_protocol_header(c.v, addr(c.src), addr(c.dst)) + "GET / HTTP/1.1\r\n";
    const std::size_t header_len = h.size() - 16;
    for (std::size_t n = 0; n < header_len; ++n) {
      ProxyHeaderIn out;
      std::string why;
      EXPECT_EQ(parse(h.substr(0, n), out, why), ProxyParse::Incomplete) << c.src << " prefix " << n << ": " << why;
    }
    ProxyHeaderIn out;
    std::string why;
    ASSERT_EQ(parse(h, out, why), ProxyParse::Complete) << why;
    EXPECT_EQ(out.length, header_len);
    EXPECT_FALSE(out.local);
    EXPECT_EQ(out.src.to_string(), addr(c.src).to_string());
    EXPECT_EQ(out.dst.to_string(), addr(c.dst).to_string());
  }
}

TEST(ProxyProtocolIn, LocalAndUnknownKeepTheRealAddresses) {
  for (const std::string& h : {std::string("PROXY UNKNOWN\r\n"),
                               std::string("PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n"),
                               kSig + std::string("\x20\x00\x00\x00", 4),
                               // PROXY command, Unix stream addresses (216 bytes): not IP
                               kSig + std::string("\x21\x31\x00\xd8", 4) + std::string(216, 'u')}) {
    ProxyHeaderIn out;
    std::string why;
    ASSERT_EQ(parse(h + "rest", out, why), ProxyParse::Complete) << why;
    EXPECT_TRUE(out.local);
    EXPECT_EQ(out.length, h.size());
  }
}

TEST(ProxyProtocolIn, V2SkipsTlvsAfterTheAddresses) {
  // A TCP4 header with a 7-byte TLV (type 0x04 NOOP) after the 12 address bytes.
  std::string h = kSig + std::string("\x21\x11\x00\x13", 4) + std::string("\xc0\x00\x02\x07", 4) +
                  std::string("\x0a\x01\x02\x03", 4) + std::string("\xc7\x38\x01\xbb", 4) +
                  std::string("\x04\x00\x04xxxx", 7);
  ProxyHeaderIn out;
  std::string why;
  ASSERT_EQ(parse(h + "GET", out, why), ProxyParse::Complete) << why;
  EXPECT_EQ(out.length, h.size());
  EXPECT_EQ(out.src.to_string(), "192.0.2.7:51000");
}

TEST(ProxyProtocolIn, RefusesMalformedHeaders) {
  struct Case {
    const char* name;
    std::string bytes;
    const char* why;  // part of the reason
  };
  const Case cases[] = {
      {"plain HTTP", "GET / HTTP/1.1\r\n", "not a PROXY protocol header"},
      {"TLS ClientHello", std::string("\x16\x03\x01\x02\x00", 5), "not a PROXY protocol header"},
      {"lower case", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY protocol header"},
      {"unknown protocol", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "not TCP4"},
      {"IPv6 address as TCP4", "PROXY TCP4 ::1 ::1 1 2\r\n", "not IPv4"},
      {"IPv4 address as TCP6", "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "not IPv6"},
      {"port too large", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "ports"},
      {"port with leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "ports"},
      {"port not a number", "PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n", "ports"},
      {"missing port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "four fields"},
      {"extra field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "four fields"},
      {"double space", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "four fields"},
      {"bare LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "CRLF"},
      {"v1 line too long", "PROXY UNKNOWN " + std::string(120, 'a'), "107"},
      {"v2 version 1", kSig + std::string("\x11\x11\x00\x0c", 4) + std::string(12, '\0'), "version 1"},
      {"v2 command 2", kSig + std::string("\x22\x11\x00\x0c", 4) + std::string(12, '\0'), "command 2"},
      {"v2 family 4", kSig + std::string("\x21\x41\x00\x0c", 4) + std::string(12, '\0'), "family"},
      {"v2 TCP4 too short", kSig + std::string("\x21\x11\x00\x08", 4) + std::string(8, '\0'), "12 bytes"},
      {"v2 TCP6 too short", kSig + std::string("\x21\x21\x00\x0c", 4) + std::string(12, '\0'), "36 bytes"},
      {"v2 past the limit", kSig + std::string("\x21\x11\x04\x00", 4), "limit"},
      {"v2 signature broken", std::string("\r\n\r\n\0\r\nQUIX\n", 12), "not a PROXY protocol header"},
  };
  for (const auto& c : cases) {
    ProxyHeaderIn out;
    std::string why;
    EXPECT_EQ(parse(c.bytes, out, why), ProxyParse::Invalid) << c.name;
    EXPECT_NE(why.find(c.why), std::string::npos) << c.name << ": " << why;
  }
}

TEST(ProxyProtocolIn, V2HeaderAtTheLimitIsAccepted) {
  // kMaxProxyHeader bytes in all: accepted; one more: refused.
  const std::size_t body = portico::detail::kMaxProxyHeader - 16;
  auto header = [](std::size_t n) {
    std::string h = kSig + "\x21\x11" + static_cast<char>(n >> 8) + static_cast<char>(n & 0xff);
    h += std::string("\xc0\x00\x02\x07\x0a\x01\x02\x03\xc7\x38\x01\xbb", 12);
    return h + std::string(n - 12, '\0');
  };
  ProxyHeaderIn out;
  std::string why;
  EXPECT_EQ(parse(header(body), out, why), ProxyParse::Complete) << why;
  EXPECT_EQ(parse(header(body + 1), out, why), ProxyParse::Invalid);
}

}  // namespace
