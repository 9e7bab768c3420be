// The shared command line: -c/-d/-u/-t, --help, --version, and a binary's own options next to
// them, overriding the configuration file only when given.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <portico/server/cli.hpp>

namespace {

using namespace portico;
using namespace std::chrono_literals;

/// Runs `cli.parse` on {"prog", args...}, capturing what it prints.
struct Run {
  CliOutcome outcome;
  std::string out;
  std::string err;
};

Run run(Cli& cli, std::vector<const char*> args) {
  args.insert(args.begin(), "prog");
  std::ostringstream out, err;
  Run r;
  r.outcome = cli.parse(static_cast<int>(args.size()), args.data(), out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

/// A configuration file in the test's temporary directory, removed afterwards.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& text) : path_(::testing::TempDir() + name) {
    std::ofstream(path_) << text;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const char* path() const { return path_.c_str(); }

 private:
  std::string path_;
};

TEST(CliTest, NoArgumentsRunWithDefaults) {
  Cli cli("prog", "A test program.");
  auto r = run(cli, {});
  EXPECT_TRUE(r.outcome.run);
  EXPECT_EQ(r.outcome.exit_code, 0);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "");
  EXPECT_TRUE(cli.conf_file().empty());
  EXPECT_FALSE(cli.daemon() || cli.upgrade() || cli.test());
  EXPECT_EQ(cli.config().threads, 1u);
  EXPECT_FALSE(cli.config().daemon);
}

TEST(CliTest, ConfDaemonUpgrade) {
  TempFile conf("cli_conf.yaml", "threads: 3\ntimeouts:\n  keepalive_ms: 1500\n");
  Cli cli("prog", "A test program.");
  auto r = run(cli, {"-c", conf.path(), "-d", "--upgrade"});
  EXPECT_TRUE(r.outcome.run) << r.err;
  EXPECT_EQ(cli.conf_file(), conf.path());
  EXPECT_EQ(cli.config().threads, 3u);
  EXPECT_EQ(cli.config().http.keepalive_timeout, 1500ms);
  EXPECT_EQ(cli.config().source, conf.path());
  // -d forces daemon: true (acted on by Server::run_forever); nothing to warn about.
  EXPECT_TRUE(cli.daemon());
  EXPECT_TRUE(cli.config().daemon);
  EXPECT_TRUE(cli.upgrade());
  EXPECT_EQ(r.err, "");
  EXPECT_TRUE(cli.given("-c"));
  EXPECT_TRUE(cli.given("--conf"));
  EXPECT_FALSE(cli.given("--test"));

  Cli long_form("prog", "");
  r = run(long_form, {"--conf", conf.path(), "--daemon"});
  EXPECT_TRUE(r.outcome.run);
  EXPECT_TRUE(long_form.config().daemon);
  EXPECT_EQ(long_form.config().threads, 3u);
}

TEST(CliTest, TestFlagOnGoodConfiguration) {
  TempFile conf("cli_good.yaml", "version: 1\nthreads: 2\nlisteners:\n  - address: 127.0.0.1:0\n");
  Cli cli("prog", "");
  auto r = run(cli, {"-t", "-c", conf.path()});
  EXPECT_FALSE(r.outcome.run);
  EXPECT_EQ(r.outcome.exit_code, 0);
  EXPECT_EQ(r.out, "configuration OK: " + std::string(conf.path()) + "\n");
  EXPECT_EQ(r.err, "");
  EXPECT_TRUE(cli.test());

  Cli defaults("prog", "");
  r = run(defaults, {"--test"});
  EXPECT_EQ(r.outcome.exit_code, 0);
  EXPECT_FALSE(r.outcome.run);
  EXPECT_EQ(r.out, "configuration OK: (defaults, no --conf)\n");
}

TEST(CliTest, TestFlagOnBadConfiguration) {
  TempFile conf("cli_bad.yaml", "version: 1\nthraeds: 2\nthreads: two\n");
  Cli cli("prog", "");
  auto r = run(cli, {"-t", "-c", conf.path()});
  EXPECT_FALSE(r.outcome.run);
  EXPECT_EQ(r.outcome.exit_code, 1);
  EXPECT_EQ(r.out, "");
  const std::string p = conf.path();
  EXPECT_EQ(r.err, p + ":2:1: unknown key 'thraeds' (did you mean 'threads'?)\n" + p +
                       ":3:10: 'threads' must be a positive integer, got \"two\"\n");

  // Without -t a bad configuration stops the binary the same way.
  Cli runner("prog", "");
  r = run(runner, {"-c", conf.path()});
  EXPECT_FALSE(r.outcome.run);
  EXPECT_EQ(r.outcome.exit_code, 1);
  EXPECT_NE(r.err.find("unknown key 'thraeds'"), std::string::npos) << r.err;

  Cli missing("prog", "");
  r = run(missing, {"-t", "-c", "/nonexistent/portico.yaml"});
  EXPECT_EQ(r.outcome.exit_code, 1);
  EXPECT_EQ(
      r.err,
      "cannot read configuration file '/nonexistent/portico.yaml': No such file or directory\n");
}

TEST(CliTest, TestFlagVerifiesListeners) {
  TempFile conf("cli_tls.yaml",
                "listeners:\n  - address: 127.0.0.1:0\n    tls:\n"
                "      cert_file: /nonexistent/c.pem\n      key_file: /nonexistent/k.pem\n");
  Cli cli("prog", "");
  auto r = run(cli, {"-t", "-c", conf.path()});
  EXPECT_EQ(r.outcome.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err.rfind(std::string(conf.path()) + ":2:5: ", 0), 0u) << r.err;
}

TEST(CliTest, ExtraOptionsNextToTheSharedOnes) {
  TempFile conf("cli_extras.yaml",
                "threads: 3\ntimeouts:\n  header_read_ms: 700\n  body_read_ms: 800\n");
  Cli cli("prog", "");
  std::string listen = "127.0.0.1:8080";
  std::vector<std::string> upstreams;
  bool self_test = false, verbose = false;
  std::string mode;
  cli.add_option("--listen", listen, "address")
      .add_option("--upstream", upstreams, "upstream (repeatable)")
      .add_option("--threads", cli.config().threads, "worker threads", true)
      .add_option("--header-read-timeout-ms", cli.config().http.header_read_timeout, "ms")
      .add_option("--body-read-timeout-ms", cli.config().http.body_read_timeout, "ms")
      .add_flag("--self-test", self_test, "self test")
      .add_flag("-v,--verbose", verbose, "more output")
      .add_option(
          "--mode",
          [&](const std::string& v) {
            if (v != "fast" && v != "safe") return "--mode is fast or safe, got " + v;
            mode = v;
            return std::string();
          },
          "fast or safe");
  auto r = run(cli, {"--upstream", "10.0.0.1:80", "-c", conf.path(), "--listen", "0.0.0.0:1",
                     "--upstream=10.0.0.2:80", "--threads", "6", "--header-read-timeout-ms", "250",
                     "--self-test", "--mode", "safe", "--listen", "0.0.0.0:2"});
  ASSERT_TRUE(r.outcome.run) << r.err;
  EXPECT_EQ(listen, "0.0.0.0:2");  // the last one
  EXPECT_EQ(upstreams, (std::vector<std::string>{"10.0.0.1:80", "10.0.0.2:80"}));
  // Given flags override the file wherever they appear; the others leave it alone.
  EXPECT_EQ(cli.config().threads, 6u);
  EXPECT_EQ(cli.config().http.header_read_timeout, 250ms);
  EXPECT_EQ(cli.config().http.body_read_timeout, 800ms);
  EXPECT_TRUE(self_test);
  EXPECT_FALSE(verbose);
  EXPECT_EQ(mode, "safe");
  EXPECT_TRUE(cli.given("--threads"));
  EXPECT_FALSE(cli.given("--verbose"));
  EXPECT_FALSE(cli.given("--no-such-option"));
}

TEST(CliTest, BadValuesAndUnknownOptionsAreUsageErrors) {
  auto make = [](Cli& cli, std::size_t& threads, std::chrono::milliseconds& ms) {
    cli.add_option("--threads", threads, "worker threads", true);
    cli.add_option("--keepalive-timeout-ms", ms, "ms");
  };
  struct Case {
    std::vector<const char*> args;
    std::string err;
  };
  const std::vector<Case> cases = {
      {{"--threads", "0"}, "--threads needs a positive integer, got \"0\"\n"},
      {{"--threads", "two"}, "--threads needs a positive integer, got \"two\"\n"},
      {{"--keepalive-timeout-ms", "0"},
       "--keepalive-timeout-ms needs a number of milliseconds in 1..86400000\n"},
      {{"--keepalive-timeout-ms", "86400001"},
       "--keepalive-timeout-ms needs a number of milliseconds in 1..86400000\n"},
      {{"--bogus"},
       "The following argument was not expected: --bogus\nRun with --help for more information.\n"},
      {{"stray"},
       "The following argument was not expected: stray\nRun with --help for more information.\n"},
      {{"--threads"}, "--threads: 1 required N missing\nRun with --help for more information.\n"},
  };
  for (const auto& c : cases) {
    Cli cli("prog", "");
    std::size_t threads = 1;
    std::chrono::milliseconds ms{1};
    make(cli, threads, ms);
    auto r = run(cli, c.args);
    EXPECT_FALSE(r.outcome.run) << c.args[0];
    EXPECT_EQ(r.outcome.exit_code, 2) << c.args[0];
    EXPECT_EQ(r.err, c.err);
    EXPECT_EQ(threads, 1u);
  }
  // A binary's option clashing with a shared one is reported, not thrown.
  Cli clash("prog", "");
  std::string s;
  clash.add_option("-c,--config", s, "clashes with -c");
  auto r = run(clash, {});
  EXPECT_FALSE(r.outcome.run);
  EXPECT_EQ(r.outcome.exit_code, 2);
  EXPECT_NE(r.err.find("\"-c,--config\""), std::string::npos) << r.err;
}

TEST(CliTest, HelpAndVersion) {
  Cli cli("reverse_proxy", "A round-robin reverse proxy.");
  std::string listen;
  cli.add_option("--listen", listen, "ADDR:PORT to listen on");
  auto r = run(cli, {"--help"});
  EXPECT_FALSE(r.outcome.run);
  EXPECT_EQ(r.outcome.exit_code, 0);
  for (const char* s : {"A round-robin reverse proxy.", "-c,--conf FILE", "-d,--daemon",
                        "-u,--upgrade", "-t,--test", "--version", "--listen TEXT",
                        "ADDR:PORT to listen on", "docs/configuration.md"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " in\n" << r.out;
  EXPECT_EQ(r.err, "");

  Cli v("reverse_proxy", "");
  r = run(v, {"--version"});
  EXPECT_FALSE(r.outcome.run);
  EXPECT_EQ(r.outcome.exit_code, 0);
  EXPECT_EQ(r.out, "reverse_proxy (portico " + std::string(version()) + ")\n");
  EXPECT_EQ(version(), PORTICO_PROJECT_VERSION);  // project(portico VERSION ...) in CMakeLists.txt
}

}  // namespace
