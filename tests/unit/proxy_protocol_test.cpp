// PROXY protocol headers, byte for byte.
#include <gtest/gtest.h>

#include "upstream/connection.hpp"

namespace {

using portico::ProxyProtocol;
using portico::SocketAddr;
using portico::detail::proxy_protocol_header;

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

}  // namespace
