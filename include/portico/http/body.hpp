// BodyChunk: one piece of a streamed body, handed to body filters.
#pragma once

#include <string>
#include <string_view>

namespace portico {

/// A chunk of request or response body as it streams through the proxy.
///
/// By default it is a view into the engine's I/O buffer: no copy is made. A filter that changes
/// the bytes calls `replace()`, and the chunk then owns them. An empty chunk is not forwarded.
/// When a filter changes the length of a body, remove Content-Length in the header filter first
/// so the message is re-framed.
class BodyChunk {
 public:
  BodyChunk() = default;
  explicit BodyChunk(std::string_view view) noexcept : view_(view) {}
  BodyChunk(const BodyChunk& o) : owned_(o.owned_), is_owned_(o.is_owned_) {
    view_ = is_owned_ ? std::string_view(owned_) : o.view_;
  }
  BodyChunk(BodyChunk&& o) noexcept : owned_(std::move(o.owned_)), is_owned_(o.is_owned_) {
    view_ = is_owned_ ? std::string_view(owned_) : o.view_;
  }
  BodyChunk& operator=(BodyChunk o) noexcept {
    owned_ = std::move(o.owned_);
    is_owned_ = o.is_owned_;
    view_ = is_owned_ ? std::string_view(owned_) : o.view_;
    return *this;
  }

  std::string_view data() const noexcept { return view_; }
  std::size_t size() const noexcept { return view_.size(); }
  bool empty() const noexcept { return view_.empty(); }
  /// Substitutes new bytes for this chunk.
  void replace(std::string bytes) {
    owned_ = std::move(bytes);
    is_owned_ = true;
    view_ = owned_;
  }
  /// Drops this chunk: nothing of it is forwarded.
  void clear() noexcept {
    view_ = {};
    is_owned_ = false;
  }
  /// Points the chunk at engine-owned bytes again (used by the engine). Keeps the capacity of
  /// a previous replacement for reuse.
  void reset(std::string_view view) noexcept {
    view_ = view;
    is_owned_ = false;
  }

 private:
  std::string_view view_;
  std::string owned_;
  bool is_owned_ = false;
};

}  // namespace portico
