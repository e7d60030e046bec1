// Test helper: a model repository with one randomly initialised native model whose word
// vocabulary covers a caption corpus (links eqsim_nn for WriteInitialNativeWeights).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"  // before native_init.h, which uses StatusOr
#include "model/core/status_macros.h"
#include "model/nn/native_init.h"
#include "model/repo/repository.h"
#include "model/text/word_tokenizer.h"

namespace eqsim::testing {

inline absl::Status MakeNativeRepo(const std::string& repo, const std::string& name,
                                   const std::vector<std::string>& corpus, uint64_t seed = 1) {
  const std::string text = "name: \"" + name + R"pb("
                                                    backend: NATIVE
                                                    embed_dim: 32
                                                    image { recipe: NATIVE size: 32 }
                                                    tokenizer { kind: WORD vocab_file: "vocab.txt" }
                                                    native {
                                                      image_width: 8
                                                      image_stages: 2
                                                      text_width: 32
                                                      text_layers: 1
                                                      text_heads: 2
                                                      embed_dim: 32
                                                    }
                                                    device: CPU
  )pb";
  EQSIM_ASSIGN_OR_RETURN(config::ModelConfig cfg, ParseModelConfig(text, "test config"));
  EQSIM_RETURN_IF_ERROR(WriteModelConfig(cfg, repo + "/" + name + "/config.pbtxt"));
  auto tok = WordTokenizer::FromVocabulary(WordTokenizer::BuildVocabulary(corpus));
  EQSIM_RETURN_IF_ERROR(tok->Save(repo + "/" + name + "/vocab.txt"));
  return WriteInitialNativeWeights(cfg, tok->vocab_size(), seed, repo + "/" + name + "/1");
}

}  // namespace eqsim::testing
