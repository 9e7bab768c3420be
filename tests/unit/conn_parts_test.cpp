// ConnParts: what an upstream connection is made of while it moves between workers (Pool's
// cross-thread take). Moving parts onto parts that hold a connection closes that connection and
// keeps every member of the one moved in.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <vector>

#include "upstream/connection.hpp"

namespace {

using portico::detail::ConnParts;

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

struct Pipe {
  int fds[2] = {-1, -1};
  Pipe() { EXPECT_EQ(::pipe(fds), 0); }
  ~Pipe() { ::close(fds[1]); }  // fds[0] goes to a ConnParts
};

TEST(ConnParts, MoveAssignmentClosesWhatItHeldAndTakesEveryMember) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  ASSERT_NE(ctx, nullptr);
  SSL* old_ssl = SSL_new(ctx);
  SSL* new_ssl = SSL_new(ctx);
  ASSERT_TRUE(old_ssl && new_ssl);
  ASSERT_EQ(SSL_up_ref(old_ssl), 1);  // ours: freed below, after the parts dropped theirs
  Pipe a, b;
  // tls_owner's count is what a user of the session cache sees; an aliasing pointer shares it.
  auto old_owner = std::make_shared<int>(1);
  auto new_owner = std::make_shared<int>(2);
  {
    ConnParts held;
    held.fd = a.fds[0];
    held.buf.assign(4096, 'o');  // bytes read ahead: the vector owns memory
    held.ssl = old_ssl;
    held.tls_owner = std::shared_ptr<portico::detail::ClientTls>(old_owner, nullptr);
    ConnParts moved;
    moved.fd = b.fds[0];
    moved.requests = 7;
    moved.buf.assign(100, 'n');
    moved.ssl = new_ssl;
    moved.tls_owner = std::shared_ptr<portico::detail::ClientTls>(new_owner, nullptr);

    held = std::move(moved);
    EXPECT_FALSE(is_open(a.fds[0])) << "the connection it held is closed";
    EXPECT_EQ(old_owner.use_count(), 1) << "and its reference to the TLS owner dropped";
    EXPECT_EQ(held.fd, b.fds[0]);
    EXPECT_EQ(held.requests, 7u);
    EXPECT_EQ(held.buf, std::vector<char>(100, 'n'));
    EXPECT_EQ(held.ssl, new_ssl);
    EXPECT_EQ(new_owner.use_count(), 2);
    EXPECT_EQ(moved.fd, -1);
    EXPECT_EQ(moved.ssl, nullptr);
    EXPECT_TRUE(moved.buf.empty());

    held = ConnParts();  // what Pool does when the taker stopped waiting: close it
    EXPECT_FALSE(is_open(b.fds[0]));
    EXPECT_EQ(new_owner.use_count(), 1);
    EXPECT_EQ(held.fd, -1);
    EXPECT_TRUE(held.buf.empty());
  }
  SSL_free(old_ssl);  // the last reference: the parts freed theirs (LeakSanitizer checks both)
  SSL_CTX_free(ctx);
}

}  // namespace
