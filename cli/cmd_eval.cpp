// latte eval: zero-shot multiple-choice accuracy, scored as lm-evaluation-harness does it
// (inference/eval/): acc and acc_norm with their standard errors per task, on PIQA and ARC in their
// published formats or any set in Latte's JSONL format. Runs every model `latte perplexity` runs,
// MLA conversions included, on one rank or under mpirun --tp N.
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/device_option.h"
#include "cli/model_job.h"
#include "core/base/file_io.h"
#include "inference/engine/loaded_model.h"
#include "inference/eval/choice_readers.h"
#include "inference/eval/choice_task_eval.h"
#include "parallel/job.h"

namespace latte::cli {

namespace {

nlohmann::json task_summary(const ChoiceTaskResult& r) {
  return {{"task", r.name},
          {"items", r.tally.items},
          {"acc", r.tally.acc()},
          {"acc_stderr", r.acc_stderr()},
          {"acc_norm", r.tally.acc_norm()},
          {"acc_norm_stderr", r.acc_norm_stderr()},
          {"tokens", r.tokens},
          {"seconds", r.seconds},
          {"items_per_second", r.seconds > 0 ? double(r.tally.items) / r.seconds : 0.0}};
}

}  // namespace

void add_eval(CLI::App& app) {
  struct Opts {
    ModelLoadRequest load;
    std::vector<std::string> piqa, arc, jsonl;
    ChoiceEvalParams params;
    std::string bos = "auto", details, device = "cpu";
    bool json = false, quiet = false;
    int threads = 0;
    int64_t tp = 1;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "Zero-shot multiple-choice accuracy (acc, acc_norm) as lm-evaluation-harness scores it");
  cmd->add_option("-m,--model", o->load.model_path, "llama2.c .bin, safetensors folder or .gguf file")->required();
  cmd->add_option("-z,--tokenizer", o->load.tokenizer_path, "tokenizer.bin or tokenizer.json (default: the model's own)");
  cmd->add_option("--piqa", o->piqa, "PIQA: folder with valid.jsonl and valid-labels.lst (or the .jsonl)");
  cmd->add_option("--arc", o->arc, "ARC: JSONL of {question, choices, gold}; the task is named after its folder");
  cmd->add_option("--jsonl", o->jsonl, "JSONL of {context, choices, gold}; the task is named after the file");
  cmd->add_option("--limit", o->params.limit, "score only the first N items of each task")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--bos", o->bos,
                  "start contexts with BOS: auto (default: as the tokenizer does for prompts; none for SmolLM2, "
                  "as the harness), yes or no")
      ->check(CLI::IsMember({"auto", "yes", "no"}));
  cmd->add_option("--details", o->details, "write every item's log-likelihoods and picks to this JSONL file");
  cmd->add_flag("--json", o->json, "print the summary as one JSON document");
  cmd->add_flag("-q,--quiet", o->quiet, "no progress on stderr");
  add_device_option(*cmd, o->device);
  cmd->add_option("--tp", o->tp, "tensor-parallel ranks (run under mpirun -np N)")->check(CLI::PositiveNumber);
  add_threads_option(*cmd, o->threads);
  cmd->callback([o] {
    apply_threads(o->threads);
    o->params.bos = o->bos == "yes" ? BosRule::always : o->bos == "no" ? BosRule::never : BosRule::tokenizer;
    // Read every set before loading the model: a bad line fails in a second, not after a load.
    std::vector<ChoiceTask> tasks;
    for (const std::string& p : o->piqa) tasks.push_back(read_piqa(p));
    for (const std::string& p : o->arc) tasks.push_back(read_arc(p));
    for (const std::string& p : o->jsonl) tasks.push_back(read_choice_jsonl(p));
    LATTE_REQUIRE(!tasks.empty(), ErrorCode::invalid_argument, "nothing to evaluate: pass --piqa, --arc or --jsonl");

    ModelJob run = load_model_job("eval", o->tp, o->device, o->load);
    const bool lead = run.lead;
    if (!lead) o->quiet = true;
    LoadedModel& m = run.model;

    std::ofstream details;
    if (lead && !o->details.empty()) {
      details.open(o->details, std::ios::binary | std::ios::trunc);
      LATTE_REQUIRE(details.good(), ErrorCode::io, "cannot write ", o->details);
    }
    // On a terminal the progress line redraws in place; in a log it is one line every 10 s.
    const bool tty = isatty(STDERR_FILENO);
    const ModelConfig& config = m.checkpoint.config;
    nlohmann::json summary = {{"model", o->load.model_path},
                              {"architecture", config.architecture},
                              {"kv_cache_elements_per_token", config.kv_cache_elements_per_token()},
                              {"tasks", nlohmann::json::array()}};
    for (const ChoiceTask& task : tasks) {
      double last_logged = -1e9;
      auto progress = [&](const ChoiceEvalProgress& p) {
        if (o->quiet || (!tty && p.seconds - last_logged < 10 && p.items_done < p.items_total)) return;
        last_logged = p.seconds;
        const double rate = p.seconds > 0 ? double(p.items_done) / p.seconds : 0;
        const double eta = rate > 0 ? double(p.items_total - p.items_done) / rate : 0;
        std::fprintf(stderr, "%seval %s: %lld/%lld items  %.2f items/s  ETA %.0fs  acc %.4f  acc_norm %.4f%s",
                     tty ? "\r" : "", task.name.c_str(), (long long)p.items_done, (long long)p.items_total, rate, eta,
                     p.acc, p.acc_norm, tty ? "   " : "\n");
      };
      auto log_item = [&](const ChoiceItemScore& s) {
        if (!details.is_open()) return;
        details << nlohmann::json{{"task", task.name},
                                  {"item", s.index},
                                  {"gold", task.items[size_t(s.index)].gold},
                                  {"log_likelihood", s.log_likelihood},
                                  {"pick", s.outcome.pick},
                                  {"pick_norm", s.outcome.pick_norm}}
                       .dump()
                << "\n";
        details.flush();  // a run stopped early keeps every item it scored
      };
      ChoiceTaskResult r = evaluate_choice_task(*m.model, *m.tokenizer, task, o->params, log_item, progress);
      if (!o->quiet && tty) std::fprintf(stderr, "\n");
      summary["tasks"].push_back(task_summary(r));
    }
    if (!lead) return;
    if (details.is_open()) {
      details.close();
      LATTE_REQUIRE(details.good(), ErrorCode::io, "writing ", o->details, " failed");
    }
    if (o->json) {
      std::printf("%s\n", summary.dump(2).c_str());
      return;
    }
    for (const nlohmann::json& t : summary["tasks"])
      std::printf("%-12s %5lld items  acc %.4f ± %.4f  acc_norm %.4f ± %.4f  (%.1fs)\n",
                  t["task"].get<std::string>().c_str(), (long long)t["items"].get<int64_t>(), t["acc"].get<double>(),
                  t["acc_stderr"].get<double>(), t["acc_norm"].get<double>(), t["acc_norm_stderr"].get<double>(),
                  t["seconds"].get<double>());
  });
}

}  // namespace latte::cli
