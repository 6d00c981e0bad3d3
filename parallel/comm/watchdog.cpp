#include "parallel/comm/watchdog.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "core/base/error.h"

namespace latte {

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void Watchdog::abort_job_on_expiry(const std::string& message) {
  std::fputs((message + "\n").c_str(), stderr);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
}

std::string Watchdog::expiry_message(int world_rank, const char* call, const char* stage,
                                     const char* op, int64_t count, const std::string& comm,
                                     double timeout_s) {
  std::string size = std::strcmp(op, "barrier") == 0 ? std::string()
                                                    : str_cat(" of ", count, count == 1 ? " float" : " floats");
  return str_cat("latte: rank ", world_rank, ": ", call, " (", stage, op, size, " on ", comm,
                 ") did not complete in ", timeout_s, " s; another rank may have died");
}

Watchdog::Watchdog(double timeout_s, int world_rank, Expired on_expire)
    : timeout_s_(timeout_s), world_rank_(world_rank), on_expire_(std::move(on_expire)) {
  if (timeout_s_ > 0) thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Watchdog::Slot* Watchdog::open_slot(std::string comm_name) {
  std::lock_guard<std::mutex> lock(mutex_);
  slots_.push_back(std::make_unique<Slot>(std::move(comm_name)));
  return slots_.back().get();
}

void Watchdog::close_slot(Slot* slot) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::erase_if(slots_, [slot](const std::unique_ptr<Slot>& s) { return s.get() == slot; });
}

void Watchdog::run() {
  // Look ten times per timeout, at most once per second and at least every 10 ms: a call is
  // reported between timeout and 1.1 x timeout after it began.
  const auto period = std::chrono::duration<double>(std::clamp(timeout_s_ / 10, 0.01, 1.0));
  const int64_t limit_ns = int64_t(timeout_s_ * 1e9);
  std::vector<uint64_t> reported;  // serials already handed to on_expire (when it returns)
  std::unique_lock<std::mutex> lock(mutex_);
  while (!wake_.wait_for(lock, period, [this] { return stop_; })) {
    for (const auto& slot : slots_) {
      uint64_t serial = slot->serial.load(std::memory_order_acquire);
      if (serial % 2 == 0) continue;  // idle
      int64_t since = slot->since_ns.load(std::memory_order_relaxed);
      const char* call = slot->call.load(std::memory_order_relaxed);
      const char* stage = slot->stage.load(std::memory_order_relaxed);
      const char* op = slot->op.load(std::memory_order_relaxed);
      int64_t count = slot->count.load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (slot->serial.load(std::memory_order_relaxed) != serial) continue;  // it moved on
      if (now_ns() - since < limit_ns) continue;
      if (std::find(reported.begin(), reported.end(), serial) != reported.end()) continue;
      reported.push_back(serial);
      on_expire_(expiry_message(world_rank_, call, stage, op, count, slot->comm, timeout_s_));
    }
  }
}

WatchedCall::WatchedCall(Watchdog::Slot* slot, const char* op, int64_t count) : slot_(slot) {
  if (!slot_) return;
  // Seqlock writer: the fence keeps these stores from becoming visible before the previous
  // call's exit increment, so a reader that sees them also sees the serial move.
  std::atomic_thread_fence(std::memory_order_release);
  slot_->op.store(op, std::memory_order_relaxed);
  slot_->count.store(count, std::memory_order_relaxed);
  slot_->call.store("(entering)", std::memory_order_relaxed);
  slot_->stage.store("", std::memory_order_relaxed);
  slot_->since_ns.store(now_ns(), std::memory_order_relaxed);
  slot_->serial.fetch_add(1, std::memory_order_release);  // now odd: in a call
}

void WatchedCall::enter(const char* call, const char* stage) {
  if (!slot_) return;
  slot_->stage.store(stage, std::memory_order_relaxed);
  slot_->call.store(call, std::memory_order_release);
}

WatchedCall::~WatchedCall() {
  if (slot_) slot_->serial.fetch_add(1, std::memory_order_release);  // even again: idle
}

}  // namespace latte
