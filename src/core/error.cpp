#include <portico/core/error.hpp>
#include <portico/core/result.hpp>

#include <stdexcept>

namespace portico {

struct Error::Detail {
  std::string context;
  std::shared_ptr<const Error> cause;
};

namespace {
constexpr std::string_view kTypeNames[] = {
    "ConnectTimedout", "ConnectRefused",   "ConnectNoRoute",   "ConnectError",
    "TLSHandshakeFailure", "TLSHandshakeTimedout", "InvalidCert", "BindError",
    "AcceptError",     "SocketError",      "InvalidHTTPHeader", "H1Error",
    "H2Error",         "InvalidH2",        "ReadError",        "WriteError",
    "ReadTimedout",    "WriteTimedout",    "ConnectionClosed", "PrematureBodyEnd",
    "InvalidChunk",    "HTTPStatus",       "InternalError",    "HookPanic",
    "UnknownError",
};
static_assert(std::size(kTypeNames) == static_cast<std::size_t>(ErrorType::UnknownError) + 1);

Error with_context(Error e, std::string_view ctx) { return e.more_context(ctx); }
}  // namespace

std::string_view to_string(ErrorType t) noexcept {
  auto i = static_cast<std::size_t>(t);
  return i < std::size(kTypeNames) ? kTypeNames[i] : "UnknownError";
}

std::string_view to_string(ErrorSource s) noexcept {
  switch (s) {
    case ErrorSource::Upstream: return "Upstream";
    case ErrorSource::Downstream: return "Downstream";
    case ErrorSource::Internal: return "Internal";
    case ErrorSource::Unset: break;
  }
  return "Unset";
}

Error Error::http_status(std::uint16_t status, std::string_view context) {
  Error e(ErrorType::HTTPStatus, ErrorSource::Unset);
  e.status_ = status;
  return context.empty() ? e : with_context(std::move(e), context);
}
Error Error::upstream(ErrorType t, std::string_view context) {
  Error e(t, ErrorSource::Upstream);
  return context.empty() ? e : with_context(std::move(e), context);
}
Error Error::downstream(ErrorType t, std::string_view context) {
  Error e(t, ErrorSource::Downstream);
  return context.empty() ? e : with_context(std::move(e), context);
}
Error Error::internal(ErrorType t, std::string_view context) {
  Error e(t, ErrorSource::Internal);
  return context.empty() ? e : with_context(std::move(e), context);
}

std::string_view Error::context() const noexcept {
  return detail_ ? std::string_view(detail_->context) : std::string_view{};
}

const Error* Error::cause() const noexcept { return detail_ ? detail_->cause.get() : nullptr; }

ErrorType Error::root_type() const noexcept {
  const Error* e = this;
  while (const Error* c = e->cause()) e = c;
  return e->type_;
}

Error Error::more_context(std::string_view extra) const {
  Error e = *this;
  auto d = std::make_shared<Detail>();
  if (detail_) {
    d->cause = detail_->cause;
    d->context = detail_->context;
    if (!d->context.empty() && !extra.empty()) d->context += ", ";
  }
  d->context.append(extra);
  e.detail_ = std::move(d);
  return e;
}

Error Error::because(ErrorType type, ErrorSource source, std::string_view context) const {
  Error e(type, source);
  e.retry_ = retry_;
  auto d = std::make_shared<Detail>();
  d->context.assign(context);
  d->cause = std::make_shared<const Error>(*this);
  e.detail_ = std::move(d);
  return e;
}

std::string Error::to_string() const {
  std::string out;
  const Error* e = this;
  const Error* prev = nullptr;
  while (e) {
    if (prev) out += " cause: ";
    if (!prev || prev->source_ != e->source_) {
      out += portico::to_string(e->source_);
      out += ' ';
    }
    out += portico::to_string(e->type_);
    if (e->type_ == ErrorType::HTTPStatus) {
      out += '(';
      out += std::to_string(e->status_);
      out += ')';
    }
    if (!e->context().empty()) {
      out += " context: ";
      out += e->context();
    }
    prev = e;
    e = e->cause();
  }
  return out;
}

void throw_exception_from_error(const Error& e, const boost::source_location&) {
  throw std::runtime_error(e.to_string());
}

}  // namespace portico
