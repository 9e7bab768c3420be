#include "observe/proxy_observer.hpp"

#include "http2/session.hpp"

namespace portico::detail {

namespace obs = portico::observe;

ProxyObserver::ProxyObserver(std::shared_ptr<obs::Registry> registry, std::string service)
    : registry_(std::move(registry)), service_(std::move(service)) {
  obs::Registry& r = *registry_;
  const std::string_view svc = service_;
  auto& req = r.counter_family("portico_requests_total",
                               "Requests answered, by class of the status sent downstream "
                               "(\"none\": no response was sent).",
                               {"service", "code_class"});
  static constexpr std::string_view kClasses[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
  for (std::size_t i = 0; i < requests_.size(); ++i) requests_[i] = &req.with({svc, kClasses[i]});
  duration_ = &r.histogram_family("portico_request_duration_seconds",
                                  "Time from the request header to the end of the request.",
                                  {"service"})
                   .with({svc});
  active_ = &r.gauge_family("portico_downstream_connections_active",
                            "Client connections open now.", {"service"})
                 .with({svc});
  parked_ = &r.gauge_family("portico_downstream_connections_parked",
                            "Idle keep-alive client connections parked: only their socket is kept "
                            "until the next request (HttpServerOptions::keepalive_park_after).",
                            {"service"})
                 .with({svc});
  trimmed_ = &r.gauge_family("portico_downstream_connections_trimmed",
                             "Idle client connections that cannot be parked (HTTP/2, PROXY "
                             "protocol listeners, TLS with bytes buffered) and gave back their "
                             "buffers instead, until their next request "
                             "(HttpServerOptions::keepalive_park_after).",
                             {"service"})
                  .with({svc});
  connections_ = &r.counter_family("portico_downstream_connections_total",
                                   "Client connections accepted.", {"service"})
                      .with({svc});
  auto& tls = r.counter_family("portico_downstream_tls_handshakes_total",
                               "TLS handshakes with clients, by result (full, resumed, failed).",
                               {"service", "result"});
  tls_full_ = &tls.with({svc, "full"});
  tls_resumed_ = &tls.with({svc, "resumed"});
  tls_failed_ = &tls.with({svc, "failed"});
  bytes_in_ = &r.counter_family("portico_downstream_received_body_bytes_total",
                                "Request body bytes received from clients.", {"service"})
                   .with({svc});
  bytes_out_ = &r.counter_family("portico_downstream_sent_bytes_total",
                                 "Response bytes (header and body) sent to clients.", {"service"})
                    .with({svc});
  spliced_ = &r.counter_family("portico_downstream_spliced_body_bytes_total",
                               "Response body bytes moved from upstream to client sockets "
                               "without a copy (splice), part of the bytes sent.",
                               {"service"})
                  .with({svc});
  h2_conns_ = &r.gauge_family("portico_downstream_h2_connections_active",
                              "Client connections speaking HTTP/2 now.", {"service"})
                   .with({svc});
  h2_streams_ = &r.gauge_family("portico_downstream_h2_streams_active",
                                "HTTP/2 client streams (requests) in flight.", {"service"})
                     .with({svc});
  h2_streams_total_ = &r.counter_family("portico_downstream_h2_streams_total",
                                        "HTTP/2 client streams (requests) started.", {"service"})
                           .with({svc});
  h2_resets_ = &r.counter_family("portico_downstream_h2_client_resets_total",
                                 "HTTP/2 streams the client reset before their response ended.",
                                 {"service"})
                    .with({svc});
  {
    auto& g = r.counter_family("portico_downstream_h2_goaway_sent_total",
                               "GOAWAY frames sent to HTTP/2 clients, by error code.",
                               {"service", "code"});
    for (std::size_t i = 0; i < h2_goaways_.size(); ++i)
      h2_goaways_[i] = &g.with({svc, h2::error_code_name(static_cast<std::uint32_t>(i))});
  }
  h2_up_sessions_ = &r.gauge_family("portico_upstream_h2_sessions_active",
                                    "Multiplexed HTTP/2 upstream connections open now.",
                                    {"service"})
                         .with({svc});
  h2_up_streams_ = &r.gauge_family("portico_upstream_h2_streams_active",
                                   "Requests in flight on HTTP/2 upstream connections.",
                                   {"service"})
                        .with({svc});
  retries_ = &r.counter_family("portico_upstream_retries_total",
                               "Upstream attempts that failed and were retried.", {"service"})
                  .with({svc});
  upstream_errors_family_ = &r.counter_family(
      "portico_upstream_errors_total",
      "Failed upstream attempts (retried or final), by error type.", {"service", "type"});
  request_errors_family_ = &r.counter_family(
      "portico_request_errors_total",
      "Requests that ended with an error, by its source and type.", {"service", "source", "type"});
}

ProxyObserver::~ProxyObserver() = default;

obs::Counter& ProxyObserver::lazy(std::atomic<obs::Counter*>& slot, obs::CounterFamily& f,
                                  std::initializer_list<std::string_view> values) noexcept {
  obs::Counter* c = slot.load(std::memory_order_acquire);
  if (c) return *c;
  // First error of this kind: the family's lock and an allocation, once.
  c = &f.with(values);
  slot.store(c, std::memory_order_release);
  return *c;
}

void ProxyObserver::upstream_attempt_failed(const Error& e) noexcept {
  const auto t = static_cast<std::size_t>(e.type());
  if (t >= kErrorTypes) return;
  lazy(upstream_errors_[t], *upstream_errors_family_, {service_, to_string(e.type())}).inc();
}

void ProxyObserver::request_done(const Session& s, const Error* err) noexcept {
  const std::uint16_t status = s.response_status();
  requests_[status >= 100 && status < 600 ? status / 100 : 0]->inc();
  duration_->observe(Session::clock::now() - s.start_time());
  bytes_in_->inc(s.body_bytes_received());
  bytes_out_->inc(s.header_bytes_sent() + s.body_bytes_sent());
  if (s.body_bytes_spliced()) spliced_->inc(s.body_bytes_spliced());
  if (s.retries()) retries_->inc(s.retries());
  if (err) {
    const auto t = static_cast<std::size_t>(err->type());
    const auto src = static_cast<std::size_t>(err->source());
    if (t < kErrorTypes && src < kErrorSources) {
      if (err->source() == ErrorSource::Upstream)
        lazy(upstream_errors_[t], *upstream_errors_family_, {service_, to_string(err->type())}).inc();
      lazy(request_errors_[src * kErrorTypes + t], *request_errors_family_,
           {service_, to_string(err->source()), to_string(err->type())})
          .inc();
    }
  }
  if (access_log) access_log->log(s, err, service_);
}

std::uint64_t register_pool_collector(obs::Registry& registry, std::string service,
                                      PoolSources src) {
  return registry.add_collector([service = std::move(service), src = std::move(src)](
                                    obs::Collection& c) {
    const UpstreamPoolStats st = src.total();
    const obs::Label svc{"service", service};
    using T = obs::MetricType;
    c.add("portico_upstream_connections_opened_total", T::Counter,
          "Upstream connections established.", {svc}, static_cast<double>(st.opened));
    c.add("portico_upstream_connections_reused_total", T::Counter,
          "Upstream requests sent on an idle pooled connection instead of a new one.", {svc},
          static_cast<double>(st.reused));
    c.add("portico_upstream_connections_reused_cross_worker_total", T::Counter,
          "Of the reused connections, those taken from another worker's pool.", {svc},
          static_cast<double>(st.reused_cross_worker));
    for (std::size_t i = 0; i < kPoolEvictionKinds; ++i)
      c.add("portico_upstream_connections_evicted_total", T::Counter,
            "Idle upstream connections dropped, by reason.",
            {svc, obs::Label{"reason", to_string(static_cast<PoolEviction>(i))}},
            static_cast<double>(st.evicted[i]));
    c.add("portico_upstream_connections_idle", T::Gauge, "Idle upstream connections pooled now.",
          {svc}, static_cast<double>(st.idle));
    c.add("portico_upstream_connection_reuse_ratio", T::Gauge,
          "reused / (opened + reused): the share of upstream requests that needed no new "
          "connection.",
          {svc}, st.reuse_ratio());
    c.add("portico_upstream_tls_handshakes_total", T::Counter,
          "TLS handshakes with upstreams, by kind (full or resumed).",
          {svc, obs::Label{"result", "full"}}, static_cast<double>(src.tls_full()));
    c.add("portico_upstream_tls_handshakes_total", T::Counter,
          "TLS handshakes with upstreams, by kind (full or resumed).",
          {svc, obs::Label{"result", "resumed"}}, static_cast<double>(src.tls_resumed()));
  });
}

}  // namespace portico::detail
