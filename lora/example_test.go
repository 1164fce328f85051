package lora_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/galleon-ml/galleon/lora"
	"github.com/galleon-ml/galleon/model"
)

// Example adapts every linear layer of a small GPT with rank-8 LoRA, trains
// the adapter for a few steps, saves it in PEFT's format, and loads it onto
// a fresh copy of the base model.
func Example() {
	cfg := model.Config{Vocab: 256, DModel: 64, Layers: 2, Heads: 4, KVHeads: 4, SeqLen: 32, MLPRatio: 4,
		TiedEmbeddings: true, LayerNormEps: 1e-5, Attention: model.AttentionFlash}
	base, err := model.New(cfg, 1)
	if err != nil {
		log.Fatal(err)
	}
	lm, err := lora.Apply(base, lora.Config{R: 8, Alpha: 32, Dropout: 0.1, TargetModules: []string{lora.AllLinear}, Seed: 1})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("base %d weights, adapter %d trainable over %d layers\n", base.NumParams(), lm.TrainableParams(), len(lm.Active().Modules))

	// The trainer sees only the adapter: the base is frozen.
	tr, err := model.NewTrainer(base, model.TrainConfig{Batch: 2, Schedule: model.Schedule{Peak: 1e-3, Total: 3}, AdamW: model.DefaultAdamW()})
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()
	data, err := model.NewSampler([]byte(strings.Repeat("package main\n\nfunc main() {}\n", 20)), cfg.SeqLen, 1)
	if err != nil {
		log.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := tr.Step(context.Background(), data); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println("gradient buffer:", len(tr.Replica.Grad))

	dir, err := os.MkdirTemp("", "adapter")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := lm.Active().Save(dir); err != nil {
		log.Fatal(err)
	}
	fresh, err := model.New(cfg, 1)
	if err != nil {
		log.Fatal(err)
	}
	lm2, err := lora.Wrap(fresh)
	if err != nil {
		log.Fatal(err)
	}
	a, err := lm2.LoadAdapter(dir, "default")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("loaded:", a.Name, "r =", a.Config.R, "scale =", a.Scale())
	// Output:
	// base 118528 weights, adapter 16384 trainable over 8 layers
	// gradient buffer: 16384
	// loaded: default r = 8 scale = 4
}

// ExampleAdapter_Save adapts the query and value projections of a small
// Llama-family model and saves the adapter as PEFT does: short
// target_modules, fan_in_fan_out false and PEFT's tensor names and shapes.
func ExampleAdapter_Save() {
	cfg := model.Config{Family: model.FamilyLlama, ModelType: "llama", Vocab: 64, DModel: 32, Layers: 2, Heads: 4, KVHeads: 2,
		SeqLen: 32, Intermediate: 64, LayerNormEps: 1e-5, RopeTheta: 10000, Attention: model.AttentionFlash}
	base, err := model.New(cfg, 1)
	if err != nil {
		log.Fatal(err)
	}
	lm, err := lora.Apply(base, lora.Config{R: 8, Alpha: 16, TargetModules: []string{"q_proj", "v_proj"}, BaseModel: "HuggingFaceTB/SmolLM2-135M"})
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "adapter")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := lm.Active().Save(dir); err != nil {
		log.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, lora.ConfigFile))
	if err != nil {
		log.Fatal(err)
	}
	var js struct {
		TargetModules []string `json:"target_modules"`
		FanInFanOut   bool     `json:"fan_in_fan_out"`
	}
	if err := json.Unmarshal(raw, &js); err != nil {
		log.Fatal(err)
	}
	fmt.Println("target_modules:", js.TargetModules, "fan_in_fan_out:", js.FanInFanOut)
	a := lm.Active()
	fmt.Println("modules:", len(a.Modules), "first:", a.Modules[0])
	fmt.Println("v_proj lora_B:", a.B("model.layers.0.self_attn.v_proj").Shape) // [out, r]: 2 KV heads of 8
	// Output:
	// target_modules: [q_proj v_proj] fan_in_fan_out: false
	// modules: 4 first: model.layers.0.self_attn.q_proj
	// v_proj lora_B: [16 8]
}
