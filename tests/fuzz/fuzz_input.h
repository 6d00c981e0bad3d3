// What every fuzz target shares: the input as a file the loaders can open, and the rule that
// separates a rejected input from a bug.
//
// The loaders memory-map files by path (the form every real caller has), so the input is written
// to an anonymous memory file (memfd) and opened as /proc/self/fd/N: no disk traffic and no file
// left behind, and the parser runs exactly the code a user's file runs through.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <string>

#include "core/base/error.h"

namespace latte::fuzz {

class MemoryFile {
 public:
  MemoryFile() : fd_(::memfd_create("latte-fuzz", 0)) {
    if (fd_ < 0) std::abort();
  }
  ~MemoryFile() { ::close(fd_); }
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;

  // Replaces the contents with bytes; returns the path to open.
  const std::string& write(const uint8_t* data, size_t size) {
    if (::ftruncate(fd_, 0) != 0) std::abort();
    size_t done = 0;
    while (done < size) {
      const ssize_t w = ::pwrite(fd_, data + done, size - done, off_t(done));
      if (w <= 0) std::abort();
      done += size_t(w);
    }
    return path_;
  }

 private:
  int fd_;
  std::string path_ = "/proc/self/fd/" + std::to_string(fd_);
};

// A scratch folder for the formats that are folders (config.json + index + shards). Created once
// per process under /dev/shm (memory); files are overwritten on each input.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::string tmpl = (std::filesystem::exists("/dev/shm") ? "/dev/shm" : "/tmp") + std::string("/latte-fuzz-XXXXXX");
    if (!::mkdtemp(tmpl.data())) std::abort();
    return std::filesystem::path(tmpl);
  }();
  return dir;
}

// Runs one parse. A latte::Error is the parser rejecting the input: the expected outcome for most
// inputs. Error code `internal` is a broken invariant inside Latte, and any other exception (a
// nlohmann::json type error, std::bad_alloc from a size field, std::length_error) escaped the
// validation: both are bugs, so they abort and libFuzzer records the input as a crash.
template <typename F>
void parse_or_reject(F&& parse) {
  try {
    parse();
  } catch (const Error& e) {
    if (e.code() == ErrorCode::internal) {
      std::fprintf(stderr, "latte fuzz: internal error: %s\n", e.what());
      std::abort();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "latte fuzz: exception other than latte::Error escaped: %s\n", e.what());
    std::abort();
  }
}

}  // namespace latte::fuzz
