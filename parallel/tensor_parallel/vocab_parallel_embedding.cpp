#include "parallel/tensor_parallel/vocab_parallel_embedding.h"

namespace latte::tensor_parallel {

void vocab_parallel_embedding_forward(const TpGroup& g, Tensor& out, std::span<const int32_t> tokens,
                                      const Tensor& table_local, int64_t vocab_begin, int64_t vocab_size) {
  if (!g.split()) {
    g.be.embedding_forward(out, tokens, table_local);
    return;
  }
  for (size_t i = 0; i < tokens.size(); ++i)
    LATTE_REQUIRE(tokens[i] >= 0 && tokens[i] < vocab_size, ErrorCode::invalid_argument, "token id ", tokens[i],
                  " at position ", i, " is outside the vocabulary of ", vocab_size);
  g.be.embedding_slice_forward(out, tokens, table_local, vocab_begin);
  g.comm.all_reduce(out, ReduceOp::sum);
}

void vocab_parallel_embedding_backward(const TpGroup& g, Tensor& dtable_local, std::span<const int32_t> tokens,
                                       const Tensor& dout, int64_t vocab_begin) {
  if (!g.split()) {
    g.be.embedding_backward(dtable_local, tokens, dout);
    return;
  }
  g.be.embedding_slice_backward(dtable_local, tokens, dout, vocab_begin);
}

}  // namespace latte::tensor_parallel
