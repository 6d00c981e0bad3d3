#include <cstdio>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "core/base/file_io.h"
#include "cli/commands.h"
#include "inference/engine/loaded_model.h"
#include "trainer/data/token_shard.h"

namespace latte::cli {

void add_tokenize(CLI::App& app) {
  struct Opts {
    std::vector<std::string> inputs;
    std::string out, model, tokenizer, jsonl_field = "text";
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Turn text or JSONL files into a token shard for latte train");
  cmd->add_option("inputs", o->inputs, "text files (.txt: one document per file) or JSONL (.jsonl: one document per line)")
      ->required();
  cmd->add_option("-o,--out", o->out, "output shard (.bin)")->required();
  cmd->add_option("-m,--model", o->model, "model whose tokenizer to use");
  cmd->add_option("-z,--tokenizer", o->tokenizer, "tokenizer file (instead of --model)");
  cmd->add_option("--field", o->jsonl_field, "JSONL field holding the text (default: text)");
  cmd->callback([o] {
    LATTE_REQUIRE(!o->model.empty() || !o->tokenizer.empty(), ErrorCode::invalid_argument,
                  "tokenize needs --model or --tokenizer");
    std::unique_ptr<Tokenizer> tok;
    if (!o->tokenizer.empty()) {
      tok = load_tokenizer(o->tokenizer);
    } else {
      LoadedModel m = load_model({o->model, "", nullptr, true});  // only its tokenizer: the CPU
      tok = std::move(m.tokenizer);
    }
    std::vector<int32_t> ids;
    int64_t docs = 0;
    // Documents are separated by EOS (when the vocabulary has one), so the model sees the ends.
    auto add_document = [&](const std::string& text) {
      if (text.empty()) return;
      std::vector<int32_t> d = tok->encode(text, tok->adds_bos_to_prompts());
      ids.insert(ids.end(), d.begin(), d.end());
      if (tok->eos_id() >= 0) ids.push_back(tok->eos_id());
      ++docs;
    };
    for (const std::string& path : o->inputs) {
      const std::string text = read_text_file(path);
      if (path.size() >= 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0) {
        std::istringstream in(text);
        std::string line;
        int64_t lineno = 0;
        while (std::getline(in, line)) {
          ++lineno;
          if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
          nlohmann::json j;
          try {
            j = nlohmann::json::parse(line);
          } catch (const nlohmann::json::exception& e) {
            fail(ErrorCode::bad_file, path, ":", lineno, ": not valid JSON (", e.what(), ")");
          }
          auto it = j.find(o->jsonl_field);
          LATTE_REQUIRE(it != j.end() && it->is_string(), ErrorCode::bad_file, path, ":", lineno, ": no string field \"",
                        o->jsonl_field, "\"");
          add_document(it->get<std::string>());
        }
      } else {
        add_document(text);
      }
    }
    LATTE_REQUIRE(!ids.empty(), ErrorCode::invalid_argument, "the inputs hold no text to tokenize");
    write_token_shard(o->out, ids, tok->vocab_size(), tok->id());
    std::printf("wrote %s: %lld tokens from %lld documents (%s)\n", o->out.c_str(), (long long)ids.size(),
                (long long)docs, tok->id().c_str());
  });
}

}  // namespace latte::cli
