#include <portico/proxy/session.hpp>

#include <string>

namespace portico {

Session::~Session() = default;

task<Result<void>> Session::respond(std::uint16_t status, std::string_view body,
                                    std::string_view content_type) {
  ResponseHeader h = ResponseHeader::build(status);
  if (!body.empty() && !content_type.empty()) h.append_header("Content-Type", content_type);
  h.append_header("Content-Length", std::to_string(body.size()));
  if (auto r = co_await write_response_header(std::move(h), body.empty()); !r) co_return r;
  if (body.empty()) co_return ok();
  co_return co_await write_response_body(body, true);
}

task<Result<void>> Session::respond_error(std::uint16_t status) {
  keepalive_ = false;
  std::string body = std::to_string(status);
  body += ' ';
  body += reason_phrase(status);
  body += '\n';
  ResponseHeader h = ResponseHeader::build(status);
  h.append_header("Content-Type", "text/plain");
  h.append_header("Content-Length", std::to_string(body.size()));
  h.append_header("Cache-Control", "private, no-store");
  if (auto r = co_await write_response_header(std::move(h), false); !r) co_return r;
  co_return co_await write_response_body(body, true);
}

std::string Session::request_summary() const {
  std::string s(req_.method());
  s += ' ';
  s += req_.uri();
  s += ", Host: ";
  s += req_.host();
  return s;
}

}  // namespace portico
