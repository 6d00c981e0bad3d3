// latte plot: the loss curves of one or more `latte train` runs as a PNG, drawn by gnuplot.
//
//   latte plot A/metrics.jsonl [B/metrics.jsonl ...] -o loss.png [--title T] [--labels a,b]
//
// Left panel: training loss ("loss" lines) against step; right panel: held-out loss ("val_loss"
// lines) against step; one line per file, the same colour in both panels, with a legend. A panel
// with no points in any file is left out. The data and the script go to a temporary folder; gnuplot
// (Debian: gnuplot-nox) draws into it with pngcairo where this gnuplot has it, else png; the PNG is
// checked (exists, PNG signature) and then copied to -o.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/base/error.h"
#include "core/base/file_io.h"
#include "cli/commands.h"

namespace latte::cli {

namespace {

namespace fs = std::filesystem;

struct Series {
  std::string label;
  std::vector<std::pair<int64_t, double>> train, val;  // (step, loss)
};

// Reads one metrics file: every non-blank line must be a JSON object; lines with "loss" or
// "val_loss" must carry an integer "step" and a finite number. Other lines are skipped.
Series read_metrics(const std::string& path) {
  LATTE_REQUIRE(file_exists(path), ErrorCode::io, "metrics file not found: ", path);
  LATTE_REQUIRE(!is_directory(path), ErrorCode::invalid_argument, path, " is a folder; give its metrics.jsonl");
  Series s;
  std::istringstream in(read_text_file(path));
  std::string line;
  int64_t lineno = 0, nonblank = 0;
  auto number = [&](const nlohmann::json& j, const char* key) {
    const auto& v = j.at(key);
    LATTE_REQUIRE(v.is_number() && std::isfinite(v.get<double>()), ErrorCode::bad_file, path, ":", lineno, ": \"", key,
                  "\" is not a finite number");
    return v.get<double>();
  };
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    ++nonblank;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      fail(ErrorCode::bad_file, path, ":", lineno, ": not a JSON line (expected latte train's metrics.jsonl)");
    }
    LATTE_REQUIRE(j.is_object(), ErrorCode::bad_file, path, ":", lineno, ": not a JSON object");
    const bool has_train = j.contains("loss"), has_val = j.contains("val_loss");
    if (!has_train && !has_val) continue;
    LATTE_REQUIRE(j.contains("step") && j["step"].is_number_integer(), ErrorCode::bad_file, path, ":", lineno,
                  ": no integer \"step\"");
    const int64_t step = j["step"].get<int64_t>();
    if (has_train) s.train.emplace_back(step, number(j, "loss"));
    if (has_val) s.val.emplace_back(step, number(j, "val_loss"));
  }
  LATTE_REQUIRE(nonblank > 0, ErrorCode::bad_file, "metrics file ", path, " is empty");
  LATTE_REQUIRE(!s.train.empty() || !s.val.empty(), ErrorCode::bad_file, path,
                " has no \"loss\" or \"val_loss\" lines (expected latte train's metrics.jsonl)");
  auto by_step = [](const auto& a, const auto& b) { return a.first < b.first; };
  std::stable_sort(s.train.begin(), s.train.end(), by_step);
  std::stable_sort(s.val.begin(), s.val.end(), by_step);
  return s;
}

// The default legend entry: the run's folder for OUT/metrics.jsonl, else the file name.
std::string default_label(const std::string& path) {
  const fs::path p(path);
  if (p.filename() == "metrics.jsonl") {
    const fs::path parent = fs::absolute(p).parent_path();
    if (!parent.filename().empty()) return parent.filename().string();
  }
  return p.filename().string();
}

// A gnuplot single-quoted string: no escapes except '' for a quote.
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "''";
    else if (c == '\n' || c == '\r') out += ' ';
    else out += c;
  }
  return out + "'";
}

void write_points(const fs::path& path, const std::vector<std::pair<int64_t, double>>& pts) {
  std::ofstream f(path);
  LATTE_REQUIRE(f.good(), ErrorCode::io, "cannot write ", path.string());
  char buf[64];
  for (const auto& [step, v] : pts) {
    std::snprintf(buf, sizeof buf, "%lld %.9g\n", (long long)step, v);
    f << buf;
  }
  LATTE_REQUIRE(f.good(), ErrorCode::io, "cannot write ", path.string());
}

// Is there an executable `name` on PATH?
bool on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  if (!path) return false;
  std::istringstream dirs(path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) dir = ".";
    const std::string cand = dir + "/" + name;
    if (::access(cand.c_str(), X_OK) == 0 && !is_directory(cand)) return true;
  }
  return false;
}

// Runs `gnuplot script` with stdout/stderr into log; returns the exit status (-1: not started).
int run_gnuplot(const std::string& script, const std::string& log) {
  const pid_t pid = ::fork();
  LATTE_REQUIRE(pid >= 0, ErrorCode::io, "cannot start gnuplot: ", std::strerror(errno));
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      ::close(fd);
    }
    const int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, STDIN_FILENO);
    ::execlp("gnuplot", "gnuplot", script.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

// The first non-blank line of gnuplot's log, for the one-line error.
std::string first_log_line(const std::string& log) {
  std::ifstream f(log);
  std::string line, out;
  while (std::getline(f, line)) {
    const auto a = line.find_first_not_of(" \t\r^");
    if (a == std::string::npos) continue;
    out += (out.empty() ? "" : " / ") + line.substr(a);
    if (out.size() > 200) break;
  }
  return out.empty() ? "(no message)" : out.substr(0, 240);
}

bool is_png(const std::string& path) {
  static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::ifstream f(path, std::ios::binary);
  char head[8] = {};
  if (!f.read(head, 8)) return false;
  return std::memcmp(head, sig, 8) == 0;
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "latte-plot-XXXXXX").string();
    LATTE_REQUIRE(::mkdtemp(tmpl.data()) != nullptr, ErrorCode::io, "cannot make a temporary folder in ",
                  fs::temp_directory_path().string(), ": ", std::strerror(errno));
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

}  // namespace

void add_plot(CLI::App& app) {
  struct Opts {
    std::vector<std::string> inputs, labels;
    std::string out, title;
    int width = 1280, height = 520;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("plot", "Draw training and held-out loss against step from latte train's metrics.jsonl (gnuplot)");
  cmd->add_option("metrics", o->inputs, "metrics.jsonl files of latte train runs (one line each in the plot)")->required();
  cmd->add_option("-o,--out", o->out, "output PNG")->required();
  cmd->add_option("--title", o->title, "title above the plot");
  cmd->add_option("--labels", o->labels, "legend entries, comma-separated, one per file (default: the run folders)")
      ->delimiter(',');
  cmd->add_option("--width", o->width, "image width in pixels")->check(CLI::Range(200, 10000));
  cmd->add_option("--height", o->height, "image height in pixels")->check(CLI::Range(150, 10000));
  cmd->callback([o] {
    LATTE_REQUIRE(o->labels.empty() || o->labels.size() == o->inputs.size(), ErrorCode::invalid_argument, "--labels has ",
                  o->labels.size(), " entries for ", o->inputs.size(), " metrics files");
    std::vector<Series> runs;
    for (size_t i = 0; i < o->inputs.size(); ++i) {
      runs.push_back(read_metrics(o->inputs[i]));
      runs.back().label = o->labels.empty() ? default_label(o->inputs[i]) : o->labels[i];
    }
    const fs::path out(o->out);
    LATTE_REQUIRE(!is_directory(o->out), ErrorCode::invalid_argument, "-o ", o->out, " is a folder; give a .png file name");
    const fs::path out_parent = fs::absolute(out).parent_path();
    LATTE_REQUIRE(is_directory(out_parent.string()), ErrorCode::io, "cannot write ", o->out, ": folder ",
                  out_parent.string(), " does not exist");
    LATTE_REQUIRE(on_path("gnuplot"), ErrorCode::unsupported,
                  "gnuplot not found on PATH: install gnuplot-nox (apt-get install gnuplot-nox)");

    TempDir tmp;
    bool any_train = false, any_val = false;
    for (size_t i = 0; i < runs.size(); ++i) {
      write_points(tmp.path() / str_cat("train", i, ".dat"), runs[i].train);
      write_points(tmp.path() / str_cat("val", i, ".dat"), runs[i].val);
      any_train = any_train || !runs[i].train.empty();
      any_val = any_val || !runs[i].val.empty();
    }
    const fs::path png = tmp.path() / "plot.png";
    std::ostringstream gp;
    gp << "# written by latte plot\n"
       << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
       << "  set terminal pngcairo noenhanced size " << o->width << "," << o->height << " font 'sans,10'\n"
       << "} else {\n"
       << "  set terminal png noenhanced size " << o->width << "," << o->height << "\n"
       << "}\n"
       << "set output " << quoted(png.string()) << "\n"
       << "set grid\n"
       << "set key top right\n"
       << "set xlabel 'step'\n"
       << "set ylabel 'loss (nats/token)'\n";
    const int panels = int(any_train) + int(any_val);
    gp << "set multiplot layout 1," << panels;
    if (!o->title.empty()) gp << " title " << quoted(o->title);
    gp << "\n";
    auto panel = [&](const char* what, const char* title, bool points) {
      gp << "set title " << quoted(title) << "\n" << "plot ";
      bool first = true;
      for (size_t i = 0; i < runs.size(); ++i) {
        const auto& pts = std::string(what) == "train" ? runs[i].train : runs[i].val;
        if (pts.empty()) continue;
        const bool lone = pts.size() == 1;
        gp << (first ? "" : ", \\\n     ") << quoted((tmp.path() / str_cat(what, i, ".dat")).string())
           << " using 1:2 with " << (points || lone ? "linespoints pointtype 7 pointsize 0.7" : "lines") << " linewidth 2"
           << " linecolor " << (i % 8) + 1 << " title " << quoted(runs[i].label);
        first = false;
      }
      gp << "\n";
    };
    if (any_train) panel("train", "training loss", false);
    if (any_val) panel("val", "held-out loss", true);
    gp << "unset multiplot\nset output\n";
    const std::string script = (tmp.path() / "plot.gp").string();
    const std::string log = (tmp.path() / "gnuplot.log").string();
    atomic_write_string(script, gp.str());

    const int rc = run_gnuplot(script, log);
    LATTE_REQUIRE(rc != 127, ErrorCode::unsupported, "cannot run gnuplot: install gnuplot-nox (apt-get install gnuplot-nox)");
    LATTE_REQUIRE(rc == 0, ErrorCode::internal, "gnuplot failed (exit ", rc, "): ", first_log_line(log));
    std::error_code ec;
    const auto size = fs::file_size(png, ec);
    LATTE_REQUIRE(!ec && size > 0 && is_png(png.string()), ErrorCode::internal,
                  "gnuplot wrote no PNG (does this gnuplot lack the png terminals?): ", first_log_line(log));
    std::ifstream f(png, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    atomic_write_string(o->out, bytes);  // -o appears whole or not at all
    size_t train_pts = 0, val_pts = 0;
    for (const Series& s : runs) train_pts += s.train.size(), val_pts += s.val.size();
    std::printf("wrote %s: %zu run(s), %zu training and %zu held-out points\n", o->out.c_str(), runs.size(), train_pts,
                val_pts);
  });
}

}  // namespace latte::cli
