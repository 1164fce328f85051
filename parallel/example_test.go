package parallel_test

import (
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/parallel"
)

// Three goroutine workers share one model's weights; a global batch of 10
// sequences is split 4, 3, 3 and each worker updates its third of the
// parameters.
func Example() {
	cfg := model.Config{Vocab: 256, DModel: 32, Layers: 1, Heads: 2, KVHeads: 2, SeqLen: 16, MLPRatio: 4,
		TiedEmbeddings: true, LayerNormEps: 1e-5, Attention: model.AttentionFlash}
	m, err := model.New(cfg, 1)
	if err != nil {
		log.Fatal(err)
	}
	tr, err := parallel.New(m, parallel.Config{
		Workers: 3, Batch: 10,
		Schedule: model.Schedule{Peak: 3e-3}, AdamW: model.DefaultAdamW(), ClipNorm: 1,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()
	data, err := model.NewSampler([]byte(strings.Repeat("for i := 0; i < n; i++ {\n\tsum += i\n}\n", 200)), cfg.SeqLen, 1)
	if err != nil {
		log.Fatal(err)
	}
	var first, last float64
	err = tr.Train(context.Background(), data, 8, func(st model.StepStats) {
		if st.Step == 1 {
			first = st.Loss
		}
		last = st.Loss
	})
	if err != nil {
		log.Fatal(err)
	}
	for r := range tr.Ranks() {
		lo, hi := tr.Shard(r)
		fmt.Printf("worker %d updates parameters [%d, %d)\n", r, lo, hi)
	}
	fmt.Println("steps:", tr.StepsDone(), "loss fell:", last < first)
	// Output:
	// worker 0 updates parameters [0, 7168)
	// worker 1 updates parameters [7168, 14336)
	// worker 2 updates parameters [14336, 21472)
	// steps: 8 loss fell: true
}

// Per-rank model state of the ZeRO stages for a 3.3 M-parameter model on
// two ranks.
func ExampleZeROMemory() {
	for stage := range 4 {
		m, err := parallel.ZeROMemory(stage, 2, 3_300_000)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("stage %d: %5.1f MB\n", stage, float64(m.Total())/1e6)
	}
	// Output:
	// stage 0:  52.8 MB
	// stage 1:  39.6 MB
	// stage 2:  33.0 MB
	// stage 3:  26.4 MB
}
