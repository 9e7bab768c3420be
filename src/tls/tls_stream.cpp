#include "tls/tls_stream.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <openssl/bio.h>
#include <openssl/err.h>

#include <utility>

namespace portico::detail {

namespace asio = boost::asio;

// The BIO between OpenSSL and a TlsBio's buffers. Reads take what the socket delivered into
// `in_` and ask to be retried when it is empty; writes append to `stage_` and always succeed.
struct TlsBioMethod {
  static int write(BIO* b, const char* data, int len) {
    BIO_clear_retry_flags(b);
    auto* s = static_cast<TlsBio*>(BIO_get_data(b));
    if (!s || len < 0) return -1;
    s->stage_.insert(s->stage_.end(), data, data + len);
    return len;
  }

  static int read(BIO* b, char* out, int len) {
    BIO_clear_retry_flags(b);
    auto* s = static_cast<TlsBio*>(BIO_get_data(b));
    if (!s || len < 0) return -1;
    const std::size_t avail = s->in_end_ - s->in_begin_;
    if (avail == 0) {
      BIO_set_retry_read(b);
      return -1;
    }
    const std::size_t n = std::min(avail, static_cast<std::size_t>(len));
    std::memcpy(out, s->in_.get() + s->in_begin_, n);
    s->in_begin_ += n;
    return static_cast<int>(n);
  }

  static long ctrl(BIO* b, int cmd, long /*num*/, void* /*ptr*/) {
    auto* s = static_cast<TlsBio*>(BIO_get_data(b));
    switch (cmd) {
      case BIO_CTRL_FLUSH:
      case BIO_CTRL_DUP:
        return 1;
      case BIO_CTRL_PENDING:
        return s ? static_cast<long>(s->in_end_ - s->in_begin_) : 0;
      case BIO_CTRL_WPENDING:
        return s ? static_cast<long>(s->stage_.size()) : 0;
      default:
        return 0;
    }
  }

  static int create(BIO* b) {
    BIO_set_init(b, 1);
    return 1;
  }

  static int destroy(BIO* b) {
    BIO_set_data(b, nullptr);
    return 1;
  }

  static int type() {
    static const int t = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK;
    return t;
  }

  static const BIO_METHOD* get() {
    static const BIO_METHOD* m = [] {
      BIO_METHOD* meth = BIO_meth_new(type(), "portico-tls");
      BIO_meth_set_write(meth, &write);
      BIO_meth_set_read(meth, &read);
      BIO_meth_set_ctrl(meth, &ctrl);
      BIO_meth_set_create(meth, &create);
      BIO_meth_set_destroy(meth, &destroy);
      return meth;
    }();
    return m;
  }
};

TlsBio::TlsBio(SSL* ssl) noexcept : ssl_(ssl) {
  // Like asio::ssl::stream: OpenSSL's own record buffers are freed while a connection idles.
  SSL_set_mode(ssl_, SSL_MODE_RELEASE_BUFFERS);
  BIO* b = SSL_get_rbio(ssl_);
  if (b && BIO_method_type(b) == TlsBioMethod::type()) {
    BIO_set_data(b, this);  // moved from another stream: keep its BIO
    return;
  }
  b = BIO_new(TlsBioMethod::get());
  BIO_set_data(b, this);
  SSL_set_bio(ssl_, b, b);
}

TlsBio::~TlsBio() {
  if (!ssl_) return;
  if (BIO* b = SSL_get_rbio(ssl_)) BIO_set_data(b, nullptr);
  SSL_free(ssl_);
}

SSL* TlsBio::release() noexcept {
  if (ssl_)
    if (BIO* b = SSL_get_rbio(ssl_)) BIO_set_data(b, nullptr);
  in_begin_ = in_end_ = 0;
  stage_.clear();
  return std::exchange(ssl_, nullptr);
}

void TlsBio::trim() noexcept {
  if (in_ && in_begin_ == in_end_) {
    in_.reset();
    in_begin_ = in_end_ = 0;
    trimmed_ = true;
  }
  if (!flushing_ && stage_.empty()) {
    std::vector<char>().swap(stage_);
    std::vector<char>().swap(inflight_);
  }
}

void TlsBio::send_close_notify(int fd, std::string_view last) noexcept {
  if (!ssl_) return;
  if (!last.empty()) {
    boost::system::error_code ignored;  // on an error, close_notify alone is tried
    encrypt(last.data(), last.size(), ignored);
  }
  SSL_set_shutdown(ssl_, SSL_RECEIVED_SHUTDOWN);
  ERR_clear_error();
  SSL_shutdown(ssl_);
  if (!stage_.empty()) {  // what the socket takes at once; the rest is dropped
    const asio::const_buffer b(stage_.data(), stage_.size());
    bool done = false;
    boost::system::error_code ec;
    send_now(fd, &b, &b + 1, done, ec);
    stage_.clear();
  }
  ERR_clear_error();
  SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
}

bool TlsBio::buffered() const noexcept {
  return in_begin_ != in_end_ || (ssl_ && SSL_has_pending(ssl_));
}

TlsBio::Want TlsBio::step(int r, boost::system::error_code& ec) const noexcept {
  switch (SSL_get_error(ssl_, r)) {
    case SSL_ERROR_NONE:
      return Want::Done;
    case SSL_ERROR_WANT_READ:
      return Want::Read;
    case SSL_ERROR_ZERO_RETURN:
      ec = asio::error::eof;
      return Want::Fail;
    case SSL_ERROR_SSL: {
      const unsigned long e = ERR_get_error();
      if (ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
        ec = asio::ssl::error::stream_truncated;
      else
        ec = boost::system::error_code(static_cast<int>(e), asio::error::get_ssl_category());
      return Want::Fail;
    }
    case SSL_ERROR_SYSCALL: {
      const unsigned long e = ERR_get_error();
      ec = e ? boost::system::error_code(static_cast<int>(e), asio::error::get_ssl_category())
             : boost::system::error_code(asio::ssl::error::unspecified_system_error);
      return Want::Fail;
    }
    default:  // WANT_WRITE cannot happen (our BIO takes every byte), nor can the others
      ec = asio::ssl::error::unexpected_result;
      return Want::Fail;
  }
}

bool TlsBio::encrypt(const void* p, std::size_t n, boost::system::error_code& ec) noexcept {
  ERR_clear_error();
  std::size_t written = 0;
  const int r = SSL_write_ex(ssl_, p, n, &written);
  if (r == 1) return true;
  if (step(r, ec) == Want::Read) ec = asio::ssl::error::unexpected_result;  // renegotiation is off
  return false;
}

asio::mutable_buffer TlsBio::in_space() {
  if (!in_) in_.reset(new char[kInBuffer]);
  if (in_begin_ == in_end_) {
    in_begin_ = in_end_ = 0;
  } else if (in_end_ == kInBuffer) {  // cannot happen: OpenSSL takes all before it asks for more
    std::memmove(in_.get(), in_.get() + in_begin_, in_end_ - in_begin_);
    in_end_ -= in_begin_;
    in_begin_ = 0;
  }
  return asio::buffer(in_.get() + in_end_, kInBuffer - in_end_);
}

char* TlsBio::gather_buffer() noexcept {
  thread_local char buf[kRecord];
  return buf;
}

}  // namespace portico::detail
