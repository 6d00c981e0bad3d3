// Vocabulary-parallel embedding (Megatron's VocabParallelEmbedding): the table [V, D] is split by
// rows, rank r holding [vocab_begin, vocab_begin + V/size). Each rank looks up the tokens it owns
// and writes zero rows for the others; one all-reduce assembles every row from its owner.
// Backward scatters only the owned tokens' gradients into the rank's slice (no communication).
#pragma once
#include <cstdint>
#include <span>

#include "parallel/tensor_parallel/tp_group.h"

namespace latte::tensor_parallel {

// out[T, D] = embedding rows of tokens; ids outside [0, vocab_size) throw invalid_argument naming
// the id and its position (checked on every rank before any collective, so all ranks agree).
void vocab_parallel_embedding_forward(const TpGroup& g, Tensor& out, std::span<const int32_t> tokens,
                                      const Tensor& table_local, int64_t vocab_begin, int64_t vocab_size);
// dtable_local += the rows of dout whose tokens this rank owns.
void vocab_parallel_embedding_backward(const TpGroup& g, Tensor& dtable_local, std::span<const int32_t> tokens,
                                       const Tensor& dout, int64_t vocab_begin);

}  // namespace latte::tensor_parallel
