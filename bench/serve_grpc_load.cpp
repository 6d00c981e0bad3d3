// Load generator for bench/serve_grpc: N concurrent clients, each with its own channel, issue
// streaming latte.v1.Inference/Generate calls back to back for a fixed time and record what a
// user sees: time to first token, the gap between token-carrying messages, output tokens and
// every failed call with its status code.
//
//   serve_grpc_load --target ADDR [--target ADDR ...] [--clients 64] [--seconds 60]
//                   [--max-new-tokens 64] [--temperature 0.8] [--label NAME]
//
// Clients are spread round-robin over the targets (one target: the coordinator; several: the
// shard groups directly, the baseline). No new call starts after --seconds; calls in flight run
// to their end, and the throughput counts them over the whole run. Prints a summary and one JSON
// line (prefix "json: "). Exit code 0 when every call succeeded, 1 otherwise, 2 on bad usage.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "latte/v1/inference.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::vector<std::string> targets;
  int clients = 64;
  double seconds = 60;
  int max_new_tokens = 64;
  float temperature = 0.8f;
  std::string label = "run";
};

// Story openings of different lengths, so that prompts differ in length and prefix.
const char* const kPrompts[] = {
    "Once upon a time",
    "One day, a little girl named Lily found a needle in her room.",
    "Tom and his dog went to the park.",
    "The sun was shining and the birds were singing. A boy called Ben",
    "There was a big red ball in the garden.",
    "Sara wanted to bake a cake for her mom, so she",
    "A small cat lived in a house near the sea. Every morning",
    "Max had a new toy car. He loved it very much, but one day",
};
constexpr int kPromptCount = sizeof(kPrompts) / sizeof(kPrompts[0]);

struct ClientRecord {
  std::vector<double> ttft_s;  // one per call that produced a token
  std::vector<double> itl_s;   // gaps between token-carrying messages after the first
  std::vector<double> tpot_s;  // per call: (last token - first token) / tokens after the first
  long long output_tokens = 0;
  long long calls_ok = 0;
  std::map<std::string, long long> errors;  // "CODE: message" -> count
};

void run_client(int index, const Options& o, Clock::time_point stop_at, ClientRecord& rec) {
  grpc::ChannelArguments args;
  args.SetInt("latte.bench.client", index);  // a distinct argument set gives each client its own connection
  auto channel = grpc::CreateCustomChannel(o.targets[index % o.targets.size()], grpc::InsecureChannelCredentials(), args);
  auto stub = latte::v1::Inference::NewStub(channel);
  for (long long call = 0; Clock::now() < stop_at; ++call) {
    latte::v1::GenerateRequest req;
    req.set_text(kPrompts[(index + call) % kPromptCount]);
    req.set_max_new_tokens(o.max_new_tokens);
    req.mutable_sampling()->set_temperature(o.temperature);
    req.set_seed(static_cast<uint64_t>(index) * 1000003ULL + static_cast<uint64_t>(call) + 1);
    req.set_ignore_eos(true);  // every call asks for the same work, as vLLM's serving benchmark does
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
    const auto start = Clock::now();
    auto reader = stub->Generate(&ctx, req);
    latte::v1::GenerateResponse r;
    Clock::time_point first_at{}, last{};
    bool first = true;
    long long tokens = 0;
    while (reader->Read(&r)) {
      if (r.token_ids_size() == 0) continue;
      const auto now = Clock::now();
      if (first) {
        rec.ttft_s.push_back(std::chrono::duration<double>(now - start).count());
        first_at = now;
        first = false;
      } else {
        rec.itl_s.push_back(std::chrono::duration<double>(now - last).count());
      }
      last = now;
      rec.output_tokens += r.token_ids_size();
      tokens += r.token_ids_size();
    }
    if (tokens > 1) rec.tpot_s.push_back(std::chrono::duration<double>(last - first_at).count() / double(tokens - 1));
    const grpc::Status s = reader->Finish();
    if (s.ok()) {
      ++rec.calls_ok;
    } else {
      ++rec.errors[std::to_string(static_cast<int>(s.error_code())) + ": " + s.error_message()];
    }
  }
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const double pos = p * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "serve_grpc_load: %s\nusage: serve_grpc_load --target ADDR [--target ADDR ...] [--clients N] "
               "[--seconds S] [--max-new-tokens N] [--temperature T] [--label NAME]\n",
               why.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage("missing value after " + a);
    const std::string v = argv[++i];
    char* end = nullptr;
    if (a == "--target") {
      o.targets.push_back(v);
    } else if (a == "--clients") {
      o.clients = static_cast<int>(std::strtol(v.c_str(), &end, 10));
      if (*end || o.clients < 1) usage("--clients must be a positive integer, got '" + v + "'");
    } else if (a == "--seconds") {
      o.seconds = std::strtod(v.c_str(), &end);
      if (*end || !(o.seconds > 0)) usage("--seconds must be positive, got '" + v + "'");
    } else if (a == "--max-new-tokens") {
      o.max_new_tokens = static_cast<int>(std::strtol(v.c_str(), &end, 10));
      if (*end || o.max_new_tokens < 1) usage("--max-new-tokens must be a positive integer, got '" + v + "'");
    } else if (a == "--temperature") {
      o.temperature = std::strtof(v.c_str(), &end);
      if (*end || o.temperature < 0) usage("--temperature must be >= 0, got '" + v + "'");
    } else if (a == "--label") {
      o.label = v;
    } else {
      usage("unknown argument '" + a + "'");
    }
  }
  if (o.targets.empty()) usage("--target is required");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  std::vector<ClientRecord> records(static_cast<size_t>(o.clients));
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  const auto stop_at = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  std::atomic<bool> done{false};
  // Progress every 10 s on stderr: long runs should not look hung.
  std::thread progress([&] {
    auto next = start + std::chrono::seconds(10);
    while (!done.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (Clock::now() >= next && !done.load()) {
        const double t = std::chrono::duration<double>(Clock::now() - start).count();
        std::fprintf(stderr, "serve_grpc_load %s: %.0f / %.0f s\n", o.label.c_str(), t, o.seconds);
        next += std::chrono::seconds(10);
      }
    }
  });
  for (int i = 0; i < o.clients; ++i) threads.emplace_back(run_client, i, std::cref(o), stop_at, std::ref(records[i]));
  for (auto& t : threads) t.join();
  done = true;
  progress.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

  ClientRecord all;
  for (const auto& r : records) {
    all.ttft_s.insert(all.ttft_s.end(), r.ttft_s.begin(), r.ttft_s.end());
    all.itl_s.insert(all.itl_s.end(), r.itl_s.begin(), r.itl_s.end());
    all.tpot_s.insert(all.tpot_s.end(), r.tpot_s.begin(), r.tpot_s.end());
    all.output_tokens += r.output_tokens;
    all.calls_ok += r.calls_ok;
    for (const auto& [what, n] : r.errors) all.errors[what] += n;
  }
  long long errors = 0;
  for (const auto& [what, n] : all.errors) errors += n;
  const double tok_s = static_cast<double>(all.output_tokens) / elapsed;
  const double ms = 1e3;
  std::printf("%s: %d clients, %zu target(s), %.1f s: %lld calls ok, %lld errors, %lld output tokens, %.1f tok/s, "
              "%.2f calls/s\n",
              o.label.c_str(), o.clients, o.targets.size(), elapsed, all.calls_ok, errors, all.output_tokens, tok_s,
              static_cast<double>(all.calls_ok) / elapsed);
  std::printf("%s: time to first token p50 %.1f ms p99 %.1f ms; inter-token (between streamed messages) p50 %.1f ms "
              "p99 %.1f ms; time per output token (per call) p50 %.1f ms p99 %.1f ms\n",
              o.label.c_str(), percentile(all.ttft_s, 0.5) * ms, percentile(all.ttft_s, 0.99) * ms,
              percentile(all.itl_s, 0.5) * ms, percentile(all.itl_s, 0.99) * ms, percentile(all.tpot_s, 0.5) * ms,
              percentile(all.tpot_s, 0.99) * ms);
  for (const auto& [what, n] : all.errors) std::printf("%s: error x%lld: %s\n", o.label.c_str(), n, what.c_str());
  std::printf(
      "json: {\"bench\":\"serve_grpc\",\"label\":\"%s\",\"clients\":%d,\"targets\":%zu,\"seconds\":%.3f,"
      "\"max_new_tokens\":%d,\"temperature\":%.3f,\"calls_ok\":%lld,\"errors\":%lld,\"output_tokens\":%lld,"
      "\"output_tok_s\":%.3f,\"ttft_p50_ms\":%.3f,\"ttft_p99_ms\":%.3f,\"itl_p50_ms\":%.3f,\"itl_p99_ms\":%.3f,"
      "\"tpot_p50_ms\":%.3f,\"tpot_p99_ms\":%.3f}\n",
      o.label.c_str(), o.clients, o.targets.size(), elapsed, o.max_new_tokens, o.temperature, all.calls_ok, errors,
      all.output_tokens, tok_s, percentile(all.ttft_s, 0.5) * ms, percentile(all.ttft_s, 0.99) * ms,
      percentile(all.itl_s, 0.5) * ms, percentile(all.itl_s, 0.99) * ms, percentile(all.tpot_s, 0.5) * ms,
      percentile(all.tpot_s, 0.99) * ms);
  return errors == 0 && all.calls_ok > 0 ? 0 : 1;
}
