#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "cli/device_option.h"
#include "inference/engine/chat_template.h"
#include "inference/engine/generate.h"
#include "inference/engine/loaded_model.h"

namespace latte::cli {

void add_generate(CLI::App& app) {
  struct Opts {
    ModelLoadRequest load;
    GenerateParams gen;
    std::string device = "cpu";
    bool chat = false, no_stop = false;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt (llama2.c run.c semantics)");
  cmd->add_option("-m,--model", o->load.model_path, "llama2.c .bin, safetensors folder or .gguf file")->required();
  cmd->add_option("-z,--tokenizer", o->load.tokenizer_path, "tokenizer.bin or tokenizer.json (default: the model's own)");
  cmd->add_option("-i,--prompt", o->gen.prompt, "prompt text (default: empty, start from BOS)");
  cmd->add_option("-n,--steps", o->gen.steps, "positions to run, prompt included (0: the full context)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  cmd->add_option("-t,--temperature", o->gen.sampling.temperature, "0: greedy, deterministic")->check(CLI::Range(0.0, 100.0));
  cmd->add_option("-p,--top-p", o->gen.sampling.top_p, "nucleus sampling mass (1: off)")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("-k,--top-k", o->gen.sampling.top_k, "keep the k most likely tokens (0: off)")->check(CLI::Range(0, 1 << 30));
  cmd->add_option("-s,--seed", o->gen.sampling.seed, "random seed (default 0)");
  cmd->add_flag("--chat", o->chat, "wrap the prompt in the ChatML template (SmolLM2-Instruct and similar)");
  cmd->add_flag("--no-stop-at-eos", o->no_stop, "keep going past EOS (llama2.c run.c stops only at BOS)");
  add_device_option(*cmd, o->device);
  add_threads_option(*cmd, o->threads);
  cmd->callback([o] {
    apply_threads(o->threads);
    ModelLoadRequest load = o->load;
    load.backend = &resolve_device(o->device);
    LoadedModel m = load_model(load);
    GenerateParams gp = o->gen;
    if (o->chat) gp.prompt = chatml_user_turn(gp.prompt);
    // llama2.c checkpoints follow run.c, which stops only at BOS; chat models end a turn with EOS.
    gp.stop_at_eos = !o->no_stop && m.checkpoint.format != "llama2c";
    GenerateResult r = generate(*m.model, *m.tokenizer, gp, [](const std::string& piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    });
    std::printf("\n");
    std::fflush(stdout);  // the rate goes to stderr after the text, not into its last line
    if (r.decoded_tokens > 1 && r.decode_seconds > 0)
      std::fprintf(stderr, "achieved tok/s: %f\n", double(r.decoded_tokens - 1) / r.decode_seconds);
  });
}

}  // namespace latte::cli
