#include <portico/core/error.hpp>
#include <portico/proxy/proxy_http.hpp>

using namespace portico;

TEST(Error, StatusMappingFollowsSourceAndType) {
  using detail::default_error_status;
  EXPECT_EQ(default_error_status(Error::http_status(403)), 403);
  EXPECT_EQ(default_error_status(Error::upstream(ErrorType::ConnectRefused)), 502);
  EXPECT_EQ(default_error_status(Error::upstream(ErrorType::ConnectTimedout)), 502);
  EXPECT_EQ(default_error_status(Error::upstream(ErrorType::ReadTimedout)), 504);
  EXPECT_EQ(default_error_status(Error::upstream(ErrorType::WriteTimedout)), 504);
  EXPECT_EQ(default_error_status(Error::downstream(ErrorType::ConnectionClosed)), 0);
  EXPECT_EQ(default_error_status(Error::downstream(ErrorType::ReadError)), 0);
  EXPECT_EQ(default_error_status(Error::downstream(ErrorType::InvalidHTTPHeader)), 400);
  EXPECT_EQ(default_error_status(Error::internal(ErrorType::InternalError)), 500);
  EXPECT_EQ(default_error_status(Error(ErrorType::HookPanic, ErrorSource::Unset)), 500);
}

TEST(Error, ContextAndCauseChainPrint) {
  Error root = Error::upstream(ErrorType::ConnectRefused, "connecting to 127.0.0.1:1");
  Error outer = root.because(ErrorType::InternalError, ErrorSource::Internal, "while proxying");
  EXPECT_EQ(outer.root_type(), ErrorType::ConnectRefused);
  ASSERT_NE(outer.cause(), nullptr);
  EXPECT_EQ(outer.cause()->context(), "connecting to 127.0.0.1:1");
  const std::string s = outer.to_string();
  EXPECT_NE(s.find("Internal InternalError context: while proxying"), std::string::npos) << s;
  EXPECT_NE(s.find("cause: Upstream ConnectRefused context: connecting to 127.0.0.1:1"), std::string::npos) << s;
  Error more = root.more_context("peer: x");
  EXPECT_EQ(more.context(), "connecting to 127.0.0.1:1, peer: x");
  EXPECT_EQ(more.type(), ErrorType::ConnectRefused);
}

TEST(Error, ReusedOnlyIsDecidedByReuse) {
  Error e = Error::upstream(ErrorType::ConnectionClosed);
  e.set_retry_type(RetryType::ReusedOnly);
  EXPECT_FALSE(e.retry());
  Error a = e, b = e;
  EXPECT_TRUE(a.decide_reuse(true).retry());
  EXPECT_FALSE(b.decide_reuse(false).retry());
  Error c = detail::default_error_while_proxy(HttpPeer(SocketAddr::loopback(80), false), e, true);
  EXPECT_TRUE(c.retry());
  EXPECT_NE(c.context().find("peer: 127.0.0.1:80"), std::string_view::npos);
}

TEST(Error, ResultCarriesValueOrError) {
  Result<int> good = 5;
  Result<int> bad = Error::http_status(404);
  ASSERT_TRUE(good.has_value());
  EXPECT_EQ(*good, 5);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().status(), 404);
  EXPECT_THROW((void)bad.value(), std::runtime_error);
}
