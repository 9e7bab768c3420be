// Cli: the command line every binary built on Server shares (-c, -d, -u, -t, --help, --version,
// as in Pingora), next to the binary's own options. CLI11 stays out of this header.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <portico/server/config.hpp>

namespace portico {

struct ServerConf;

/// portico's version, e.g. "0.1.0" (the CMake project version).
std::string_view version() noexcept;

/// What the binary does after Cli::parse().
struct CliOutcome {
  /// True: run the server with Cli::config(). False: return `exit_code` from main at once
  /// (after --help, --version, -t, a usage error or a configuration error).
  bool run = false;
  /// 0 after --help, --version and a passed -t; 1 for a configuration that does not load or
  /// verify; 2 for a usage error (an unknown option, a missing or bad value).
  int exit_code = 0;
};

/// The shared command line:
///
///   -c, --conf FILE   load the YAML configuration (docs/configuration.md); without it every
///                     key has its default
///   -d, --daemon      run in the background: sets `daemon: true`
///   -u, --upgrade     take the listening sockets over from a running instance (graceful upgrade)
///   -t, --test        load and verify the configuration (verify_config), print
///                     "configuration OK: FILE" or the problems, and exit 0 or 1
///   -h, --help        describe every option and exit
///   --version         print "NAME (portico VERSION)" and exit
///
/// A binary adds its own options before parse(). Usage:
///
///   portico::Cli cli("reverse_proxy", "A round-robin reverse proxy.");
///   std::vector<std::string> upstreams;
///   cli.add_option("--upstream", upstreams, "ADDR:PORT of an upstream (repeatable)");
///   cli.add_option("--threads", cli.config().threads, "worker threads");  // overrides the file
///   if (auto o = cli.parse(argc, argv); !o.run) return o.exit_code;
///   portico::Server server(portico::to_server_conf(cli.config()));
///
/// The configuration file is loaded before the binary's options are stored, so an option bound
/// to a field of config() overrides the file's value when it is given, and leaves it alone
/// when it is not. An option given twice keeps its last value (a list option keeps every
/// value, in order). parse() never throws; messages go to the streams it is given.
class Cli {
 public:
  /// Stores one value of an option. Returns an empty string, or a message naming the option
  /// and what is wrong with the value: parse() then prints it and returns exit status 2.
  using ValueParser = std::function<std::string(const std::string& value)>;

  /// `name` is the binary's name in help and --version; `description` the first help line.
  Cli(std::string name, std::string description);
  ~Cli();
  Cli(const Cli&) = delete;
  Cli& operator=(const Cli&) = delete;

  /// An option taking a value. `flags` spells it like CLI11: "--listen", or "-l,--listen".
  /// The targets must outlive parse().
  Cli& add_option(const std::string& flags, std::string& out, const std::string& help);
  /// A repeatable option: every occurrence appends its value.
  Cli& add_option(const std::string& flags, std::vector<std::string>& out, const std::string& help);
  /// A non-negative integer; "threads"-like options reject 0 with `positive`.
  Cli& add_option(const std::string& flags, std::size_t& out, const std::string& help,
                  bool positive = false);
  /// A number of milliseconds in 1..86400000 (the values the configuration's *_ms keys take).
  Cli& add_option(const std::string& flags, std::chrono::milliseconds& out,
                  const std::string& help);
  /// Any other value: `parse` stores it or says what is wrong. `repeatable` keeps every
  /// occurrence (in order) instead of the last.
  Cli& add_option(const std::string& flags, ValueParser parse, const std::string& help,
                  bool repeatable = false);
  /// A flag: `out` becomes true when it is given.
  Cli& add_flag(const std::string& flags, bool& out, const std::string& help);

  /// Parses the command line, loads the configuration, stores the binary's options. Prints
  /// help, version, "configuration OK: FILE" to `out` and problems to `err`; warns on `err`
  /// about keys that are set but have no effect yet (ineffective_keys()). On a run outcome the
  /// error log level is applied (apply_logging()).
  CliOutcome parse(int argc, const char* const* argv, std::ostream& out, std::ostream& err);
  /// The same with std::cout and std::cerr.
  CliOutcome parse(int argc, const char* const* argv);

  /// The configuration: defaults, then the file given with -c, then -d. Mutable so a binary's
  /// options can be bound to its fields and the binary can adjust it before building a Server.
  ServerConfig& config() noexcept;
  const ServerConfig& config() const noexcept;
  /// The -c file, or empty.
  const std::string& conf_file() const noexcept;
  bool daemon() const noexcept;
  /// -u: the binary should take the listening sockets over from the running instance
  /// (ServerConf::upgrade; server_conf() sets it).
  bool upgrade() const noexcept;
  bool test() const noexcept;
  /// True when the option with this name ("--threads", "-c" or "--conf") was on the command line.
  bool given(std::string_view flag) const;

  /// A fix-up the binary makes to the configuration after parse() (e.g. a --listen flag
  /// replacing the file's listeners), applied to `config()` again by reload_config().
  using Adjust = std::function<void(ServerConfig&)>;
  /// For SIGHUP: loads the -c file again and applies -d, the binary's options and `adjust`, as
  /// parse() and the binary did at start; on success config() becomes the result (so that the
  /// options bound to its fields stay bound). An error (the file no longer loads, an option no
  /// longer fits) leaves config() as it was; its context() is the message. Call it from one
  /// thread at a time (Server calls it on the thread of run_forever()).
  Result<ServerConfig> reload_config(const Adjust& adjust = {});
  /// to_server_conf(config()) with -u (ServerConf::upgrade) and, when -c was given, SIGHUP
  /// wired to reload_config(adjust). `adjust` must outlive the Server, as must this Cli.
  ServerConf server_conf(Adjust adjust = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace portico
