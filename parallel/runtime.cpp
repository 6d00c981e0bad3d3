#include "parallel/runtime.h"

#include <mpi.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>

#include "parallel/comm/call_check.h"
#include "parallel/comm/factory.h"
#include "parallel/comm/mpi_check.h"
#include "parallel/comm/watchdog.h"

namespace latte {

const char* group_name(Group g) {
  switch (g) {
    case Group::world: return "world";
    case Group::tp: return "tp";
    case Group::dp: return "dp";
  }
  return "?";
}

void abort_job(int exit_code, const std::string& message) {
  int rank = mpi_world_rank();
  std::fputs(str_cat("latte: rank ", rank, ": ", message, "\n").c_str(), stderr);
  std::fflush(stderr);
  if (rank >= 0) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::exit(exit_code);
}

namespace {

const double default_timeout_s = 600;

double timeout_from_env() {
  const char* text = std::getenv("LATTE_COLLECTIVE_TIMEOUT_S");
  if (!text || !*text) return default_timeout_s;
  char* end = nullptr;
  errno = 0;
  double value = std::strtod(text, &end);
  LATTE_REQUIRE(errno == 0 && end && *end == '\0' && std::isfinite(value) && value >= 0,
                ErrorCode::invalid_argument, "LATTE_COLLECTIVE_TIMEOUT_S='", text,
                "' is not a number of seconds >= 0 (0 turns the watchdog off)");
  return value;
}

const char* thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "single";
    case MPI_THREAD_FUNNELED: return "funneled";
    case MPI_THREAD_SERIALIZED: return "serialized";
    case MPI_THREAD_MULTIPLE: return "multiple";
  }
  return "?";
}

// MPI_Init_thread .. MPI_Finalize, or an attachment to an MPI someone else initialised.
struct MpiSession {
  bool owns = false;
  int thread_level = MPI_THREAD_SINGLE;

  MpiSession() {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    LATTE_REQUIRE(!finalized, ErrorCode::unsupported,
                  "ParallelRuntime: MPI was already finalised in this process (MPI cannot start twice; "
                  "keep one ParallelRuntime alive for the whole program)");
    if (initialized) {
      MPI_Query_thread(&thread_level);
      return;
    }
    // Errors before any communicator exists are fatal inside MPI (MPI_ERRORS_ARE_FATAL): there
    // is nothing to return them to yet.
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &thread_level);
    owns = true;
  }
  ~MpiSession() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    // Finalize waits for every rank; during unwinding that may be forever (see runtime.h).
    if (owns && !finalized && std::uncaught_exceptions() == 0) MPI_Finalize();
  }
};

struct MpiComm {
  MPI_Comm comm = MPI_COMM_NULL;
  MpiComm() = default;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;
  ~MpiComm() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
  }
};

}  // namespace

// Member order is destruction order reversed: communicators go first (they close their
// watchdog slots and free MPI duplicates), then the watchdog, the split groups, MPI itself.
struct ParallelRuntime::State {
  MpiSession session;
  MpiComm world, local, tp, dp;
  int world_rank = 0, world_size = 1, local_rank = 0, local_size = 1, n_hosts = 1;
  int tp_rank = 0, tp_size = 1, dp_rank = 0, dp_size = 1;
  bool tp_within_host = true;
  std::string host;
  Device device;
  double timeout_s = 0;
  bool verify = true;
  std::unique_ptr<Watchdog> watchdog;
  std::map<std::pair<Group, DeviceKind>, std::unique_ptr<Communicator>> comms;

  void split_grid(int tp);
};

ParallelRuntime::ParallelRuntime(const ParallelOptions& o) : s_(std::make_unique<State>()) {
  State& s = *s_;
  // Our own duplicate of the world, with errors returned to LATTE_MPI_CHECK; every group below
  // is split from it and inherits that, and MPI_COMM_WORLD itself is left as the caller had it.
  LATTE_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &s.world.comm));
  LATTE_MPI_CHECK(MPI_Comm_set_errhandler(s.world.comm, MPI_ERRORS_RETURN));
  LATTE_MPI_CHECK(MPI_Comm_rank(s.world.comm, &s.world_rank));
  LATTE_MPI_CHECK(MPI_Comm_size(s.world.comm, &s.world_size));
  char host[MPI_MAX_PROCESSOR_NAME];
  int host_length = 0;
  LATTE_MPI_CHECK(MPI_Get_processor_name(host, &host_length));
  s.host.assign(host, size_t(host_length));

  LATTE_REQUIRE(o.tp_size >= 1, ErrorCode::invalid_argument, "--tp ", o.tp_size, " must be at least 1");
  LATTE_REQUIRE(s.world_size % o.tp_size == 0, ErrorCode::invalid_argument, "--tp ", o.tp_size,
                " does not divide the ", s.world_size, " MPI ranks (dp = ranks / tp must be a whole number)");
  s.timeout_s = o.collective_timeout_s >= 0 ? o.collective_timeout_s : timeout_from_env();
  s.verify = o.verify_collectives;
  s.split_grid(o.tp_size);

  // Every rank learns whether every rank got a device, so a host without one cannot leave the
  // others waiting in the NCCL bootstrap.
  std::string device_problem;
  try {
    s.device = pick_device(o.device.kind, s.local_rank, s.local_size, s.world_rank);
  } catch (const Error& e) {
    device_problem = e.what();
  }
  int failed = device_problem.empty() ? 0 : 1;
  LATTE_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, s.world.comm));
  LATTE_REQUIRE(device_problem.empty(), ErrorCode::unsupported, device_problem);
  LATTE_REQUIRE(!failed, ErrorCode::unsupported, "rank ", s.world_rank,
                ": another rank has no usable CUDA device (see its message)");
  if (s.session.thread_level == MPI_THREAD_MULTIPLE) {
    s.watchdog = std::make_unique<Watchdog>(s.timeout_s, s.world_rank);
  } else {
    // MPI_Abort from the watchdog thread needs MPI_THREAD_MULTIPLE; without it, exit the process
    // unfinalized with the same code, which mpirun also turns into the end of the job.
    s.watchdog = std::make_unique<Watchdog>(s.timeout_s, s.world_rank, [](const std::string& message) {
      std::fputs((message + "\n").c_str(), stderr);
      std::fflush(stderr);
      std::_Exit(Watchdog::exit_code);
    });
  }
  const CommContext ctx{.world_rank = s.world_rank, .verify = s.verify, .watchdog = s.watchdog.get()};
  const std::string tp_name = str_cat("tp[dp=", s.dp_rank, "]"), dp_name = str_cat("dp[tp=", s.tp_rank, "]");
  s.comms[{Group::world, DeviceKind::cpu}] = make_communicator(s.world.comm, "world", Device::cpu(), ctx);
  s.comms[{Group::tp, DeviceKind::cpu}] = make_communicator(s.tp.comm, tp_name, Device::cpu(), ctx);
  s.comms[{Group::dp, DeviceKind::cpu}] = make_communicator(s.dp.comm, dp_name, Device::cpu(), ctx);

  if (o.announce) {
    std::fputs((startup_line() + "\n").c_str(), stderr);
    if (s.world_rank == 0) std::fputs((plan_line() + "\n").c_str(), stderr);
    std::fflush(stderr);
  }
  if (s.device.kind == DeviceKind::cuda) {
    s.comms[{Group::world, DeviceKind::cuda}] = make_communicator(s.world.comm, "world", s.device, ctx);
    s.comms[{Group::tp, DeviceKind::cuda}] = make_communicator(s.tp.comm, tp_name, s.device, ctx);
    s.comms[{Group::dp, DeviceKind::cuda}] = make_communicator(s.dp.comm, dp_name, s.device, ctx);
  }
}

void ParallelRuntime::State::split_grid(int tp) {
  State& s = *this;
  // Hosts: the ranks sharing memory with this one; a host is named by its lowest world rank.
  LATTE_MPI_CHECK(MPI_Comm_split_type(s.world.comm, MPI_COMM_TYPE_SHARED, s.world_rank, MPI_INFO_NULL,
                                      &s.local.comm));
  LATTE_MPI_CHECK(MPI_Comm_rank(s.local.comm, &s.local_rank));
  LATTE_MPI_CHECK(MPI_Comm_size(s.local.comm, &s.local_size));
  int host_id = s.world_rank;
  LATTE_MPI_CHECK(MPI_Bcast(&host_id, 1, MPI_INT, 0, s.local.comm));
  int leader = s.local_rank == 0 ? 1 : 0;
  LATTE_MPI_CHECK(MPI_Allreduce(&leader, &s.n_hosts, 1, MPI_INT, MPI_SUM, s.world.comm));

  // TP innermost: consecutive world ranks form a TP group.
  s.tp_size = tp;
  s.dp_size = s.world_size / tp;
  s.tp_rank = s.world_rank % s.tp_size;
  s.dp_rank = s.world_rank / s.tp_size;
  LATTE_MPI_CHECK(MPI_Comm_split(s.world.comm, s.dp_rank, s.tp_rank, &s.tp.comm));
  LATTE_MPI_CHECK(MPI_Comm_split(s.world.comm, s.tp_rank, s.dp_rank, &s.dp.comm));

  // Does every TP group sit on one host? (Its all-reduces are the latency-critical ones.)
  int ids[2] = {host_id, -host_id};
  LATTE_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, ids, 2, MPI_INT, MPI_MAX, s.tp.comm));
  int within = ids[0] == -ids[1] ? 1 : 0;
  LATTE_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &within, 1, MPI_INT, MPI_MIN, s.world.comm));
  s.tp_within_host = within == 1;
}

ParallelRuntime::~ParallelRuntime() {
  // Before MPI_Finalize, a watched barrier: MPI_Finalize waits for every rank without a timeout,
  // and OpenMPI 4.1.4's mpirun was seen to hang or crash when a job is aborted while some ranks
  // wait inside MPI_Finalize. Waiting here instead, a rank stuck elsewhere is caught by a
  // watchdog, and a rank still in another collective on the world group is caught at once by the
  // call check ("this rank is in barrier, another rank is in all_reduce").
  if (!s_->session.owns || std::uncaught_exceptions() > 0) return;
  try {
    comm(Group::world, DeviceKind::cpu).barrier();
  } catch (const Error& e) {
    std::fputs(str_cat("latte: ", e.what(), " (at the end of the job, before MPI_Finalize)\n").c_str(), stderr);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
}

int ParallelRuntime::world_rank() const { return s_->world_rank; }
int ParallelRuntime::world_size() const { return s_->world_size; }
int ParallelRuntime::local_rank() const { return s_->local_rank; }
int ParallelRuntime::local_size() const { return s_->local_size; }
int ParallelRuntime::n_hosts() const { return s_->n_hosts; }
int ParallelRuntime::tp_rank() const { return s_->tp_rank; }
int ParallelRuntime::tp_size() const { return s_->tp_size; }
int ParallelRuntime::dp_rank() const { return s_->dp_rank; }
int ParallelRuntime::dp_size() const { return s_->dp_size; }
const std::string& ParallelRuntime::host() const { return s_->host; }
Device ParallelRuntime::device() const { return s_->device; }
double ParallelRuntime::collective_timeout_s() const { return s_->timeout_s; }

Communicator& ParallelRuntime::comm(Group g, DeviceKind where) {
  auto it = s_->comms.find({g, where});
  LATTE_REQUIRE(it != s_->comms.end(), ErrorCode::unsupported, "rank ", s_->world_rank, ": no ",
                group_name(g), " communicator for ", where == DeviceKind::cpu ? "host" : "cuda",
                " tensors: this runtime was started with device ", device_name(s_->device));
  return *it->second;
}

std::string ParallelRuntime::startup_line() const {
  const State& s = *s_;
  return str_cat("latte: rank ", s.world_rank, "/", s.world_size, " tp ", s.tp_rank, "/", s.tp_size, " dp ",
                 s.dp_rank, "/", s.dp_size, " host ", s.host, " device ", device_name(s.device));
}

std::string ParallelRuntime::plan_line() const {
  const State& s = *s_;
  std::string watchdog = s.timeout_s > 0 ? str_cat("watchdog ", s.timeout_s, " s") : std::string("no watchdog");
  return str_cat("latte: plan: ", s.world_size, s.world_size == 1 ? " rank" : " ranks", " on ", s.n_hosts,
                 s.n_hosts == 1 ? " host" : " hosts", " = dp ", s.dp_size, " x tp ", s.tp_size,
                 ", tp innermost (", s.tp_within_host ? "tp groups within a host" : "tp groups span hosts",
                 "); collectives: ", communicator_backends(), ", ", s.verify ? "checked" : "unchecked",
                 " across ranks; ", watchdog, "; MPI threads ", thread_level_name(s.session.thread_level));
}

}  // namespace latte
