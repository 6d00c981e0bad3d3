#include "core/base/file_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/base/error.h"

namespace latte {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(ErrorCode::io, "cannot open ", path, ": ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(ErrorCode::io, "cannot stat ", path, ": ", std::strerror(e));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail(ErrorCode::io, path, " is a directory, expected a file");
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail(ErrorCode::io, "cannot map ", path, ": ", std::strerror(e));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void MappedFile::release_pages(const void* p, size_t n) const {
  const auto* b = static_cast<const uint8_t*>(p);
  LATTE_REQUIRE(data_ != nullptr && b >= data_ && n <= size_ && size_t(b - data_) <= size_ - n, ErrorCode::internal,
                "release_pages: range of ", n, " bytes is not inside the map of ", path_);
  if (n == 0) return;
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(b) & ~(page - 1);
  const uintptr_t map_end = (reinterpret_cast<uintptr_t>(data_) + size_ + page - 1) & ~(page - 1);
  const uintptr_t end = std::min(map_end, (reinterpret_cast<uintptr_t>(b) + n + page - 1) & ~(page - 1));
  // MADV_DONTNEED on a read-only private file mapping discards the process's reference to the
  // page-cache pages; the next access maps them again (from the cache or from disk).
  if (::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED) != 0)
    fail(ErrorCode::io, "madvise(MADV_DONTNEED) on ", path_, ": ", std::strerror(errno));
}

namespace {

void fsync_directory_of(const std::string& path) {
  std::filesystem::path parent = std::filesystem::absolute(path).parent_path();
  int dfd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), tmp_(str_cat(path_, ".tmp.", ::getpid())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd_ < 0) fail(ErrorCode::io, "cannot create ", tmp_, ": ", std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {  // not committed
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t n) {
  LATTE_REQUIRE(fd_ >= 0, ErrorCode::internal, "write to ", path_, " after it was committed");
  const char* p = static_cast<const char*>(data);
  written_ += n;
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(ErrorCode::io, "cannot write ", path_, ": ", std::strerror(errno));
    }
    p += w;
    n -= size_t(w);
  }
}

void AtomicFile::commit() {
  LATTE_REQUIRE(fd_ >= 0, ErrorCode::internal, path_, " committed twice");
  if (::fsync(fd_) != 0) fail(ErrorCode::io, "cannot fsync ", tmp_, ": ", std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp_.c_str());
    fail(ErrorCode::io, "cannot rename ", tmp_, " to ", path_, ": ", std::strerror(e));
  }
  fsync_directory_of(path_);
}

void atomic_write(const std::string& path, const std::function<void(FileWriter&)>& fill) {
  AtomicFile file(path);
  fill(file);
  file.commit();
}

void atomic_write_string(const std::string& path, const std::string& contents) {
  atomic_write(path, [&](FileWriter& w) { w.write(contents.data(), contents.size()); });
}

std::string read_text_file(const std::string& path) {
  if (is_directory(path)) fail(ErrorCode::io, path, " is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorCode::io, "cannot open ", path, ": ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool file_exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

bool is_directory(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec);
}

}  // namespace latte
