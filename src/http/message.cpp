#include <portico/http/message.hpp>

namespace portico {

RequestHeader RequestHeader::build(std::string_view method, std::string_view target, Version v) {
  RequestHeader r;
  r.method_.assign(method);
  r.target_.assign(target);
  r.version_ = v;
  return r;
}

std::string_view RequestHeader::path() const noexcept {
  std::string_view t = target_;
  return t.substr(0, t.find('?'));
}

std::string_view RequestHeader::query() const noexcept {
  std::string_view t = target_;
  auto q = t.find('?');
  return q == std::string_view::npos ? std::string_view{} : t.substr(q + 1);
}

void RequestHeader::clear() noexcept {
  method_.clear();
  target_.clear();
  version_ = Version::Http11;
  headers_.clear();
}

ResponseHeader ResponseHeader::build(std::uint16_t status, Version v) {
  ResponseHeader r;
  r.status_ = status;
  r.version_ = v;
  return r;
}

std::string_view ResponseHeader::reason() const noexcept {
  return reason_.empty() ? reason_phrase(status_) : std::string_view(reason_);
}

void ResponseHeader::clear() noexcept {
  status_ = 200;
  version_ = Version::Http11;
  reason_.clear();
  headers_.clear();
}

std::string_view reason_phrase(std::uint16_t s) noexcept {
  switch (s) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

}  // namespace portico
