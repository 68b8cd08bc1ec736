// models/config: layout detection, dims and validation for every tiny checkpoint (checked
// against golden_meta.json's sizes), a sharded copy, a tower named by hub id, and one test per
// unsupported value / missing file / missing tensor / wrong shape / wrong dtype.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "config_test_util.h"
#include "io/safetensors.h"
#include "models/config.h"
#include "models/weight_names.h"

namespace {

using namespace recap;
using namespace recap::testutil;
using models::ConfigError;
using models::Layout;

struct Sizes {
  int64_t v_hidden, v_layers, v_heads, v_ffn, image_size, patch;
  int64_t t_hidden, t_layers, t_heads, t_kv_heads, t_ffn, vocab, max_pos;
  double rope_theta, rms_eps, ln_eps;
  int64_t bos, eos, image_token_index_hf;
};

const Sizes& golden_sizes() {
  static const Sizes s = [] {
    json m = read_json(tiny("golden_meta.json"));
    const json& z = m["sizes"];
    Sizes r{};
    r.v_hidden = z["v_hidden"];
    r.v_layers = z["v_layers"];
    r.v_heads = z["v_heads"];
    r.v_ffn = z["v_ffn"];
    r.image_size = z["image_size"];
    r.patch = z["patch"];
    r.t_hidden = z["t_hidden"];
    r.t_layers = z["t_layers"];
    r.t_heads = z["t_heads"];
    r.t_kv_heads = z["t_kv_heads"];
    r.t_ffn = z["t_ffn"];
    r.vocab = z["vocab"];
    r.max_pos = z["max_pos"];
    r.rope_theta = z["rope_theta"];
    r.rms_eps = z["rms_eps"];
    r.ln_eps = z["ln_eps"];
    r.bos = m["bos_token_id"];
    r.eos = m["eos_token_id"];
    r.image_token_index_hf = m["image_token_index_hf"];
    return r;
  }();
  return s;
}

void expect_vision_dims(const models::VisionConfig& v) {
  const Sizes& s = golden_sizes();
  EXPECT_EQ(v.hidden, s.v_hidden);
  EXPECT_EQ(v.layers, s.v_layers);
  EXPECT_EQ(v.heads, s.v_heads);
  EXPECT_EQ(v.intermediate, s.v_ffn);
  EXPECT_EQ(v.image_size, s.image_size);
  EXPECT_EQ(v.patch_size, s.patch);
  EXPECT_EQ(v.channels, 3);
  EXPECT_FLOAT_EQ(v.ln_eps, static_cast<float>(s.ln_eps));
  EXPECT_EQ(v.hidden_act, "quick_gelu");
  EXPECT_EQ(v.select_layer, -2);
  EXPECT_EQ(v.select_feature, "patch");
  EXPECT_EQ(v.num_patches(), (s.image_size / s.patch) * (s.image_size / s.patch));
  EXPECT_EQ(v.layers_to_run(), s.v_layers - 1);
  // Preprocessing of the tiny towers: CLIP mean/std, edge = crop = image_size.
  EXPECT_EQ(v.resize_shortest_edge, s.image_size);
  EXPECT_EQ(v.crop_size, s.image_size);
  EXPECT_FLOAT_EQ(v.image_mean[0], 0.48145466f);
  EXPECT_FLOAT_EQ(v.image_std[2], 0.27577711f);
  EXPECT_EQ(v.pad_background[0], 122);
  EXPECT_EQ(v.pad_background[1], 116);
  EXPECT_EQ(v.pad_background[2], 104);
}

void expect_text_dims(const models::ModelConfig& c) {
  const Sizes& s = golden_sizes();
  EXPECT_TRUE(c.has_text);
  EXPECT_EQ(c.text.hidden, s.t_hidden);
  EXPECT_EQ(c.text.layers, s.t_layers);
  EXPECT_EQ(c.text.heads, s.t_heads);
  EXPECT_EQ(c.text.kv_heads, s.t_kv_heads);
  EXPECT_EQ(c.text.head_dim, s.t_hidden / s.t_heads);
  EXPECT_EQ(c.text.intermediate, s.t_ffn);
  EXPECT_EQ(c.text.vocab, s.vocab);
  EXPECT_EQ(c.text.max_position, s.max_pos);
  EXPECT_FLOAT_EQ(c.text.rope_theta, static_cast<float>(s.rope_theta));
  EXPECT_FLOAT_EQ(c.text.rms_eps, static_cast<float>(s.rms_eps));
  EXPECT_FALSE(c.text.tie_embeddings);
  EXPECT_EQ(c.projector.type, "mlp2x_gelu");
  EXPECT_EQ(c.projector.in, s.v_hidden);
  EXPECT_EQ(c.projector.hidden, s.t_hidden);
  EXPECT_EQ(c.projector.out, s.t_hidden);
  EXPECT_EQ(c.generation.bos_token_id, s.bos);
  EXPECT_EQ(c.generation.eos_token_ids, std::vector<int64_t>{s.eos});
}

// Opens and validates; returns the checkpoint.
models::Checkpoint open_ok(const std::string& dir, const models::LoadOptions& opts = {}) {
  models::Checkpoint ck;
  try {
    ck = models::open_checkpoint(dir, opts);
  } catch (const std::exception& e) {
    ADD_FAILURE() << dir << ": " << e.what();
  }
  return ck;
}

std::string config_error(const std::string& dir, const models::LoadOptions& opts = {}) {
  try {
    models::open_checkpoint(dir, opts);
  } catch (const ConfigError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("(not a ConfigError) ") + e.what();
  }
  return "";
}

// ---------------------------------------------------------------------------------------
// Every bundled layout.

class OrigLayout : public ::testing::TestWithParam<const char*> {};

TEST_P(OrigLayout, SeparateTowerDirFromMmVisionTower) {
  const std::string name = std::string("llava_orig_") + GetParam();
  models::Checkpoint ck = open_ok(tiny(name));
  const models::ModelConfig& c = ck.config;
  EXPECT_EQ(c.layout, Layout::LlavaOrig);
  EXPECT_STREQ(models::layout_name(c.layout), "llava-orig");
  EXPECT_TRUE(c.has_vision);
  expect_vision_dims(c.vision);
  expect_text_dims(c);
  EXPECT_EQ(c.image_token_index, -200);
  EXPECT_EQ(c.names.text_prefix, "model.");
  EXPECT_EQ(c.names.lm_head, "lm_head.weight");
  EXPECT_EQ(c.names.proj1_prefix, "model.mm_projector.0.");
  EXPECT_EQ(c.names.proj2_prefix, "model.mm_projector.2.");
  EXPECT_EQ(c.names.vision_prefix, "vision_model.");
  // The tower lives in ../clip_vision_<dtype>, resolved relative to the weights dir.
  EXPECT_EQ(fs::canonical(c.vision_weights_dir),
            fs::canonical(tiny(std::string("clip_vision_") + GetParam())));
  ASSERT_TRUE(ck.text_store && ck.vision_store);
  EXPECT_NE(ck.text_store.get(), ck.vision_store.get());
  EXPECT_TRUE(models::checkpoint_problems(ck).empty());
  EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
}
INSTANTIATE_TEST_SUITE_P(Dtypes, OrigLayout, ::testing::Values("fp32", "bf16", "fp16"));

TEST(Config, OrigWithEmbeddedTower) {
  models::Checkpoint ck = open_ok(tiny("llava_orig_with_vt_fp32"));
  const models::ModelConfig& c = ck.config;
  EXPECT_EQ(c.layout, Layout::LlavaOrig);
  expect_vision_dims(c.vision);
  expect_text_dims(c);
  // The embedded tower wins over the mm_vision_tower directory (which only supplies dims).
  EXPECT_EQ(c.names.vision_prefix, "model.vision_tower.vision_tower.vision_model.");
  EXPECT_EQ(ck.text_store.get(), ck.vision_store.get());
  EXPECT_EQ(c.vision_weights_dir, c.weights_dir);
  EXPECT_NE(c.vision_tower_source.find("embedded"), std::string::npos);
  EXPECT_TRUE(models::checkpoint_problems(ck).empty());
}

class HfLayout : public ::testing::TestWithParam<const char*> {};

TEST_P(HfLayout, Loads) {
  const std::string name = std::string("llava_hf_") + GetParam();
  models::Checkpoint ck = open_ok(tiny(name));
  const models::ModelConfig& c = ck.config;
  EXPECT_EQ(c.layout, Layout::LlavaHf);
  EXPECT_STREQ(models::layout_name(c.layout), "llava-hf");
  expect_vision_dims(c.vision);
  expect_text_dims(c);
  EXPECT_EQ(c.image_token_index, golden_sizes().image_token_index_hf);
  EXPECT_EQ(c.names.text_prefix, "language_model.model.");
  EXPECT_EQ(c.names.lm_head, "language_model.lm_head.weight");
  EXPECT_EQ(c.names.proj1_prefix, "multi_modal_projector.linear_1.");
  EXPECT_EQ(c.names.vision_prefix, "vision_tower.vision_model.");
  EXPECT_EQ(ck.text_store.get(), ck.vision_store.get());
  EXPECT_NE(c.preprocessor_source.find("preprocessor_config.json"), std::string::npos);
  EXPECT_TRUE(models::checkpoint_problems(ck).empty());
}
INSTANTIATE_TEST_SUITE_P(Dtypes, HfLayout, ::testing::Values("fp32", "bf16", "fp16"));

class ClipVisionLayout : public ::testing::TestWithParam<const char*> {};

TEST_P(ClipVisionLayout, Loads) {
  models::Checkpoint ck = open_ok(tiny(std::string("clip_vision_") + GetParam()));
  const models::ModelConfig& c = ck.config;
  EXPECT_EQ(c.layout, Layout::ClipVision);
  EXPECT_TRUE(c.has_vision);
  EXPECT_FALSE(c.has_text);
  EXPECT_EQ(ck.text_store, nullptr);
  ASSERT_NE(ck.vision_store, nullptr);
  EXPECT_EQ(c.names.vision_prefix, "vision_model.");
  expect_vision_dims(c.vision);
  EXPECT_TRUE(models::checkpoint_problems(ck).empty());
}
INSTANTIATE_TEST_SUITE_P(Dtypes, ClipVisionLayout, ::testing::Values("fp32", "bf16", "fp16"));

TEST(Config, ClipFullPicksVisionModel) {
  models::Checkpoint ck = open_ok(tiny("clip_full_fp32"));
  const models::ModelConfig& c = ck.config;
  EXPECT_EQ(c.layout, Layout::ClipFull);
  EXPECT_FALSE(c.has_text);
  EXPECT_EQ(c.names.vision_prefix, "vision_model.");
  expect_vision_dims(c.vision);  // from vision_config, not text_config (hidden 32)
  EXPECT_TRUE(models::checkpoint_problems(ck).empty());
}

TEST(Config, ExpectedTensorsCoverEveryUsedTensorOfTheTinyModel) {
  // Every tensor of llava_orig_with_vt_fp32 except post_layernorm is expected, with its shape.
  models::Checkpoint ck = open_ok(tiny("llava_orig_with_vt_fp32"));
  std::vector<models::ExpectedTensor> want = models::expected_tensors(ck.config);
  size_t not_expected = 0;
  for (const std::string& name : ck.text_store->names()) {
    bool found = false;
    for (const auto& e : want) found |= e.name == name;
    if (!found) {
      ++not_expected;
      EXPECT_NE(name.find("post_layernorm"), std::string::npos) << name;
    }
  }
  EXPECT_EQ(not_expected, 2u);
  EXPECT_EQ(want.size() + 2, ck.text_store->names().size());
  // The last vision layer is validated but never run (select_layer -2).
  for (const auto& e : want) {
    if (e.name.find("encoder.layers.1.") != std::string::npos) {
      EXPECT_FALSE(e.used) << e.name;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Sharded checkpoint and layout variants made by the tests.

TEST(Config, ShardedCopyMatchesSingleFile) {
  TempDir tmp;
  for (const char* name : {"llava_hf_fp32", "llava_orig_with_vt_fp32", "clip_vision_bf16"}) {
    const std::string dir = make_sharded_copy(tmp, name, name);
    models::Checkpoint sharded = open_ok(dir);
    models::Checkpoint single = open_ok(tiny(name));
    ASSERT_TRUE(sharded.vision_store);
    EXPECT_EQ(sharded.vision_store->files().size(), 2u) << name;
    EXPECT_EQ(sharded.config.layout, single.config.layout);
    EXPECT_EQ(sharded.config.vision.hidden, single.config.vision.hidden);
    EXPECT_EQ(sharded.config.vision.layers, single.config.vision.layers);
    EXPECT_EQ(sharded.config.text.vocab, single.config.text.vocab);
    EXPECT_EQ(sharded.config.text.layers, single.config.text.layers);
    EXPECT_TRUE(models::checkpoint_problems(sharded).empty()) << name;
  }
}

TEST(Config, HfNewNamesAreDetected) {
  // transformers >= 4.52 serializes model.language_model.*, model.vision_tower.*,
  // model.multi_modal_projector.* and lm_head.weight.
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, "llava_hf_fp32", [](json&) {});
  edit_tensors(dir, [](std::vector<TensorCopy>& ts) {
    for (auto& t : ts) {
      auto swap_prefix = [&](const std::string& from, const std::string& to) {
        if (t.name.rfind(from, 0) == 0) t.name = to + t.name.substr(from.size());
      };
      swap_prefix("language_model.model.", "model.language_model.");
      swap_prefix("language_model.lm_head.", "lm_head.");
      swap_prefix("vision_tower.", "model.vision_tower.");
      swap_prefix("multi_modal_projector.", "model.multi_modal_projector.");
    }
  });
  models::Checkpoint ck = open_ok(dir);
  EXPECT_EQ(ck.config.layout, Layout::LlavaHf);
  EXPECT_EQ(ck.config.names.text_prefix, "model.language_model.");
  EXPECT_EQ(ck.config.names.lm_head, "lm_head.weight");
  EXPECT_EQ(ck.config.names.proj1_prefix, "model.multi_modal_projector.linear_1.");
  EXPECT_EQ(ck.config.names.vision_prefix, "model.vision_tower.vision_model.");
  expect_text_dims(ck.config);
  EXPECT_TRUE(models::checkpoint_problems(ck).empty());
}

TEST(Config, HfTextConfigDefaultsAreLlamaConfigDefaults) {
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, "llava_hf_fp32", [](json& c) {
    c["text_config"].erase("rms_norm_eps");
    c["text_config"].erase("rope_theta");
    c["text_config"].erase("max_position_embeddings");
  });
  models::ModelConfig c = models::load_model_config(dir);
  EXPECT_FLOAT_EQ(c.text.rms_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c.text.rope_theta, 10000.f);
  EXPECT_EQ(c.text.max_position, 2048);
  EXPECT_EQ(c.text.hidden, golden_sizes().t_hidden);
}

TEST(Config, HfMissingKvHeadsDefaultsToHeadsAndShapesDisagree) {
  TempDir tmp;
  const std::string dir =
      copy_with_config(tmp, "llava_hf_fp32", [](json& c) { c["text_config"].erase("num_key_value_heads"); });
  std::string err = config_error(dir);
  EXPECT_NE(err.find("self_attn.k_proj.weight' has shape [32,64], expected [64,64]"), std::string::npos)
      << err;
}

TEST(Config, TiedEmbeddingsUseEmbedTokensAsLmHead) {
  TempDir tmp;
  const std::string dir =
      copy_with_config(tmp, "llava_hf_fp32", [](json& c) { c["text_config"]["tie_word_embeddings"] = true; });
  edit_tensors(dir, [](std::vector<TensorCopy>& ts) {
    std::erase_if(ts, [](const TensorCopy& t) { return t.name == "language_model.lm_head.weight"; });
  });
  models::Checkpoint ck = open_ok(dir);
  EXPECT_TRUE(ck.config.text.tie_embeddings);
  EXPECT_EQ(ck.config.names.lm_head, "language_model.model.embed_tokens.weight");
}

TEST(Config, VocabComesFromEmbedTokensRows) {
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, "llava_orig_fp32", [](json& c) { c["vocab_size"] = 1000; });
  models::Checkpoint ck = open_ok(dir);
  EXPECT_EQ(ck.config.text.vocab, golden_sizes().vocab);
  ASSERT_EQ(ck.config.warnings.size(), 1u);
  EXPECT_NE(ck.config.warnings[0].find("vocab_size = 1000"), std::string::npos) << ck.config.warnings[0];
}

TEST(Config, GenerationConfigEosListAndFallbackToConfigJson) {
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, "llava_orig_fp32", [](json&) {});
  write_json(dir + "/generation_config.json", json{{"bos_token_id", 7}, {"eos_token_id", {2, 9}}});
  models::ModelConfig c = models::load_model_config(dir);
  EXPECT_EQ(c.generation.bos_token_id, 7);
  EXPECT_EQ(c.generation.eos_token_ids, (std::vector<int64_t>{2, 9}));
  fs::remove(dir + "/generation_config.json");
  c = models::load_model_config(dir);
  EXPECT_EQ(c.generation.bos_token_id, golden_sizes().bos);
  EXPECT_EQ(c.generation.eos_token_ids, std::vector<int64_t>{golden_sizes().eos});
}

TEST(Config, PreprocessorIntForms) {
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, "clip_vision_fp32", [](json&) {});
  write_json(dir + "/preprocessor_config.json", json{{"size", 64},
                                                     {"crop_size", 56},
                                                     {"image_mean", {0.5, 0.5, 0.5}},
                                                     {"image_std", {0.25, 0.25, 0.25}}});
  models::ModelConfig c = models::load_model_config(dir);
  EXPECT_EQ(c.vision.resize_shortest_edge, 64);
  EXPECT_EQ(c.vision.crop_size, 56);
  EXPECT_FLOAT_EQ(c.vision.image_mean[1], 0.5f);
  EXPECT_FLOAT_EQ(c.vision.image_std[2], 0.25f);
  EXPECT_EQ(c.vision.pad_background[0], 127);  // int(0.5 * 255)
}

// ---------------------------------------------------------------------------------------
// The real checkpoint's situation: the tower named by hub id.

TEST(Config, PresetForClipL336) {
  const models::VisionConfig* p = models::vision_preset("openai/clip-vit-large-patch14-336");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->hidden, 1024);
  EXPECT_EQ(p->intermediate, 4096);
  EXPECT_EQ(p->layers, 24);
  EXPECT_EQ(p->heads, 16);
  EXPECT_EQ(p->image_size, 336);
  EXPECT_EQ(p->patch_size, 14);
  EXPECT_EQ(p->num_patches(), 576);
  EXPECT_EQ(p->layers_to_run(), 23);
  EXPECT_EQ(p->hidden_act, "quick_gelu");
  EXPECT_FLOAT_EQ(p->ln_eps, 1e-5f);
  EXPECT_FLOAT_EQ(p->image_mean[0], 0.48145466f);
  EXPECT_FLOAT_EQ(p->image_std[0], 0.26862954f);
  // A local path ending in the repo name finds it too; an unknown id does not.
  EXPECT_EQ(models::vision_preset("/data/models/clip-vit-large-patch14-336/"), p);
  EXPECT_EQ(models::vision_preset("someone/some-vit"), nullptr);
}

std::string hub_id_checkpoint(const TempDir& tmp, const std::string& tiny_name) {
  return copy_with_config(tmp, tiny_name,
                          [](json& c) { c["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"; });
}

TEST(Config, HubIdTowerNeedsVisionWeights) {
  TempDir tmp;
  const std::string dir = hub_id_checkpoint(tmp, "llava_orig_fp32");
  std::string err = config_error(dir);
  EXPECT_NE(err.find("openai/clip-vit-large-patch14-336"), std::string::npos) << err;
  EXPECT_NE(err.find("--vision-weights"), std::string::npos) << err;
  EXPECT_NE(err.find("config.json"), std::string::npos) << err;
}

TEST(Config, HubIdTowerWithVisionWeightsDir) {
  TempDir tmp;
  const std::string dir = hub_id_checkpoint(tmp, "llava_orig_fp32");
  models::LoadOptions opts;
  opts.vision_weights_dir = tiny("clip_vision_fp32");
  models::Checkpoint ck = open_ok(dir, opts);
  expect_vision_dims(ck.config.vision);  // from that dir's config.json
  expect_text_dims(ck.config);
  EXPECT_NE(ck.config.vision_tower_source.find("--vision-weights"), std::string::npos);
}

TEST(Config, HubIdTowerWithoutTowerConfigUsesPresetAndShapes) {
  // The vision dir holds only weights: dims come from the preset, overridden by what the
  // shapes tell (hidden, patch, image size, layers, intermediate); heads stay the preset's.
  TempDir tmp;
  const std::string dir = hub_id_checkpoint(tmp, "llava_orig_fp32");
  const std::string vdir = tmp.sub("weights_only_tower");
  fs::copy_file(tiny("clip_vision_fp32") + "/model.safetensors", vdir + "/model.safetensors");
  models::LoadOptions opts;
  opts.vision_weights_dir = vdir;
  models::Checkpoint ck = open_ok(dir, opts);
  const models::VisionConfig& v = ck.config.vision;
  const Sizes& s = golden_sizes();
  EXPECT_EQ(v.hidden, s.v_hidden);
  EXPECT_EQ(v.intermediate, s.v_ffn);
  EXPECT_EQ(v.layers, s.v_layers);
  EXPECT_EQ(v.image_size, s.image_size);
  EXPECT_EQ(v.patch_size, s.patch);
  EXPECT_EQ(v.heads, 16);  // preset: shapes cannot tell
  EXPECT_NE(ck.config.vision_config_source.find("preset"), std::string::npos);
  bool warned = false;
  for (const auto& w : ck.config.warnings) warned |= w.find("says hidden_size 1024") != std::string::npos;
  EXPECT_TRUE(warned);

  // --vision-config overrides the preset (a CLIPVisionConfig, or a CLIPModel's vision_config).
  for (const char* cfg_dir : {"clip_vision_fp32", "clip_full_fp32"}) {
    opts.vision_config_dir = tiny(cfg_dir);
    models::Checkpoint ck2 = open_ok(dir, opts);
    expect_vision_dims(ck2.config.vision);
    EXPECT_NE(ck2.config.vision_config_source.find("--vision-config"), std::string::npos);
  }
}

TEST(Config, HubIdWithEmbeddedTowerLikeTheRealCheckpoint) {
  TempDir tmp;
  const std::string dir = hub_id_checkpoint(tmp, "llava_orig_with_vt_fp32");
  models::Checkpoint ck = open_ok(dir);
  EXPECT_EQ(ck.config.vision.hidden, golden_sizes().v_hidden);
  EXPECT_EQ(ck.config.vision.heads, 16);
  models::LoadOptions opts;
  opts.vision_config_dir = tiny("clip_vision_fp32");
  models::Checkpoint ck2 = open_ok(dir, opts);
  expect_vision_dims(ck2.config.vision);
  EXPECT_EQ(ck2.config.names.vision_prefix, "model.vision_tower.vision_tower.vision_model.");
}

TEST(Config, RealShapedCheckpointUsesPresetAndShapes) {
  // tennant/llava-llama-3-8b-hqedit as SPEC 1-2 describe it (sparse files: no data).
  TempDir tmp;
  for (int64_t vocab : {128256, 128257}) {
    const std::string dir = make_real_shaped_checkpoint(tmp, "real" + std::to_string(vocab), vocab);
    models::Checkpoint ck = open_ok(dir);
    const models::ModelConfig& c = ck.config;
    EXPECT_EQ(c.layout, Layout::LlavaOrig);
    EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
    EXPECT_NE(c.vision_config_source.find("preset openai/clip-vit-large-patch14-336"), std::string::npos);
    EXPECT_EQ(c.names.vision_prefix, "model.vision_tower.vision_tower.vision_model.");
    EXPECT_EQ(c.vision.hidden, 1024);
    EXPECT_EQ(c.vision.intermediate, 4096);
    EXPECT_EQ(c.vision.layers, 24);
    EXPECT_EQ(c.vision.layers_to_run(), 23);
    EXPECT_EQ(c.vision.heads, 16);
    EXPECT_EQ(c.vision.image_size, 336);
    EXPECT_EQ(c.vision.num_patches(), 576);
    EXPECT_EQ(c.vision.resize_shortest_edge, 336);
    EXPECT_EQ(c.vision.crop_size, 336);
    EXPECT_EQ(c.text.hidden, 4096);
    EXPECT_EQ(c.text.intermediate, 14336);
    EXPECT_EQ(c.text.layers, 32);
    EXPECT_EQ(c.text.heads, 32);
    EXPECT_EQ(c.text.kv_heads, 8);
    EXPECT_EQ(c.text.head_dim, 128);
    EXPECT_EQ(c.text.vocab, vocab);  // from embed_tokens (config says the same here)
    EXPECT_FLOAT_EQ(c.text.rope_theta, 500000.f);
    EXPECT_EQ(c.projector.in, 1024);
    EXPECT_EQ(c.projector.out, 4096);
    EXPECT_EQ(c.generation.bos_token_id, 128000);
    EXPECT_EQ(c.generation.eos_token_ids, (std::vector<int64_t>{128001, 128009}));
    EXPECT_EQ(c.text_dtype, "bfloat16");
    EXPECT_EQ(ck.text_store->files().size(), 4u);
  }
}

TEST(Config, UnknownHubIdTowerWithoutConfigAsksForVisionConfig) {
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, "llava_orig_with_vt_fp32",
                                           [](json& c) { c["mm_vision_tower"] = "someone/mystery-vit"; });
  std::string err = config_error(dir);
  EXPECT_NE(err.find("num_attention_heads"), std::string::npos) << err;
  EXPECT_NE(err.find("--vision-config"), std::string::npos) << err;
}

// ---------------------------------------------------------------------------------------
// Unsupported values: each names the file, the key and the value.

struct BadValue {
  const char* tiny_name;
  const char* key;            // top-level key, or "a.b" for a nested one
  const char* value_json;     // new value
  const char* expect_in_msg;  // "<key> = <value>"
};

class UnsupportedValue : public ::testing::TestWithParam<BadValue> {};

TEST_P(UnsupportedValue, NamesFileKeyAndValue) {
  const BadValue& b = GetParam();
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, b.tiny_name, [&](json& c) {
    std::string key = b.key;
    json value = json::parse(b.value_json);
    if (auto dot = key.find('.'); dot != std::string::npos)
      c[key.substr(0, dot)][key.substr(dot + 1)] = value;
    else
      c[key] = value;
  });
  std::string err = config_error(dir);
  EXPECT_NE(err.find(dir + "/config.json"), std::string::npos) << err;
  EXPECT_NE(err.find(b.expect_in_msg), std::string::npos) << err;
  EXPECT_EQ(err.find("(not a ConfigError)"), std::string::npos) << err;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, UnsupportedValue,
    ::testing::Values(
        BadValue{"llava_orig_fp32", "mm_projector_type", "\"linear\"", "mm_projector_type = \"linear\""},
        BadValue{"llava_orig_fp32", "mm_projector_type", "\"mlp3x_gelu\"",
                 "mm_projector_type = \"mlp3x_gelu\""},
        BadValue{"llava_orig_fp32", "mm_vision_select_feature", "\"cls_patch\"",
                 "mm_vision_select_feature = \"cls_patch\""},
        BadValue{"llava_orig_fp32", "image_aspect_ratio", "\"anyres\"", "image_aspect_ratio = \"anyres\""},
        BadValue{"llava_orig_fp32", "image_aspect_ratio", "null", "image_aspect_ratio = (absent)"},
        BadValue{"llava_orig_fp32", "mm_use_im_start_end", "true", "mm_use_im_start_end = true"},
        BadValue{"llava_orig_fp32", "mm_patch_merge_type", "\"spatial_unpad\"",
                 "mm_patch_merge_type = \"spatial_unpad\""},
        BadValue{"llava_orig_fp32", "hidden_act", "\"gelu\"", "hidden_act = \"gelu\""},
        BadValue{"llava_orig_fp32", "rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}",
                 "rope_scaling = {"},
        BadValue{"llava_orig_fp32", "attention_bias", "true", "attention_bias = true"},
        BadValue{"llava_orig_fp32", "architectures", "[\"LlavaMistralForCausalLM\"]",
                 "architectures = [\"LlavaMistralForCausalLM\"]"},
        BadValue{"llava_orig_fp32", "hidden_size", "\"big\"", "hidden_size = \"big\": expected an integer"},
        BadValue{"llava_hf_fp32", "projector_hidden_act", "\"relu\"", "projector_hidden_act = \"relu\""},
        BadValue{"llava_hf_fp32", "vision_feature_select_strategy", "\"full\"",
                 "vision_feature_select_strategy = \"full\""},
        BadValue{"llava_hf_fp32", "text_config.hidden_act", "\"gelu\"", "text_config.hidden_act = \"gelu\""},
        BadValue{"llava_hf_fp32", "text_config.model_type", "\"mistral\"",
                 "text_config.model_type = \"mistral\""},
        BadValue{"llava_hf_fp32", "vision_config.hidden_act", "\"gelu\"",
                 "vision_config.hidden_act = \"gelu\""},
        BadValue{"clip_vision_fp32", "hidden_act", "\"gelu\"", "hidden_act = \"gelu\""},
        BadValue{"clip_full_fp32", "vision_config.hidden_act", "\"gelu\"",
                 "vision_config.hidden_act = \"gelu\""}));

TEST(ConfigErrors, MissingDirectory) {
  std::string err = config_error("/nonexistent/recap/model");
  EXPECT_NE(err.find("/nonexistent/recap/model"), std::string::npos) << err;
  EXPECT_NE(err.find("does not exist"), std::string::npos) << err;
}

TEST(ConfigErrors, MissingConfigJson) {
  TempDir tmp;
  const std::string dir = tmp.sub("empty");
  std::string err = config_error(dir);
  EXPECT_NE(err.find(dir + "/config.json: missing"), std::string::npos) << err;
}

TEST(ConfigErrors, MalformedConfigJson) {
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, "llava_orig_fp32", [](json&) {});
  write_text(dir + "/config.json", "{\"architectures\": [\"LlavaLlamaForCausalLM\"], ");
  std::string err = config_error(dir);
  EXPECT_NE(err.find(dir + "/config.json: malformed JSON"), std::string::npos) << err;
}

TEST(ConfigErrors, MissingSafetensors) {
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, "llava_orig_fp32", [](json&) {});
  fs::remove(dir + "/model.safetensors");
  std::string err;
  try {
    models::load_model_config(dir);
  } catch (const std::exception& e) {
    err = e.what();
  }
  EXPECT_NE(err.find(dir), std::string::npos) << err;
  EXPECT_NE(err.find("safetensors"), std::string::npos) << err;
}

TEST(ConfigErrors, MmVisionTowerPathMissing) {
  TempDir tmp;
  const std::string dir =
      copy_with_config(tmp, "llava_orig_fp32", [](json& c) { c["mm_vision_tower"] = "./no_such_tower"; });
  std::string err = config_error(dir);
  EXPECT_NE(err.find(dir + "/no_such_tower"), std::string::npos) << err;
  EXPECT_NE(err.find("does not exist"), std::string::npos) << err;
}

TEST(ConfigErrors, VisionWeightsDirMissingOrNotClip) {
  models::LoadOptions opts;
  opts.vision_weights_dir = "/nonexistent/tower";
  std::string err = config_error(tiny("llava_orig_fp32"), opts);
  EXPECT_NE(err.find("/nonexistent/tower"), std::string::npos) << err;
  opts.vision_weights_dir = tiny("llava_orig_fp32");  // a dir with no CLIP tensors
  err = config_error(tiny("llava_orig_fp32"), opts);
  EXPECT_NE(err.find("no CLIP vision tensors"), std::string::npos) << err;
}

TEST(ConfigErrors, VisionConfigDirMissing) {
  models::LoadOptions opts;
  opts.vision_config_dir = "/nonexistent/vcfg";
  std::string err = config_error(tiny("llava_orig_fp32"), opts);
  EXPECT_NE(err.find("/nonexistent/vcfg"), std::string::npos) << err;
}

TEST(ConfigErrors, PreprocessorCropMustMatchImageSize) {
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, "llava_hf_fp32", [](json&) {});
  json p = read_json(dir + "/preprocessor_config.json");
  p["crop_size"] = json{{"height", 48}, {"width", 48}};
  write_json(dir + "/preprocessor_config.json", p);
  std::string err = config_error(dir);
  EXPECT_NE(err.find(dir + "/preprocessor_config.json: unsupported crop_size"), std::string::npos) << err;
}

TEST(ConfigErrors, KvHeadsMustDivideHeads) {
  TempDir tmp;
  const std::string dir =
      copy_with_config(tmp, "llava_orig_fp32", [](json& c) { c["num_key_value_heads"] = 3; });
  std::string err = config_error(dir);
  EXPECT_NE(err.find("num_key_value_heads = 3"), std::string::npos) << err;
}

// ---------------------------------------------------------------------------------------
// Tensor validation.

TEST(Validation, MissingTensor) {
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, "llava_orig_with_vt_fp32", [](json&) {});
  edit_tensors(dir, [](std::vector<TensorCopy>& ts) {
    std::erase_if(ts, [](const TensorCopy& t) {
      return t.name == "model.layers.1.mlp.down_proj.weight" ||
             t.name == "model.vision_tower.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.bias";
    });
  });
  models::Checkpoint ck = models::open_checkpoint_unchecked(dir);
  std::vector<std::string> problems = models::checkpoint_problems(ck);
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_NE(problems[0].find(
                "missing tensor 'model.vision_tower.vision_tower.vision_model.encoder.layers.0.self_attn."
                "q_proj.bias'"),
            std::string::npos)
      << problems[0];
  EXPECT_NE(problems[1].find("missing tensor 'model.layers.1.mlp.down_proj.weight'"), std::string::npos)
      << problems[1];
  std::string err = config_error(dir);
  EXPECT_NE(err.find("2 problems"), std::string::npos) << err;
  EXPECT_NE(err.find("model.layers.1.mlp.down_proj.weight"), std::string::npos) << err;
}

TEST(Validation, WrongShape) {
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, "llava_hf_fp32", [](json&) {});
  edit_tensors(dir, [](std::vector<TensorCopy>& ts) {
    for (auto& t : ts)
      if (t.name == "multi_modal_projector.linear_2.weight") {
        t.shape = {32, 128};  // same bytes, wrong shape
      }
  });
  std::string err = config_error(dir);
  EXPECT_NE(err.find("tensor 'multi_modal_projector.linear_2.weight' has shape [32,128], expected [64,64]"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("model.safetensors"), std::string::npos) << err;
}

TEST(Validation, WrongDtype) {
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, "clip_vision_fp32", [](json&) {});
  edit_tensors(dir, [](std::vector<TensorCopy>& ts) {
    for (auto& t : ts)
      if (t.name == "vision_model.pre_layrnorm.weight") t.dtype = io::DType::I32;
  });
  std::string err = config_error(dir);
  EXPECT_NE(err.find("tensor 'vision_model.pre_layrnorm.weight' has dtype I32; expected F32, F16 or BF16"),
            std::string::npos)
      << err;
}

TEST(Validation, ConfigDimsDisagreeWithTowerShapes) {
  // An explicit config wins over shapes; validation reports every disagreement.
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, "clip_vision_fp32", [](json& c) { c["image_size"] = 112; });
  fs::remove(dir + "/preprocessor_config.json");
  std::string err = config_error(dir);
  EXPECT_NE(err.find("embeddings.position_embedding.weight' has shape [17,64], expected [65,64]"),
            std::string::npos)
      << err;
}

}  // namespace
