// Files: read-only memory maps for checkpoints and token shards, and atomic writes
// (temp file in the same folder + fsync + rename + fsync of the folder) so a crash mid-save
// leaves either the old file or the new one, never a torn one.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>

namespace latte {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws io / bad_file naming the path
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  // Drops the resident pages of [p, p + n) (a range inside this map; widened to whole pages)
  // from the process: reading them again faults them back in from the file. A streamed pass over
  // a checkpoint larger than memory calls it after each layer, so that its resident size stays
  // one layer's weights instead of growing to the file's size. Safe on any part of the map: the
  // mapping is read-only, so no page holds anything the file does not.
  void release_pages(const void* p, size_t n) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Sink handed to atomic_write's callback; write() throws io naming the final path on failure.
class FileWriter {
 public:
  virtual ~FileWriter() = default;
  virtual void write(const void* data, size_t n) = 0;
  void write(std::span<const uint8_t> b) { write(b.data(), b.size()); }
};

// A file written in pieces, over many calls, that appears at `path` only when committed: the
// bytes go to "<path>.tmp.<pid>"; commit() fsyncs it, renames it onto path and fsyncs the folder.
// Destroyed uncommitted (an error on the way), the temp file is removed and path is untouched.
// For writers that cannot hold the whole file in memory (a 4 GiB checkpoint shard, tensor by
// tensor).
class AtomicFile final : public FileWriter {
 public:
  explicit AtomicFile(std::string path);  // creates the temp file; throws io naming it
  ~AtomicFile() override;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  using FileWriter::write;
  void write(const void* data, size_t n) override;  // throws io naming path
  void commit();
  uint64_t bytes_written() const { return written_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t written_ = 0;
};

// Calls fill(writer) on "<path>.tmp.<pid>", then fsyncs and renames it onto path. If fill throws,
// the temp file is removed and path is left untouched.
void atomic_write(const std::string& path, const std::function<void(FileWriter&)>& fill);
void atomic_write_string(const std::string& path, const std::string& contents);

std::string read_text_file(const std::string& path);  // throws io naming the path
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);

}  // namespace latte
