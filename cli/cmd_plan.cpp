// latte plan: per-GPU memory and throughput of fine-tuning a model tensor- and data-parallel
// (trainer/planner/planner.h), for every tensor-parallel size that divides the GPU count and the
// model, without touching any hardware.
#include <cstdio>
#include <memory>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "cli/commands.h"
#include "trainer/planner/planner.h"

namespace latte::cli {

void add_plan(CLI::App& app) {
  struct Opts {
    std::string config, preset, model, gpu_mem = "80GiB", max_memory, dtype = "bf16", grad_dtype = "f32";
    int64_t gpus = 0, seq = 0, micro_batch = 1, tp = 0, mla_d_kv = -1, rope_pairs = -1;
    int64_t kv_context = 0, kv_batch = 0;
    double peak_tflops = 989.0, mfu = 0.4;
    bool zero1 = false, recompute = false, json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("plan", "Per-GPU memory (weights, grads, Adam, activations) and tokens/s of "
                                             "tensor- x data-parallel fine-tuning");
  cmd->add_option("--config", o->config, "a Hugging Face config.json");
  cmd->add_option("--preset", o->preset, "llama2-7b, llama2-13b, llama2-70b or smollm-135m");
  cmd->add_option("-m,--model", o->model, "a checkpoint (llama2.c .bin, safetensors folder, .gguf): its config");
  cmd->add_option("--gpus", o->gpus, "GPUs in the job (TP x DP)")->required();
  cmd->add_option("--gpu-mem", o->gpu_mem, "memory per GPU, e.g. 80GiB, 80GB, 81920MiB (default 80GiB)");
  cmd->add_option("--max-memory", o->max_memory,
                  "refuse layouts whose per-GPU total exceeds SIZE (as latte train --max-memory): a bare number is "
                  "GiB (24, 3.5), else with a unit (512MiB, 4GiB, 80GB); exits 1 when no layout is within it");
  cmd->add_option("--seq", o->seq, "tokens per sequence (default: the model's context)");
  cmd->add_option("--micro-batch", o->micro_batch, "sequences per GPU per step (default 1)");
  cmd->add_option("--tp", o->tp, "plan only this tensor-parallel size (default: every divisor of --gpus)");
  cmd->add_flag("--zero1", o->zero1, "shard the Adam state (f32 master + 2 moments) over data-parallel ranks");
  cmd->add_flag("--recompute", o->recompute, "recompute each layer in backward (keep only layer inputs)");
  cmd->add_option("--dtype", o->dtype, "weights and activations: bf16 (default) or f32")
      ->check(CLI::IsMember({"bf16", "f32"}));
  cmd->add_option("--grad-dtype", o->grad_dtype, "gradients: f32 (default) or bf16")
      ->check(CLI::IsMember({"bf16", "f32"}));
  cmd->add_option("--mla-d-kv", o->mla_d_kv, "plan the MHA2MLA-converted model: latent rank per KV head");
  cmd->add_option("--rope-pairs", o->rope_pairs, "with --mla-d-kv: RoPE frequency pairs kept per KV head");
  cmd->add_option("--kv-context", o->kv_context, "inference KV cache: tokens per sequence (default --seq)");
  cmd->add_option("--kv-batch", o->kv_batch, "inference KV cache: sequences (default --micro-batch)");
  cmd->add_option("--gpu-tflops", o->peak_tflops, "peak dense TFLOP/s per GPU (default 989, H100 SXM bf16)");
  cmd->add_option("--mfu", o->mfu, "model FLOPs utilisation assumed for tokens/s (default 0.4)");
  cmd->add_flag("--json", o->json, "print the plan as JSON");
  cmd->callback([o] {
    const int sources = int(!o->config.empty()) + int(!o->preset.empty()) + int(!o->model.empty());
    LATTE_REQUIRE(sources == 1, ErrorCode::invalid_argument, "give exactly one of --config, --preset and --model (got ",
                  sources, ")");
    ModelConfig c;
    std::string name;
    if (!o->preset.empty()) {
      c = planner::preset(o->preset);
      name = o->preset;
    } else if (!o->config.empty()) {
      c = config_from_json_text(read_text_file(o->config), o->config);
      name = o->config;
    } else {
      c = load_checkpoint_config(o->model);  // only the config: no tensor is read
      name = o->model;
    }
    c.validate(name);
    LATTE_REQUIRE((o->mla_d_kv >= 0) == (o->rope_pairs >= 0), ErrorCode::invalid_argument,
                  "--mla-d-kv and --rope-pairs go together (give both or neither)");
    if (o->mla_d_kv >= 0) {
      c = planner::mla_variant(c, o->mla_d_kv, o->rope_pairs);
      name += str_cat(" -> MLA d_kv ", o->mla_d_kv, " r ", o->rope_pairs);
    }
    LATTE_REQUIRE(o->gpus >= 1, ErrorCode::invalid_argument, "--gpus ", o->gpus, " must be at least 1");
    LATTE_REQUIRE(o->tp >= 0, ErrorCode::invalid_argument, "--tp ", o->tp, " must be at least 1");
    LATTE_REQUIRE(o->tp == 0 || o->gpus % o->tp == 0, ErrorCode::invalid_argument, "--gpus ", o->gpus,
                  " is not divisible by --tp ", o->tp);

    planner::PlanReport report;
    report.model_name = name;
    report.gpus = o->gpus;
    report.gpu_mem = planner::parse_size(o->gpu_mem);
    if (!o->max_memory.empty()) report.max_memory = planner::parse_max_memory(o->max_memory);
    planner::PlanRequest req;
    req.config = c;
    LATTE_REQUIRE(o->seq >= 0, ErrorCode::invalid_argument, "--seq ", o->seq, " must be at least 1");
    req.seq = o->seq > 0 ? o->seq : c.max_seq_len;
    req.micro_batch = o->micro_batch;
    req.weight_dtype = req.compute_dtype = dtype_from_name(o->dtype);
    req.grad_dtype = dtype_from_name(o->grad_dtype);
    req.zero1 = o->zero1;
    req.recompute = o->recompute;
    req.kv_context = o->kv_context;
    req.kv_batch = o->kv_batch;
    req.peak_tflops = o->peak_tflops;
    req.mfu = o->mfu;
    std::vector<planner::TpOption> options;
    if (o->tp > 0) {
      options.push_back({o->tp, ""});  // make_plan names what does not divide
    } else {
      options = planner::tp_options(c, o->gpus);
    }
    for (const planner::TpOption& opt : options) {
      if (!opt.skipped.empty()) {
        report.skipped.push_back(opt);
        continue;
      }
      req.tp = opt.tp;
      req.dp = o->gpus / opt.tp;
      report.plans.push_back(planner::make_plan(req));
    }
    std::string text = o->json ? planner::format_json(report) : planner::format_table(report);
    std::fwrite(text.data(), 1, text.size(), stdout);
    // --max-memory with no layout within it: the smallest one's refusal, as latte train words it.
    if (report.max_memory > 0 && !report.plans.empty()) {
      const planner::Plan* best = &report.plans.front();
      for (const planner::Plan& p : report.plans)
        if (p.total < best->total) best = &p;
      const std::string problem = planner::memory_limit_problem(*best, report.max_memory);
      if (!problem.empty()) {
        std::fflush(stdout);
        fail(ErrorCode::invalid_argument, problem);
      }
    }
  });
}

}  // namespace latte::cli
