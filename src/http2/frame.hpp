// HTTP/2 frame types, flags and the client preface (RFC 9113 §3.4, §6): the names the session
// and the tests' raw-frame clients share.
#pragma once

#include <cstdint>
#include <string_view>

namespace portico::h2::frame {

enum FrameType : std::uint8_t {
  kData = 0x0,
  kHeaders = 0x1,
  kPriority = 0x2,
  kRstStream = 0x3,
  kSettings = 0x4,
  kPushPromise = 0x5,
  kPing = 0x6,
  kGoaway = 0x7,
  kWindowUpdate = 0x8,
  kContinuation = 0x9,
};

enum FrameFlag : std::uint8_t {
  kEndStream = 0x1,  // DATA, HEADERS
  kAck = 0x1,        // SETTINGS, PING
  kEndHeaders = 0x4,
  kPadded = 0x8,
  kPriorityFlag = 0x20,
};

/// What a client sends first (RFC 9113 §3.4), before its SETTINGS.
inline constexpr std::string_view kClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

}  // namespace portico::h2::frame
