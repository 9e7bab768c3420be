#include <portico/http/header_map.hpp>
#include <portico/http/message.hpp>

using namespace portico;

TEST(HeaderMap, KeepsCaseAndInsertionOrder) {
  HeaderMap h;
  h.append("X-Custom-B", "2");
  h.append("x-custom-a", "1");
  h.append("Set-Cookie", "a=1");
  h.append("Set-Cookie", "b=2");
  ASSERT_EQ(h.size(), 4u);
  EXPECT_EQ(h[0].name, "X-Custom-B");
  EXPECT_EQ(h[1].name, "x-custom-a");
  EXPECT_EQ(h.get("X-CUSTOM-A").value(), "1");
  EXPECT_EQ(h.count("set-cookie"), 2u);
  auto all = h.get_all("set-cookie");
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1], "b=2");
}

TEST(HeaderMap, IequalsAndLowercaseFoldAsciiLettersOnly) {
  // Every pair of bytes, at every position of an 8-byte word and in the tail after it.
  auto lower = [](unsigned char c) { return c >= 'A' && c <= 'Z' ? c | 0x20 : c; };
  for (std::size_t len : {1u, 2u, 3u, 4u, 5u, 7u, 8u, 9u, 16u, 17u}) {
    for (int a = 0; a < 256; ++a) {
      for (int b = 0; b < 256; ++b) {
        std::string x(len, 'k'), y(len, 'K');
        const std::size_t at = (a * 7 + b) % len;
        x[at] = static_cast<char>(a);
        y[at] = static_cast<char>(b);
        const bool want = lower(static_cast<unsigned char>(a)) == lower(static_cast<unsigned char>(b));
        ASSERT_EQ(iequals(x, y), want) << "len " << len << " bytes " << a << " " << b;
      }
    }
  }
  for (std::size_t len : {0u, 1u, 7u, 8u, 9u, 17u}) {  // every byte, at every place of a word
    for (int c = 0; c < 256; ++c) {
      std::string in(len, 'Q');
      if (len) in[(c * 5) % len] = static_cast<char>(c);
      std::string want = in, got(len, '?');
      for (char& ch : want) ch = static_cast<char>(lower(static_cast<unsigned char>(ch)));
      to_lower_ascii(in, got.data());
      ASSERT_EQ(got, want) << "len " << len << " byte " << c;
    }
  }
  EXPECT_TRUE(iequals("", ""));
  EXPECT_FALSE(iequals("content-length", "content-lengt"));
  EXPECT_TRUE(iequals("Transfer-Encoding", "transfer-encoding"));
}

TEST(HeaderMap, InsertReplacesAllAndRemoveCounts) {
  HeaderMap h;
  h.append("Host", "a");
  h.append("Accept", "*/*");
  h.append("host", "b");
  h.insert("HOST", "c");
  EXPECT_EQ(h.count("host"), 1u);
  EXPECT_EQ(h.get("host").value(), "c");
  EXPECT_EQ(h[h.size() - 1].name, "HOST");
  EXPECT_EQ(h.remove("accept"), 1u);
  EXPECT_EQ(h.remove("accept"), 0u);
  EXPECT_FALSE(h.contains("accept"));
  EXPECT_EQ(h.size(), 1u);
}

TEST(HeaderMap, InsertFromOwnValueIsSafe) {
  HeaderMap h;
  h.append("A", "value-that-is-long-enough-to-not-fit-in-sso");
  auto v = h.get("a").value();
  h.insert("B", v);
  EXPECT_EQ(h.get("b").value(), "value-that-is-long-enough-to-not-fit-in-sso");
}

TEST(HeaderMap, ReplaceKeepsThePlaceAndTakesStringsFromTheMapItself) {
  HeaderMap h;
  h.append(":authority", "an-authority-long-enough-to-live-outside-sso.example");
  h.append("accept", "*/*");
  h.append("cookie", "a=1", true);
  const std::size_t bytes = h.byte_size();
  // The value comes from the field being replaced, the name from another one: both survive
  // the buffer growing under them.
  for (int round = 0; round < 20; ++round) {  // enough rounds for buf_ to reallocate
    h.replace(0, h[1].name, h[0].value);
    h.replace(0, "host", h[0].value);
  }
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[0].name, "host");
  EXPECT_EQ(h[0].value, "an-authority-long-enough-to-live-outside-sso.example");
  EXPECT_FALSE(h[0].sensitive);
  EXPECT_EQ(h[1].name, "accept");
  EXPECT_EQ(h.byte_size(), bytes - std::string_view(":authority").size() + 4);
  h.replace(2, "cookie", "a=1; b=2", true);
  EXPECT_TRUE(h[2].sensitive);
  EXPECT_EQ(h.get("cookie").value(), "a=1; b=2");
  h.replace(1, "x-empty", "");
  EXPECT_EQ(h[1].value, "");
  EXPECT_EQ(h.byte_size(), std::size_t{4 + 52 + 7 + 6 + 8});
}

TEST(HeaderMap, TokensAreCommaSeparatedAndCaseInsensitive) {
  HeaderMap h;
  h.append("Connection", "keep-alive, Upgrade");
  h.append("Connection", "X-Foo");
  EXPECT_TRUE(h.has_token("connection", "upgrade"));
  EXPECT_TRUE(h.has_token("connection", "x-foo"));
  EXPECT_FALSE(h.has_token("connection", "close"));
}

TEST(HeaderMap, ClearKeepsWorking) {
  HeaderMap h;
  for (int i = 0; i < 100; ++i) h.append("F" + std::to_string(i), std::to_string(i));
  h.clear();
  EXPECT_TRUE(h.empty());
  EXPECT_EQ(h.byte_size(), 0u);
  h.append("A", "b");
  EXPECT_EQ(h.get("a").value(), "b");
}

TEST(Message, RequestPathAndQuery) {
  auto r = RequestHeader::build("GET", "/a/b?c=d&e");
  EXPECT_EQ(r.path(), "/a/b");
  EXPECT_EQ(r.query(), "c=d&e");
  r.set_uri("/x");
  EXPECT_EQ(r.query(), "");
  auto resp = ResponseHeader::build(502);
  EXPECT_EQ(resp.reason(), "Bad Gateway");
  resp.set_reason("Custom");
  EXPECT_EQ(resp.reason(), "Custom");
}

// HPACK's never-indexed flag travels with the field: through copies, lookups and removals.
TEST(HeaderMap, SensitiveFieldsKeepTheirFlag) {
  HeaderMap h;
  h.append("a", "1");
  h.append("X-Secret", "s3cr3t", true);
  h.append("b", "2");
  EXPECT_FALSE(h[0].sensitive);
  EXPECT_TRUE(h[1].sensitive);
  EXPECT_EQ(h[1].value, "s3cr3t");
  EXPECT_EQ(h.get("x-secret").value(), "s3cr3t");
  EXPECT_EQ(h.get_all("x-secret"), std::vector<std::string_view>{"s3cr3t"});
  HeaderMap c = h;
  EXPECT_TRUE(c[1].sensitive);
  EXPECT_EQ(c.remove_if([](const HeaderMap::Field& f) { return f.name == "a"; }), 1u);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_TRUE(c[0].sensitive);
  EXPECT_EQ(c[0].value, "s3cr3t");
  EXPECT_FALSE(c[1].sensitive);
  std::size_t flagged = 0;
  for (auto f : c) flagged += f.sensitive;
  EXPECT_EQ(flagged, 1u);
  c.insert("x-secret", "replaced");  // a new field: not sensitive unless said so
  EXPECT_FALSE(c[c.size() - 1].sensitive);
}
