#include <portico/server/cli.hpp>

#include <charconv>
#include <exception>
#include <iostream>

#include <CLI/CLI.hpp>

#include <portico/server/server.hpp>

#ifndef PORTICO_VERSION
#error "PORTICO_VERSION is defined by CMakeLists.txt (the project version)"
#endif

namespace portico {

std::string_view version() noexcept { return PORTICO_VERSION; }

namespace {

constexpr unsigned long long kMaxMs = 86'400'000;

/// One of the binary's own options. CLI11 only collects the raw values; they are stored after
/// the configuration file is loaded, so that an option bound to a configuration field wins.
struct Extra {
  CLI::Option* opt = nullptr;
  std::vector<std::string> values;  // every occurrence, in order
  Cli::ValueParser store;           // null for a flag
  bool* flag = nullptr;
  bool repeatable = false;
};

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

/// A decimal number without sign, or nullopt.
std::optional<unsigned long long> parse_number(const std::string& s) {
  unsigned long long v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

struct Cli::Impl {
  Impl(std::string n, std::string description)
      : app(std::move(description), n), name(std::move(n)) {}

  CLI::App app;
  std::string name;
  std::vector<std::unique_ptr<Extra>> extras;  // CLI11 keeps pointers into them
  std::string setup_error;                     // a bad option spelling, reported by parse()
  ServerConfig config;
  std::string conf;
  bool daemon = false;
  bool upgrade = false;
  bool test = false;

  /// Registers an option collecting raw values, or a flag when `store` is null.
  Cli& add(Cli& self, const std::string& flags, const std::string& help, Cli::ValueParser store,
           bool* flag, bool repeatable, const char* type_name) {
    try {
      auto e = std::make_unique<Extra>();
      if (flag) {
        e->opt = app.add_flag(flags, help)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
      } else {
        e->opt = app.add_option(flags, e->values, help)
                     ->expected(1)
                     ->allow_extra_args(false)
                     ->take_all()
                     ->type_name(type_name);
      }
      e->store = std::move(store);
      e->flag = flag;
      e->repeatable = repeatable;
      extras.push_back(std::move(e));
    } catch (const std::exception& ex) {
      if (setup_error.empty()) setup_error = "option " + quoted(flags) + ": " + ex.what();
    }
    return self;
  }

  /// Stores the binary's options; the first problem, or empty.
  std::string store_extras() {
    for (auto& e : extras) {
      if (e->flag) {
        if (e->opt->count() > 0) *e->flag = true;
        continue;
      }
      if (e->values.empty()) continue;
      const std::size_t first = e->repeatable ? 0 : e->values.size() - 1;
      for (std::size_t i = first; i < e->values.size(); ++i)
        if (std::string problem = e->store(e->values[i]); !problem.empty()) return problem;
    }
    return {};
  }
};

Cli::Cli(std::string name, std::string description) {
  try {
    impl_ = std::make_unique<Impl>(std::move(name), std::move(description));
    auto& app = impl_->app;
    app.add_option("-c,--conf", impl_->conf, "YAML configuration file (docs/configuration.md)")
        ->type_name("FILE")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app.add_flag("-d,--daemon", impl_->daemon, "Run in the background (sets daemon: true)")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app.add_flag("-u,--upgrade", impl_->upgrade,
                 "Take the listening sockets over from the running instance (graceful upgrade)")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app.add_flag("-t,--test", impl_->test, "Test the configuration and exit")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app.set_version_flag("--version", impl_->name + " (portico " + std::string(version()) + ")");
    app.footer("Configuration keys and these options: docs/configuration.md");
  } catch (const std::exception& e) {
    // Only an allocation can fail here; parse() reports it.
    if (impl_) impl_->setup_error = e.what();
  }
}

Cli::~Cli() = default;

Cli& Cli::add_option(const std::string& flags, std::string& out, const std::string& help) {
  return impl_->add(
      *this, flags, help, [&out](const std::string& v) { return out = v, std::string(); }, nullptr,
      false, "TEXT");
}

Cli& Cli::add_option(const std::string& flags, std::vector<std::string>& out,
                     const std::string& help) {
  return impl_->add(
      *this, flags, help, [&out](const std::string& v) { return out.push_back(v), std::string(); },
      nullptr, true, "TEXT");
}

Cli& Cli::add_option(const std::string& flags, std::size_t& out, const std::string& help,
                     bool positive) {
  const std::string name = flags.substr(flags.rfind(',') + 1);
  return impl_->add(
      *this, flags, help,
      [&out, name, positive](const std::string& v) {
        auto n = parse_number(v);
        if (!n || (positive && *n == 0))
          return name + " needs a " + (positive ? "positive" : "non-negative") + " integer, got " +
                 quoted(v);
        out = static_cast<std::size_t>(*n);
        return std::string();
      },
      nullptr, false, "N");
}

Cli& Cli::add_option(const std::string& flags, std::chrono::milliseconds& out,
                     const std::string& help) {
  const std::string name = flags.substr(flags.rfind(',') + 1);
  return impl_->add(
      *this, flags, help,
      [&out, name](const std::string& v) {
        auto n = parse_number(v);
        if (!n || *n == 0 || *n > kMaxMs)
          return name + " needs a number of milliseconds in 1..86400000";
        out = std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(*n));
        return std::string();
      },
      nullptr, false, "MS");
}

Cli& Cli::add_option(const std::string& flags, ValueParser parse, const std::string& help,
                     bool repeatable) {
  return impl_->add(*this, flags, help, std::move(parse), nullptr, repeatable, "TEXT");
}

Cli& Cli::add_flag(const std::string& flags, bool& out, const std::string& help) {
  return impl_->add(*this, flags, help, nullptr, &out, false, "");
}

CliOutcome Cli::parse(int argc, const char* const* argv) {
  return parse(argc, argv, std::cout, std::cerr);
}

CliOutcome Cli::parse(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  if (!impl_) {
    err << "out of memory\n";
    return {false, 2};
  }
  Impl& I = *impl_;
  try {
    if (!I.setup_error.empty()) {
      err << I.name << ": " << I.setup_error << "\n";
      return {false, 2};
    }
    try {
      I.app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      // --help and --version are "errors" that print and exit 0; the others print the problem.
      const int code = I.app.exit(e, out, err);
      return {false, code == 0 ? 0 : 2};
    }

    if (!I.conf.empty()) {
      auto loaded = load_config_file(I.conf);
      if (!loaded) {
        err << loaded.error().context() << "\n";
        return {false, 1};
      }
      I.config = std::move(*loaded);
    }
    if (I.daemon) I.config.daemon = true;
    if (std::string problem = I.store_extras(); !problem.empty()) {
      err << problem << "\n";
      return {false, 2};
    }

    const std::string source = I.conf.empty() ? "command line" : I.conf;
    for (const auto& key : ineffective_keys(I.config))
      err << "warning: " << source << ": '" << key << "' is accepted but has no effect yet\n";

    if (I.test) {
      if (auto v = verify_config(I.config); !v) {
        err << v.error().context() << "\n";
        return {false, 1};
      }
      out << "configuration OK: " << (I.conf.empty() ? "(defaults, no --conf)" : I.conf) << "\n";
      return {false, 0};
    }
    apply_logging(I.config);
    return {true, 0};
  } catch (const std::exception& e) {
    err << I.name << ": " << e.what() << "\n";
  } catch (...) {
    err << I.name << ": unexpected error while reading the command line\n";
  }
  return {false, 2};
}

ServerConfig& Cli::config() noexcept { return impl_->config; }
const ServerConfig& Cli::config() const noexcept { return impl_->config; }
const std::string& Cli::conf_file() const noexcept { return impl_->conf; }
bool Cli::daemon() const noexcept { return impl_->daemon; }
bool Cli::upgrade() const noexcept { return impl_->upgrade; }
bool Cli::test() const noexcept { return impl_->test; }

Result<ServerConfig> Cli::reload_config(const Adjust& adjust) {
  auto fail = [](const std::string& m) { return Error::internal(ErrorType::InternalError, m); };
  Impl& I = *impl_;
  if (I.conf.empty()) return I.config;
  try {
    auto loaded = load_config_file(I.conf);
    if (!loaded) return loaded.error();
    ServerConfig previous = I.config;
    // Assigned into config() itself: the binary's options are bound to its fields.
    I.config = std::move(*loaded);
    if (I.daemon) I.config.daemon = true;
    if (std::string problem = I.store_extras(); !problem.empty()) {
      I.config = std::move(previous);
      return fail(problem);
    }
    if (adjust) adjust(I.config);
    return I.config;
  } catch (const std::exception& e) {
    return fail(std::string("reloading the configuration: ") + e.what());
  }
}

ServerConf Cli::server_conf(Adjust adjust) {
  ServerConf c = to_server_conf(impl_->config);
  c.upgrade = impl_->upgrade;
  if (!impl_->conf.empty())
    c.reload_config = [this, adjust = std::move(adjust)] { return reload_config(adjust); };
  return c;
}

bool Cli::given(std::string_view flag) const {
  try {
    const CLI::Option* o = impl_->app.get_option_no_throw(std::string(flag));
    return o != nullptr && o->count() > 0;
  } catch (...) {
    return false;
  }
}

}  // namespace portico
