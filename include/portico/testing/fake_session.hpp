// FakeSession: call a hook directly, without sockets, and look at what it did.
#pragma once

#include <string>
#include <utility>

#include <portico/proxy/session.hpp>

namespace portico::testing {

/// A Session whose request header the test fills in and whose response is recorded.
/// Run hooks on any io_context (e.g. `co_spawn(ctx, hook(...), ...)`; `ctx.run()`).
class FakeSession final : public Session {
 public:
  explicit FakeSession(RequestHeader req = RequestHeader::build("GET", "/"),
                       SocketAddr client = SocketAddr::loopback(40000)) {
    req_ = std::move(req);
    client_addr_ = client;
    start_ = clock::now();
  }

  task<Result<void>> write_response_header(ResponseHeader resp, bool end_of_stream) override {
    if (response_written())
      co_return Error::internal(ErrorType::InternalError, "a response header was already sent");
    resp_status_ = resp.status();
    response = std::move(resp);
    ended = end_of_stream;
    co_return ok();
  }
  task<Result<void>> write_response_body(std::string_view data, bool end_of_stream) override {
    body.append(data);
    body_sent_ += data.size();
    ended = end_of_stream;
    co_return ok();
  }

  void set_retries(std::uint32_t n) noexcept { retries_ = n; }

  ResponseHeader response;
  std::string body;
  bool ended = false;
};

}  // namespace portico::testing
