// HPACK (RFC 7541): the header compression of HTTP/2, as a pure codec (bytes in, fields out and
// the reverse), without nghttp2.
//
// A connection has two independent compression contexts: the Decoder reads the header blocks the
// peer sends, with a dynamic table whose size the peer's encoder chooses up to the
// SETTINGS_HEADER_TABLE_SIZE we advertised; the Encoder writes ours, with a table of at most
// min(our own ceiling, the peer's SETTINGS_HEADER_TABLE_SIZE).
//
// Both keep their dynamic table in one allocation, made at the first insertion and grown
// geometrically up to the table size plus per-entry bookkeeping: an idle codec with an empty
// table holds no heap memory. In steady state neither allocates per field.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace portico::h2::hpack {

/// Why a header block could not be decoded. Every one is a connection error of type
/// COMPRESSION_ERROR (RFC 9113 §4.3).
enum class DecodeError : std::uint8_t {
  None,
  Truncated,       ///< the block ends inside a representation, an integer or a string
  BadInteger,      ///< an integer (RFC 7541 §5.1) above 2^32 - 1 or with too many octets
  BadIndex,        ///< index 0, or past the static and dynamic tables (§2.3.3)
  BadHuffman,      ///< EOS in a string, padding over 7 bits or not all ones (§5.2)
  BadSizeUpdate,   ///< a size update above our limit, or none where one was due (§4.2)
  LateSizeUpdate,  ///< a size update after the first field of a block (§4.2)
  TooLarge,        ///< a name or value longer than the caller's limit
};

/// A short static description ("invalid index", ...), for logs and GOAWAY debug data.
std::string_view to_string(DecodeError e) noexcept;

/// RFC 7541 §4.1: an entry's size is its name and value lengths plus 32.
inline constexpr std::size_t entry_overhead = 32;
/// SETTINGS_HEADER_TABLE_SIZE before any SETTINGS (RFC 9113 §6.5.2).
inline constexpr std::uint32_t default_table_size = 4096;

namespace detail {

/// A dynamic table (RFC 7541 §2.3.2, §4): entries in insertion order in a ring of bytes, with
/// their offsets and lengths in a ring of records, both in one lazily made allocation. An entry
/// may wrap around the end of the byte ring, so it is read as up to two pieces.
///
/// With `indexed`, the table also keeps two open-addressing hash indexes (name, and name plus
/// value) that point at the newest matching entry, for the encoder's O(1) lookups; hashes are
/// the caller's (detail::hash_name, detail::hash_pair).
class field_table {
 public:
  field_table(std::uint32_t max_size, bool indexed) noexcept;
  ~field_table();
  field_table(field_table&& o) noexcept;
  field_table& operator=(field_table&& o) noexcept;
  field_table(const field_table&) = delete;
  field_table& operator=(const field_table&) = delete;

  /// Entry `i` (0 = newest) as pieces: `name[1]` and `value[1]` are empty unless it wraps.
  struct view {
    std::string_view name[2];
    std::string_view value[2];
    bool split() const noexcept { return !name[1].empty() || !value[1].empty(); }
  };

  std::size_t size() const noexcept;        ///< §4.1 size
  std::uint32_t max_size() const noexcept;  ///< current maximum (§4.2)
  std::uint32_t count() const noexcept;     ///< number of entries
  std::size_t memory() const noexcept;      ///< bytes allocated
  /// A new maximum size: the oldest entries past it are evicted (§4.3), storage shrinks to fit.
  void set_max_size(std::uint32_t n);
  /// Adds an entry, evicting the oldest first (§4.4). An entry larger than the maximum size
  /// empties the table and is not added (returns false). The strings must not point into the
  /// table. `name_hash`/`pair_hash` are used by indexed tables only.
  bool add(std::string_view name, std::string_view value, std::uint32_t name_hash = 0,
           std::uint32_t pair_hash = 0);
  /// Precondition: i < count().
  view get(std::uint32_t i) const noexcept;
  /// Indexed tables: the index (0 = newest) of the newest entry equal to name and value, or -1.
  std::int64_t find_pair(std::string_view name, std::string_view value,
                         std::uint32_t pair_hash) const noexcept;
  /// Indexed tables: the index of the newest entry with this name, or -1.
  std::int64_t find_name(std::string_view name, std::uint32_t name_hash) const noexcept;
  /// The index of the entry inserted as number `seq` (see seq_of) when it is still held and
  /// equal to name and value, or -1.
  std::int64_t find_seq(std::uint32_t seq, std::string_view name,
                        std::string_view value) const noexcept;
  /// The insertion number of entry `i` (0 = newest); numbers count every insertion and wrap.
  /// Precondition: i < count().
  std::uint32_t seq_of(std::uint32_t i) const noexcept { return head_seq_ + count_ - 1 - i; }
  /// Storage shrinks to the entries held (freed when empty).
  void trim() noexcept;

 private:
  struct record;
  struct slot;
  std::size_t block_bytes() const noexcept;
  record* records() const noexcept;
  std::uint32_t* hashes() const noexcept;
  slot* slots() const noexcept;
  char* bytes() const noexcept;
  record& at_seq(std::uint32_t seq) const noexcept;
  bool equal(std::uint32_t off, std::uint32_t len, std::string_view s) const noexcept;
  void evict_oldest() noexcept;
  void reallocate(std::uint32_t bytes_cap, std::uint32_t entries_cap, bool shrink = false);
  void index_insert(std::uint32_t seq, bool pair, std::uint32_t hash, std::string_view name,
                    std::string_view value) noexcept;
  void index_place(bool pair, std::uint32_t hash, std::uint32_t seq) noexcept;
  void index_remove(std::uint32_t seq, bool pair, std::uint32_t hash) noexcept;

  void* block_ = nullptr;
  std::size_t size_ = 0;           // §4.1 size
  std::uint32_t max_size_;         // §4.2 maximum size
  std::uint32_t bytes_cap_ = 0;    // byte ring capacity
  std::uint32_t entries_cap_ = 0;  // record ring capacity
  std::uint32_t slots_cap_ = 0;    // slots per index (power of two), indexed tables only
  std::uint32_t byte_head_ = 0;    // offset of the oldest entry's bytes
  std::uint32_t bytes_used_ = 0;   // name and value bytes held
  std::uint32_t head_ = 0;         // record position of the oldest entry
  std::uint32_t count_ = 0;        // entries held
  std::uint32_t head_seq_ = 0;     // insertion number of the oldest entry (wraps)
  bool indexed_;
};

/// Hashes for an indexed field_table: of a name, and of a name and value. Each string counts by
/// its length and its first and last 16 bytes (the whole of a string up to 32 bytes): constant
/// time on long values, while lookups compare the strings in full. Both are odd (never 0).
std::uint32_t hash_name(std::string_view name) noexcept;
std::uint32_t hash_pair(std::string_view name, std::string_view value) noexcept;

/// The static table (RFC 7541 Appendix A): entries 1..61, entry 0 empty.
inline constexpr std::uint32_t static_count = 61;
struct static_entry {
  std::string_view name, value;
};
extern const static_entry static_table[static_count + 1];
/// Static indexes of the names RFC 7541 §7.1.3 protects.
inline constexpr std::uint32_t static_authorization = 23, static_cookie = 32,
                               static_proxy_authorization = 49;
/// A static table lookup: `name` is the first index with this name and `exact` the index of the
/// entry equal to name and value (0: none). One multiplicative perfect hash and one compare.
struct static_match {
  std::uint32_t name = 0, exact = 0;
};
static_match static_find(std::string_view name, std::string_view value) noexcept;
/// Whether static entry `i` (1..61) is equal to name and value.
bool static_equal(std::uint32_t i, std::string_view name, std::string_view value) noexcept;

/// Decodes `n` Huffman octets (§5.2) to `out`, which must have room for n * 8 / 5 + 2 bytes.
/// Returns the end of the output, or null on invalid input (EOS, bad padding).
char* huffman_decode_to(const unsigned char* in, std::size_t n, char* out) noexcept;
/// Writes exactly huffman_length(s) octets to `out`.
void huffman_encode_to(std::string_view s, char* out) noexcept;

}  // namespace detail

/// Decodes the header blocks of one connection direction.
class Decoder {
 public:
  /// `max_table_size`: the SETTINGS_HEADER_TABLE_SIZE this endpoint advertised: the ceiling of
  /// any dynamic table size update the peer sends (larger is a COMPRESSION_ERROR). The table
  /// starts at min(max_table_size, default_table_size), where the peer's encoder starts: a larger
  /// table is used only once the peer announces it. In HTTP/2, where the peer may send header
  /// blocks before it sees our SETTINGS, construct with default_table_size and call
  /// set_max_table_size when our SETTINGS with a smaller value are acknowledged.
  explicit Decoder(std::uint32_t max_table_size = default_table_size);
  ~Decoder();
  Decoder(Decoder&&) noexcept;
  Decoder& operator=(Decoder&&) noexcept;

  /// Our advertised limit changed (acknowledged SETTINGS). If below the table's current maximum
  /// size, entries are evicted down to it and the next block must start with a dynamic table
  /// size update (RFC 7541 §4.2): a block without one fails with BadSizeUpdate.
  void set_max_table_size(std::uint32_t n);

  using Sink = void (*)(void* ctx, std::string_view name, std::string_view value);

  /// Decodes one complete header block (all HEADERS/CONTINUATION fragments joined), calling
  /// sink once per field in order. Views are valid only during the call. Any error is a
  /// connection error (COMPRESSION_ERROR) for the caller; the decoder is then unusable (every
  /// later call returns the same error), and fields already passed to sink must be dropped.
  /// `max_string`: longest name or value accepted, counted on the wire and once decoded
  /// (TooLarge past it). Names and values are passed as decoded: checking their characters is
  /// the caller's job.
  DecodeError decode(std::string_view block, Sink sink, void* ctx,
                     std::size_t max_string = 64 * 1024);

  /// During a sink call: the field came as a never-indexed literal (RFC 7541 §6.2.3). An
  /// intermediary must encode it as never indexed too (Encoder::add with `sensitive`).
  bool never_indexed() const noexcept { return never_; }

  /// Remembers the decodings of the Huffman-coded strings of the last blocks (up to 48 octets,
  /// the first 16 of a block, one slot per rank in the block) and reuses one when the same
  /// octets come again at that rank. For a client: some servers (nginx among them) send server,
  /// date, content-type, etag... as new Huffman literals in every response, the same octets in
  /// the same order each time. 2 KiB, allocated at the first such literal and freed by trim().
  void remember_literals(bool on) noexcept { remember_ = on; }

  std::size_t table_size() const noexcept;  ///< RFC 7541 §4.1 size of the dynamic table
  std::size_t memory() const noexcept;      ///< bytes allocated by the decoder
  void trim() noexcept;                     ///< release spare capacity (idle connection)

 private:
  struct literal_memo;
  DecodeError decode_block(std::string_view block, Sink sink, void* ctx, std::size_t max_string);
  char* scratch(std::size_t n);
  /// A Huffman literal of `n` octets at `in` decoded to `buf` (advanced past it); its view in out.
  /// `rank`: how many Huffman strings came before it in the block (its slot of the memory).
  DecodeError huffman(const unsigned char* in, std::size_t n, std::size_t max_string, char*& buf,
                      std::string_view& out, std::size_t rank);

  detail::field_table table_;
  std::unique_ptr<char[]> scratch_;  // Huffman output and copies of wrapped entries
  std::size_t scratch_cap_ = 0;
  std::unique_ptr<literal_memo> memo_;  // remember_literals
  std::uint32_t limit_;
  bool expect_update_ = false;
  bool never_ = false;
  bool remember_ = false;
  DecodeError error_ = DecodeError::None;
};

/// Encodes the header blocks of one connection direction.
///
/// Policy: a field equal to a static or dynamic entry becomes an indexed field; otherwise a
/// literal "with incremental indexing" (the name from the table when there), except that
/// sensitive fields, authorization, proxy-authorization and cookies under 20 bytes become
/// never-indexed literals (RFC 7541 §7.1.3) and entries over 3/4 of the table literals without
/// indexing. Each string is Huffman-coded when that is shorter.
///
/// A proxy's header blocks on one connection mostly repeat the previous one field by field. The
/// encoder remembers, for each of the first 16 positions of the last block, the table entry the
/// field there was sent as (found or inserted), and tries that entry first: a field equal to it
/// costs one comparison instead of the static and dynamic lookups. The memory only saves work:
/// the entry is compared in full, and one evicted since is simply not used.
class Encoder {
 public:
  /// `max_table_size`: our own ceiling for the table we keep. The peer's decoder starts at
  /// default_table_size, so a smaller ceiling is announced at the start of the first block.
  explicit Encoder(std::uint32_t max_table_size = default_table_size);

  /// The peer's SETTINGS_HEADER_TABLE_SIZE arrived: the table used is min(ours, this); a size
  /// update is emitted at the start of the next block (RFC 7541 §4.2 / §6.3, including the
  /// "smallest value then final value" rule when it shrank and grew between two blocks).
  /// Call between blocks.
  void set_peer_max_table_size(std::uint32_t n);

  /// Starts a header block in `out` (appends any pending size update).
  void begin(std::string& out);

  /// Appends one field. `name` must be lowercase. `sensitive`: never-indexed literal (§6.2.3),
  /// kept out of the table.
  void add(std::string& out, std::string_view name, std::string_view value, bool sensitive = false);

  std::size_t table_size() const noexcept;  ///< RFC 7541 §4.1 size of the dynamic table
  std::size_t memory() const noexcept;      ///< bytes allocated by the encoder
  void trim() noexcept;                     ///< release spare capacity (idle connection)

 private:
  detail::field_table table_;
  std::uint32_t own_max_;
  std::uint32_t peer_max_ = default_table_size;
  std::uint32_t announced_ = default_table_size;  // the maximum size the peer's decoder uses
  std::uint32_t pending_min_ = 0;                 // smallest size since the last block
  bool pending_ = false;
  // The last block's entries by position: a static index (bit set in memo_static_) or a dynamic
  // entry's insertion number (bit set in memo_dyn_).
  static constexpr std::uint32_t kMemo = 16;
  std::uint16_t memo_static_ = 0, memo_dyn_ = 0;
  std::uint32_t pos_ = 0;  // the position of the next field in the block
  std::array<std::uint32_t, kMemo> memo_{};
};

/// Huffman code of RFC 7541 Appendix B: encoded length in octets.
std::size_t huffman_length(std::string_view s) noexcept;
/// Appends the Huffman encoding of `s` to `out` (padded with ones, §5.2).
void huffman_encode(std::string_view s, std::string& out);
/// Appends the decoding of `in` to `out`; false on invalid input (EOS, padding over 7 bits or
/// not all ones), and then `out` is unchanged.
bool huffman_decode(std::string_view in, std::string& out);

}  // namespace portico::h2::hpack
