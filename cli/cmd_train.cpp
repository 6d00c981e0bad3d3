#include <cmath>
#include <cstdio>

#include "cli/commands.h"
#include "cli/device_option.h"
#include "parallel/job.h"
#include "trainer/loop/trainer.h"
#include "trainer/planner/planner.h"

namespace latte::cli {

void add_train(CLI::App& app) {
  struct Opts {
    TrainOptions t;
    int64_t tp = 1;
    std::string train = "all", device = "cpu", max_memory;
    bool quiet = false;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("train", "Fine-tune a model (e.g. after latte convert); run under mpirun for TP x DP");
  cmd->add_option("-m,--model", o->t.model_path, "model to train (llama2.c .bin, safetensors folder or .gguf)")->required();
  cmd->add_option("--data", o->t.data_path, "token shard from latte tokenize")->required();
  cmd->add_option("-o,--out", o->t.out_dir, "output folder: checkpoints/, metrics.jsonl, final/")->required();
  cmd->add_option("--tp", o->tp, "tensor-parallel ranks per group (DP = ranks / tp)")->check(CLI::PositiveNumber);
  cmd->add_option("--steps", o->t.steps, "optimizer steps")->check(CLI::PositiveNumber);
  cmd->add_option("--micro-batch", o->t.micro_batch, "sequences per micro-batch per data-parallel rank")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--grad-accum", o->t.grad_accum, "micro-batches per step")->check(CLI::PositiveNumber);
  cmd->add_option("--seq", o->t.seq, "tokens per sequence")->check(CLI::PositiveNumber);
  cmd->add_option("--lr", o->t.lr, "peak learning rate")->check(CLI::PositiveNumber);
  cmd->add_option("--min-lr", o->t.min_lr, "learning rate at the end of the cosine")->check(CLI::NonNegativeNumber);
  cmd->add_option("--warmup", o->t.warmup, "warm-up steps")->check(CLI::NonNegativeNumber);
  cmd->add_option("--weight-decay", o->t.optim.weight_decay, "AdamW decoupled weight decay")->check(CLI::NonNegativeNumber);
  cmd->add_option("--beta2", o->t.optim.beta2, "AdamW beta2")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--clip", o->t.optim.max_grad_norm, "global gradient-norm clip (0: off)")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--zero1", o->t.optim.zero1, "shard the optimizer state over data-parallel ranks (ZeRO-1)");
  cmd->add_flag("--recompute", o->t.recompute, "recompute each layer's activations in backward (less memory)");
  cmd->add_option("--max-memory", o->max_memory,
                  "refuse to start, before loading the model, when the planned memory per rank exceeds SIZE "
                  "(latte plan's total for this layout in f32: weights, grads, Adam, activations, workspace; a "
                  "--teacher is not counted). A bare number is GiB (24, 3.5), else give a unit: 512MiB, 4GiB, "
                  "80GB (KiB/MiB/GiB/TiB = 2^10.., KB/MB/GB/TB = 10^3..)");
  cmd->add_option("--seed", o->t.seed, "data order seed");
  cmd->add_option("--val-tokens", o->t.val_tokens, "tokens held out at the end of the shard (default min(10%, 32768))")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--eval-every", o->t.eval_every, "held-out evaluation period in steps (0: at the end)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--eval-batches", o->t.eval_batches, "held-out batches per evaluation (0: all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--save-every", o->t.save_every, "checkpoint period in steps (0: at the end)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--resume", o->t.resume, "continue from the newest complete checkpoint in --out");
  cmd->add_option("--train", o->train, "which parameters learn: all or attention")->check(CLI::IsMember({"all", "attention"}));
  cmd->add_option("--teacher", o->t.teacher_path, "distil from this model's logits (e.g. the original MHA model)");
  cmd->add_option("--distill-weight", o->t.distill_weight, "weight of KL(teacher || student) in the loss")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-z,--tokenizer", o->t.tokenizer_path, "llama2.c tokenizer to copy beside the final model");
  cmd->add_option("--stop-after", o->t.stop_after, "testing: return after N steps of this run without finishing")
      ->check(CLI::NonNegativeNumber);
  add_device_option(*cmd, o->device);
  cmd->add_flag("-q,--quiet", o->quiet, "no progress line");
  add_threads_option(*cmd, o->threads);
  cmd->callback([o] {
    apply_threads(o->threads);
    // Parsed before MPI starts: a bad size fails here on every rank alike.
    if (!o->max_memory.empty()) o->t.max_memory = planner::parse_max_memory(o->max_memory);
    resolve_device(o->device, false);  // an unusable --device fails here, before any rank starts
    std::unique_ptr<ParallelJob> job = start_parallel_job(o->tp, !o->quiet);
    TrainOptions t = o->t;
    t.backend = &resolve_device(o->device, job->world().rank() == 0);
    t.train_attention_only = o->train == "attention";
    t.progress = !o->quiet;
    TrainResult r = train(t, job->world(), job->tp(), job->dp());
    if (job->world().rank() == 0 && !o->quiet)
      std::printf("trained %lld steps: loss %.4f, held-out loss %.4f (perplexity %.4f)\n", (long long)r.steps_done,
                  r.final_loss, r.final_val_loss, std::exp(r.final_val_loss));
  });
}

}  // namespace latte::cli
