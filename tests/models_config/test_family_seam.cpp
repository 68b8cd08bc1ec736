// The model-family seam (models/family.h, models/weight_names.h) on the tiny checkpoints as
// users have them: each layout's ModelConfig names its family, tokenizer kind and default
// template; the default template is applied by template_name_for only; the tensor-name table
// lists exactly the tensors validation requires, and loading asks for no name outside it.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "config_test_util.h"
#include "models/chat_template.h"
#include "models/config.h"
#include "models/family.h"
#include "models/llava.h"
#include "models/quantized_cache.h"
#include "models/weight_names.h"
#include "models/weight_source.h"

namespace {

using namespace recap;
using namespace recap::testutil;
using models::ModelFamily;
using models::TokenizerKind;

struct LayoutCase {
  const char* dir;
  models::Layout layout;
  ModelFamily family;
  TokenizerKind tokenizer;
  const char* default_template;
};

const LayoutCase kCases[] = {
    {"llava_orig_fp32", models::Layout::LlavaOrig, ModelFamily::LlavaLlama3, TokenizerKind::Llama3Bpe,
     "llava-llama3"},
    {"llava_orig_with_vt_fp32", models::Layout::LlavaOrig, ModelFamily::LlavaLlama3, TokenizerKind::Llama3Bpe,
     "llava-llama3"},
    {"llava_hf_fp32", models::Layout::LlavaHf, ModelFamily::LlavaLlama3, TokenizerKind::Llama3Bpe,
     "llava-llama3"},
    {"clip_vision_fp32", models::Layout::ClipVision, ModelFamily::ClipVision, TokenizerKind::None, ""},
    {"clip_full_fp32", models::Layout::ClipFull, ModelFamily::ClipVision, TokenizerKind::None, ""},
};

// Every name a loader asks for, passed on to the checkpoint.
class RecordingSource : public models::WeightSource {
 public:
  explicit RecordingSource(const io::WeightStore& store) : inner_(store) {}
  kernels::PackedWeight matrix(const std::vector<std::string>& names, const std::vector<int64_t>& rows,
                               int64_t k, kernels::WeightFormat format,
                               bool flatten_trailing = false) override {
    requested.insert(names.begin(), names.end());
    return inner_.matrix(names, rows, k, format, flatten_trailing);
  }
  std::vector<float> vector(const std::string& name, const std::vector<int64_t>& shape) override {
    requested.insert(name);
    return inner_.vector(name, shape);
  }
  using models::WeightSource::matrix;
  std::set<std::string> requested;

 private:
  models::StoreWeightSource inner_;
};

std::set<std::string> names_in(const models::Checkpoint& ck) {
  std::set<std::string> out;
  for (const auto* store : {ck.text_store.get(), ck.vision_store.get()})
    if (store)
      for (const std::string& n : store->names()) out.insert(n);
  return out;
}

TEST(FamilySeam, EachTinyLayoutNamesItsFamilyTokenizerAndDefaultTemplate) {
  for (const LayoutCase& c : kCases) {
    SCOPED_TRACE(c.dir);
    const models::ModelConfig cfg = models::load_model_config(tiny(c.dir));
    EXPECT_EQ(cfg.layout, c.layout);
    EXPECT_EQ(cfg.family, c.family);
    EXPECT_EQ(cfg.tokenizer_kind, c.tokenizer);
    EXPECT_EQ(cfg.default_template, c.default_template);
    EXPECT_EQ(models::family_spec(cfg.family).default_template, cfg.default_template);
  }
  EXPECT_STREQ(models::family_spec(ModelFamily::LlavaLlama3).name, "llava-llama3");
  EXPECT_STREQ(models::tokenizer_kind_name(TokenizerKind::Llama3Bpe), "llama3-bpe");
  EXPECT_STREQ(models::tokenizer_kind_name(TokenizerKind::None), "none");
}

TEST(FamilySeam, TemplateNameForAppliesTheFamilyDefaultOnlyWhenNoneIsRequested) {
  const models::ModelConfig llava = models::load_model_config(tiny("llava_hf_fp32"));
  EXPECT_EQ(models::template_name_for(llava, ""), "llava-llama3");
  EXPECT_EQ(models::template_name_for(llava, "llama3-plain"), "llama3-plain");
  EXPECT_EQ(models::template_name_for(llava, "/x/my.json"), "/x/my.json");
  EXPECT_EQ(models::resolve_template_for(llava, "").name, "llava-llama3");
  EXPECT_EQ(models::resolve_template_for(llava, "llava-next-llama3").name, "llava-next-llama3");

  // A family's default, not a compiled-in name: another default is what the run gets.
  models::ModelConfig other = llava;
  other.default_template = "llama3-plain";
  EXPECT_EQ(models::resolve_template_for(other, "").name, "llama3-plain");

  const models::ModelConfig clip = models::load_model_config(tiny("clip_vision_fp32"));
  try {
    models::template_name_for(clip, "");
    FAIL() << "a CLIP checkpoint has no default template";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(
        std::string(e.what()),
        tiny("clip_vision_fp32") + ": a clip-vision checkpoint has no language model, so no chat template");
  }
  EXPECT_EQ(models::template_name_for(clip, "llama3-plain"), "llama3-plain");
}

TEST(FamilySeam, FamilyNamesParseAndUnknownOnesAreRefusedByName) {
  EXPECT_EQ(models::parse_model_family("llava-llama3"), ModelFamily::LlavaLlama3);
  EXPECT_EQ(models::parse_model_family("clip-vision"), ModelFamily::ClipVision);
  try {
    models::parse_model_family("llava-vicuna");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "unknown model family \"llava-vicuna\" (known: llava-llama3, clip-vision)");
  }
}

TEST(FamilySeam, QuantizedCacheConfigKeepsTheFamilyAndOlderCachesGetTheirLayoutsFamily) {
  const models::ModelConfig cfg = models::load_model_config(tiny("llava_orig_fp32"));
  const std::string text = models::model_config_to_json(cfg);
  const models::ModelConfig back = models::model_config_from_json(text, "cache");
  EXPECT_EQ(back.family, ModelFamily::LlavaLlama3);
  EXPECT_EQ(back.tokenizer_kind, TokenizerKind::Llama3Bpe);
  EXPECT_EQ(back.default_template, "llava-llama3");

  json j = json::parse(text);
  EXPECT_EQ(j["family"], "llava-llama3");
  j.erase("family");  // a cache written before the family was stored
  EXPECT_EQ(models::model_config_from_json(j.dump(), "cache").family, ModelFamily::LlavaLlama3);
  j["layout"] = static_cast<int>(models::Layout::ClipVision);
  EXPECT_EQ(models::model_config_from_json(j.dump(), "cache").family, ModelFamily::ClipVision);
  j["family"] = "llava-vicuna";
  try {
    models::model_config_from_json(j.dump(), "/c/cache.safetensors");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("unknown model family \"llava-vicuna\""), std::string::npos)
        << e.what();
  }
}

TEST(TensorNameTable, ValidationRequiresExactlyTheTinyCheckpointsModelTensors) {
  for (const LayoutCase& c : kCases) {
    SCOPED_TRACE(c.dir);
    const models::Checkpoint ck = models::open_checkpoint(tiny(c.dir));
    EXPECT_TRUE(models::checkpoint_problems(ck).empty());
    std::set<std::string> expected;
    for (const models::ExpectedTensor& e : models::expected_tensors(ck.config)) expected.insert(e.name);
    std::set<std::string> not_expected;
    for (const std::string& n : names_in(ck))
      if (!expected.count(n)) not_expected.insert(n);
    // Outside the table: the tower's post_layernorm (LLaVA reads hidden_states[-2], before it)
    // and, in a CLIPModel, its text half and projections (the engine never reads them).
    if (c.layout == models::Layout::ClipFull) {
      std::erase_if(not_expected, [](const std::string& n) {
        return n.rfind("text_model.", 0) == 0 || n == "logit_scale" || n == "text_projection.weight" ||
               n == "visual_projection.weight";
      });
    }
    const std::string tower = ck.config.names.vision_prefix;
    EXPECT_EQ(not_expected,
              (std::set<std::string>{tower + "post_layernorm.bias", tower + "post_layernorm.weight"}));
  }
}

TEST(TensorNameTable, LoadingAsksForExactlyTheUsedTensorsOfTheTable) {
  for (const LayoutCase& c : kCases) {
    SCOPED_TRACE(c.dir);
    const models::Checkpoint ck = models::open_checkpoint(tiny(c.dir));
    std::unique_ptr<RecordingSource> vision, text;
    if (ck.vision_store) vision = std::make_unique<RecordingSource>(*ck.vision_store);
    if (ck.text_store) text = std::make_unique<RecordingSource>(*ck.text_store);
    auto model = models::LlavaModel::load_from(ck.config, vision.get(), text.get(), models::ModelOptions{});
    std::set<std::string> requested;
    for (const auto* s : {vision.get(), text.get()})
      if (s) requested.insert(s->requested.begin(), s->requested.end());
    std::set<std::string> used, unused;
    for (const models::ExpectedTensor& e : models::expected_tensors(ck.config))
      (e.used ? used : unused).insert(e.name);
    EXPECT_EQ(requested, used);
    // The tower's last layer is validated but never run (select_layer -2).
    EXPECT_FALSE(unused.empty());
    for (const std::string& n : unused)
      EXPECT_NE(n.find("encoder.layers." + std::to_string(ck.config.vision.layers - 1) + "."),
                std::string::npos)
          << n;
  }
}

TEST(TensorNameTable, EachLayoutsPrefixesComeFromTheTable) {
  const models::ModelConfig orig = models::load_model_config(tiny("llava_orig_with_vt_fp32"));
  EXPECT_EQ(orig.names.vision_prefix, "model.vision_tower.vision_tower.vision_model.");
  EXPECT_EQ(orig.names.text_prefix, "model.");
  EXPECT_EQ(orig.names.proj1_prefix, "model.mm_projector.0.");
  EXPECT_EQ(orig.names.proj2_prefix, "model.mm_projector.2.");
  const models::ModelConfig clip = models::load_model_config(tiny("clip_vision_fp32"));
  EXPECT_EQ(clip.names.vision_prefix, "vision_model.");

  // llava-hf: the newest naming whose probe tensor exists, else the oldest.
  const auto none = [](const std::string&) { return false; };
  const models::WeightNames old_hf = models::resolve_text_names(models::Layout::LlavaHf, none);
  EXPECT_EQ(old_hf.text_prefix, "language_model.model.");
  EXPECT_EQ(old_hf.lm_head, "language_model.lm_head.weight");
  EXPECT_EQ(old_hf.proj1_prefix, "multi_modal_projector.linear_1.");
  EXPECT_EQ(old_hf.proj2_prefix, "multi_modal_projector.linear_2.");
  const std::set<std::string> new_names = {"model.language_model.embed_tokens.weight", "lm_head.weight",
                                           "model.multi_modal_projector.linear_1.weight"};
  const models::WeightNames new_hf = models::resolve_text_names(
      models::Layout::LlavaHf, [&](const std::string& n) { return new_names.count(n) > 0; });
  EXPECT_EQ(new_hf.text_prefix, "model.language_model.");
  EXPECT_EQ(new_hf.lm_head, "lm_head.weight");
  EXPECT_EQ(new_hf.proj1_prefix, "model.multi_modal_projector.linear_1.");
  EXPECT_EQ(new_hf.proj2_prefix, "model.multi_modal_projector.linear_2.");
  EXPECT_EQ(models::tensor_name(new_hf, models::TextLayerTensor::Gate, 3),
            "model.language_model.layers.3.mlp.gate_proj.weight");
  EXPECT_EQ(models::tensor_name(orig.names, models::VisionLayerTensor::OutBias, 0),
            "model.vision_tower.vision_tower.vision_model.encoder.layers.0.self_attn.out_proj.bias");
}

}  // namespace
