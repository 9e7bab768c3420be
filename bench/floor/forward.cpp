// forward: the kernel's floor for a keep-alive HTTP/1.1 proxy on this machine. Not a proxy: a
// byte forwarder that gives each client connection its own origin connection and copies what
// one side sends to the other, parsing nothing. With one request in flight per connection (wrk,
// keep-alive) it makes the system calls a proxy cannot avoid and nothing else:
//
//   epoll_wait once per round of ready sockets (level-triggered, registered once),
//   one recv per readable socket (a request from the client, a response from the origin),
//   the round's requests to the origins and responses to the clients in one io_uring_enter
//   (what portico's batch_upstream_sends and batch_response_sends do).
//
// Its CPU time per request (bench/e2e: the `floor` target) is what the TCP stack, the wake-ups
// and the system calls cost a proxy here; a proxy's figure above it is its own work.
//
//   forward --listen PORT --upstream IP:PORT [--no-batch | --heads-only | --uring] [--spin-ns N]
//
//   --no-batch    every send on its own, at once (also without liburing)
//   --heads-only  only the requests to the origins batched
//   --uring       every socket operation through io_uring (multishot receives into provided
//                 buffers, sends from them), one io_uring_enter per round and no epoll: the
//                 other way to leave per-operation system calls behind
//   --spin-ns N   N ns of busy user-space work per received message, as a proxy's own work
//                 (an experiment: how the spacing of the sends changes what the kernel costs)
//
// It listens on 127.0.0.1:PORT. A connection that fails, or whose peer closes, closes its pair.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#if PORTICO_HAS_LIBURING
#include <liburing.h>
#endif

namespace {

constexpr std::size_t kBuf = 64 * 1024;
constexpr int kEvents = 256;

struct Conn {
  int fd = -1;
  Conn* peer = nullptr;
  bool origin = false;  // the origin side of a pair
  std::vector<char> buf = std::vector<char>(kBuf);
};

int g_epoll = -1;
long g_spin_ns = 0;  // --spin-ns: user-space work per received message (an experiment)

void spin() {
  if (g_spin_ns <= 0) return;
  timespec a{}, b{};
  clock_gettime(CLOCK_MONOTONIC, &a);
  do clock_gettime(CLOCK_MONOTONIC, &b);
  while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < g_spin_ns);
}
sockaddr_in g_upstream{};

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "forward: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Closed connections, freed at the end of the round (later events of the round may name them).
std::vector<Conn*> g_closed;

void close_pair(Conn* c) {
  for (Conn* x : {c, c->peer}) {
    if (x == nullptr || x->fd < 0) continue;
    epoll_ctl(g_epoll, EPOLL_CTL_DEL, x->fd, nullptr);
    close(x->fd);
    x->fd = -1;
    g_closed.push_back(x);
  }
}

// Sends all of [data, data+n) on a non-blocking socket, waiting with poll for room (a 5 B or
// 1 KiB exchange always fits the socket buffer; larger ones may wait here).
bool send_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
    if (w > 0) {
      data += w;
      n -= static_cast<std::size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      fd_set set;
      FD_ZERO(&set);
      FD_SET(fd, &set);
      if (select(fd + 1, nullptr, &set, nullptr, nullptr) < 0 && errno != EINTR) return false;
      continue;
    }
    return false;
  }
  return true;
}

// A blocking connection to the origin for the accepted client `cfd` (both with TCP_NODELAY);
// -1, with `cfd` closed, when the origin cannot be reached.
int pair_with_origin(int cfd) {
  const int ofd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (ofd < 0 || connect(ofd, reinterpret_cast<sockaddr*>(&g_upstream), sizeof g_upstream) != 0) {
    std::fprintf(stderr, "forward: cannot connect to the upstream: %s\n", std::strerror(errno));
    if (ofd >= 0) close(ofd);
    close(cfd);
    return -1;
  }
  nodelay(cfd);
  nodelay(ofd);
  return ofd;
}

void accept_all(int lfd) {
  for (;;) {
    int cfd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0) return;
    const int ofd = pair_with_origin(cfd);
    if (ofd < 0) continue;
    fcntl(ofd, F_SETFL, fcntl(ofd, F_GETFL) | O_NONBLOCK);
    auto* c = new Conn{cfd};
    auto* o = new Conn{ofd};
    o->origin = true;
    c->peer = o;
    o->peer = c;
    for (Conn* x : {c, o}) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = x;
      if (epoll_ctl(g_epoll, EPOLL_CTL_ADD, x->fd, &ev) != 0) die("epoll_ctl");
    }
  }
}

#if PORTICO_HAS_LIBURING
// --uring: every socket operation through one io_uring, one io_uring_enter per round: a
// multishot receive per socket into a ring of provided buffers, each received buffer sent on to
// the pair's other socket from where it lies, the buffer given back when the send completes.
// The lower bound for a proxy that leaves epoll and per-operation system calls behind.
namespace uring {

constexpr unsigned kBufs = 4096, kBufSize = 4096, kGroup = 1;
enum Kind : std::uint64_t { Accept = 0, Recv = 1, Send = 2 };

struct Side {
  int fd = -1;
  Side* peer = nullptr;
  int busy = 0;  // requests of this side in flight (recv armed, sends on its fd)
  bool closing = false;
};

io_uring g_ring;
io_uring_buf_ring* g_br = nullptr;
char* g_mem = nullptr;

std::uint64_t tag(Kind k, void* p, unsigned bid = 0) {
  return (reinterpret_cast<std::uint64_t>(p) << 16 >> 16) | (std::uint64_t{k} << 62) |
         (std::uint64_t{bid} << 48);
}

io_uring_sqe* sqe() {
  io_uring_sqe* e = io_uring_get_sqe(&g_ring);
  if (e == nullptr) {
    io_uring_submit(&g_ring);
    e = io_uring_get_sqe(&g_ring);
  }
  return e;
}

void give_back(unsigned bid) {
  io_uring_buf_ring_add(g_br, g_mem + std::size_t{bid} * kBufSize, kBufSize, bid,
                        io_uring_buf_ring_mask(kBufs), 0);
  io_uring_buf_ring_advance(g_br, 1);
}

void arm_recv(Side* s) {
  io_uring_sqe* e = sqe();
  io_uring_prep_recv_multishot(e, s->fd, nullptr, 0, 0);
  e->flags |= IOSQE_BUFFER_SELECT;
  e->buf_group = kGroup;
  io_uring_sqe_set_data64(e, tag(Recv, s));
  ++s->busy;
}

void close_side(Side* s) {  // both sides stop; each is freed when nothing of it is in flight
  for (Side* x : {s, s->peer}) {
    if (x->closing) continue;
    x->closing = true;
    shutdown(x->fd, SHUT_RDWR);  // ends its multishot receive
  }
}

void settle(Side* s) {
  if (s->closing && s->busy == 0) {
    close(s->fd);
    if (s->peer != nullptr) s->peer->peer = nullptr;
    delete s;
  }
}

int run(int lfd) {
  io_uring_params p{};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (io_uring_queue_init_params(1024, &g_ring, &p) != 0) {
    std::fprintf(stderr, "forward: io_uring_queue_init failed\n");
    return 1;
  }
  const std::size_t ring_bytes = kBufs * sizeof(io_uring_buf);
  g_br = static_cast<io_uring_buf_ring*>(aligned_alloc(4096, ring_bytes));
  std::memset(g_br, 0, ring_bytes);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uint64_t>(g_br);
  reg.ring_entries = kBufs;
  reg.bgid = kGroup;
  if (io_uring_register_buf_ring(&g_ring, &reg, 0) != 0) {
    std::fprintf(stderr, "forward: io_uring_register_buf_ring failed\n");
    return 1;
  }
  io_uring_buf_ring_init(g_br);
  g_mem = static_cast<char*>(aligned_alloc(4096, std::size_t{kBufs} * kBufSize));
  for (unsigned b = 0; b < kBufs; ++b) give_back(b);

  auto arm_accept = [&] {
    io_uring_sqe* e = sqe();
    io_uring_prep_multishot_accept(e, lfd, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(e, tag(Accept, nullptr));
  };
  arm_accept();
  for (;;) {
    if (io_uring_submit_and_wait(&g_ring, 1) < 0 && errno != EINTR) die("io_uring_submit_and_wait");
    io_uring_cqe* cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&g_ring, head, cqe) {
      ++seen;
      const std::uint64_t d = cqe->user_data;
      const auto kind = static_cast<Kind>(d >> 62);
      auto* side = reinterpret_cast<Side*>(static_cast<std::intptr_t>(d << 16) >> 16);
      const int res = cqe->res;
      if (kind == Accept) {
        if (!(cqe->flags & IORING_CQE_F_MORE)) arm_accept();
        if (res < 0) continue;
        const int ofd = pair_with_origin(res);
        if (ofd < 0) continue;
        auto* c = new Side{res};
        auto* o = new Side{ofd};
        c->peer = o;
        o->peer = c;
        arm_recv(c);
        arm_recv(o);
      } else if (kind == Recv) {
        const bool more = cqe->flags & IORING_CQE_F_MORE;
        if (res > 0) {
          const unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
          if (side->peer == nullptr || side->closing) {
            give_back(bid);
          } else {
            io_uring_sqe* e = sqe();
            io_uring_prep_send(e, side->peer->fd, g_mem + std::size_t{bid} * kBufSize,
                               static_cast<std::size_t>(res), MSG_WAITALL | MSG_NOSIGNAL);
            io_uring_sqe_set_data64(e, tag(Send, side->peer, bid));
            ++side->peer->busy;
          }
        }
        if (!more) {
          --side->busy;
          if (res == -ENOBUFS && !side->closing)
            arm_recv(side);  // buffers ran out: re-arm
          else if (!side->closing)
            close_side(side);
          settle(side);
        }
      } else {  // Send: the buffer is free again
        give_back(static_cast<unsigned>((d >> 48) & 0x3fff));
        --side->busy;
        if (res < 0 && !side->closing) close_side(side);
        settle(side);
      }
    }
    io_uring_cq_advance(&g_ring, seen);
  }
}

}  // namespace uring
#endif

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  std::string upstream;
  bool batch = true, batch_responses = true, uring_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--listen" && i + 1 < argc)
      port = std::atoi(argv[++i]);
    else if (a == "--upstream" && i + 1 < argc)
      upstream = argv[++i];
    else if (a == "--no-batch")
      batch = false;
    else if (a == "--heads-only")
      batch_responses = false;
    else if (a == "--uring")
      uring_only = true;
    else if (a == "--spin-ns" && i + 1 < argc)
      g_spin_ns = std::atol(argv[++i]);
    else {
      std::fprintf(stderr,
                   "usage: forward --listen PORT --upstream IP:PORT [--no-batch | "
                   "--heads-only | --uring] [--spin-ns N]\n");
      return 2;
    }
  }
  const auto colon = upstream.rfind(':');
  if (port <= 0 || colon == std::string::npos) {
    std::fprintf(stderr, "forward: --listen PORT and --upstream IP:PORT are required\n");
    return 2;
  }
  g_upstream.sin_family = AF_INET;
  g_upstream.sin_port = htons(static_cast<std::uint16_t>(std::atoi(upstream.c_str() + colon + 1)));
  if (inet_pton(AF_INET, upstream.substr(0, colon).c_str(), &g_upstream.sin_addr) != 1) {
    std::fprintf(stderr, "forward: bad upstream address %s\n", upstream.c_str());
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("bind");
  if (listen(lfd, 4096) != 0) die("listen");
#if !PORTICO_HAS_LIBURING
  if (uring_only) {
    std::fprintf(stderr, "forward: --uring needs liburing at build time\n");
    return 2;
  }
#else
  if (uring_only) {
    std::fprintf(stderr, "forward: 127.0.0.1:%d -> %s, everything through io_uring\n", port,
                 upstream.c_str());
    return uring::run(lfd);
  }
#endif
  g_epoll = epoll_create1(EPOLL_CLOEXEC);
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.ptr = nullptr;  // the listener
  epoll_ctl(g_epoll, EPOLL_CTL_ADD, lfd, &lev);

#if PORTICO_HAS_LIBURING
  io_uring ring{};
  if (batch && io_uring_queue_init(kEvents, &ring, 0) != 0) {
    std::fprintf(stderr, "forward: io_uring unavailable, sending one by one\n");
    batch = false;
  }
#else
  batch = false;
#endif
  if (!batch) batch_responses = false;
  std::fprintf(stderr, "forward: 127.0.0.1:%d -> %s, %s\n", port, upstream.c_str(),
               !batch            ? "every send on its own"
               : batch_responses ? "a round's sends in one io_uring_enter"
                                 : "a round's requests to the origins in one io_uring_enter");

  epoll_event evs[kEvents];
  std::vector<std::pair<Conn*, std::size_t>> queued;  // requests of this round, to the origins
  for (;;) {
    int n = epoll_wait(g_epoll, evs, kEvents, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    queued.clear();
    for (int i = 0; i < n; ++i) {
      auto* c = static_cast<Conn*>(evs[i].data.ptr);
      if (c == nullptr) {
        accept_all(lfd);
        continue;
      }
      if (c->fd < 0) continue;  // closed earlier in this round
      ssize_t r = recv(c->fd, c->buf.data(), c->buf.size(), 0);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r <= 0) {
        close_pair(c);
        continue;
      }
      spin();
      if (batch && (!c->origin || batch_responses)) {
        queued.emplace_back(c, static_cast<std::size_t>(r));
        continue;
      }
      if (!send_all(c->peer->fd, c->buf.data(), static_cast<std::size_t>(r))) close_pair(c);
    }
#if PORTICO_HAS_LIBURING
    if (batch && !queued.empty()) {
      unsigned prepared = 0;
      for (std::size_t k = 0; k < queued.size(); ++k) {
        auto [c, len] = queued[k];
        if (c->fd < 0) continue;  // closed after its request was read
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        if (sqe == nullptr) {  // the ring is full: send the rest directly
          if (!send_all(c->peer->fd, c->buf.data(), len)) close_pair(c);
          continue;
        }
        io_uring_prep_send(sqe, c->peer->fd, c->buf.data(), len, MSG_DONTWAIT | MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, k);
        ++prepared;
      }
      if (prepared > 0) io_uring_submit(&ring);
      for (unsigned got = 0; got < prepared; ++got) {
        io_uring_cqe* cqe = nullptr;
        if (io_uring_wait_cqe(&ring, &cqe) != 0) die("io_uring_wait_cqe");
        const auto [c, len] = queued[io_uring_cqe_get_data64(cqe)];
        const int res = cqe->res;
        io_uring_cqe_seen(&ring, cqe);
        // A send the socket did not take whole is finished directly.
        if (res < 0 || static_cast<std::size_t>(res) < len) {
          const std::size_t done = res < 0 ? 0 : static_cast<std::size_t>(res);
          if (!send_all(c->peer->fd, c->buf.data() + done, len - done)) close_pair(c);
        }
      }
    }
#endif
    for (Conn* c : g_closed) delete c;
    g_closed.clear();
  }
}
