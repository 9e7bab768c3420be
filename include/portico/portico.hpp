// The umbrella header: everything a proxy built on portico needs.
#pragma once

#include <portico/core/error.hpp>
#include <portico/core/result.hpp>
#include <portico/core/socket_addr.hpp>
#include <portico/core/task.hpp>
#include <portico/http/body.hpp>
#include <portico/http/header_map.hpp>
#include <portico/http/message.hpp>
#include <portico/lb/backend.hpp>
#include <portico/lb/discovery.hpp>
#include <portico/lb/health_check.hpp>
#include <portico/lb/load_balancer.hpp>
#include <portico/lb/selection.hpp>
#include <portico/observe/access_log.hpp>
#include <portico/observe/metrics.hpp>
#include <portico/observe/prometheus.hpp>
#include <portico/proxy/forwarded.hpp>
#include <portico/proxy/peer.hpp>
#include <portico/proxy/proxy_http.hpp>
#include <portico/proxy/service.hpp>
#include <portico/proxy/session.hpp>
#include <portico/server/options.hpp>
#include <portico/server/server.hpp>
#include <portico/upstream/pool.hpp>
