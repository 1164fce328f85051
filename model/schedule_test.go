package model

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"testing"

	"github.com/galleon-ml/galleon/internal/safetensors"
)

func TestScheduleKindsAndValidation(t *testing.T) {
	cos := Schedule{Peak: 1, Warmup: 2, Total: 12, MinRatio: 0.1}
	for step, want := range map[int]float64{0: 0.5, 1: 1, 2: 1, 7: 0.55, 12: 0.1, 40: 0.1} {
		if got := cos.LR(step); math.Abs(got-want) > 1e-12 {
			t.Errorf("cosine LR(%d) = %v, want %v", step, got, want)
		}
		named := cos
		named.Decay = DecayCosine
		if named.LR(step) != cos.LR(step) {
			t.Errorf("Decay %q differs from the zero value at step %d", DecayCosine, step)
		}
	}
	flat := cos
	flat.Decay = DecayNone
	if flat.LR(0) != 0.5 || flat.LR(7) != 1 || flat.LR(40) != 1 {
		t.Errorf("constant schedule: %v %v %v", flat.LR(0), flat.LR(7), flat.LR(40))
	}
	for _, bad := range []Schedule{{}, {Peak: -1}, {Peak: math.NaN()}, {Peak: math.Inf(1)}, {Peak: 1, Warmup: -1},
		{Peak: 1, Total: -3}, {Peak: 1, MinRatio: 2}, {Peak: 1, Decay: "linear"}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
		if _, err := NewTrainer(testModel(t, nil), TrainConfig{Batch: 1, Schedule: bad, AdamW: DefaultAdamW()}); err == nil {
			t.Errorf("trainer with schedule %+v built", bad)
		}
	}
	if err := flat.Validate(); err != nil {
		t.Error(err)
	}
}

// A cosine run of N steps interrupted after K: the checkpoint carries the
// schedule, and a trainer built from it finishes with the rates, losses and
// weights of N uninterrupted steps, bit for bit. The decay is well under
// way at K, so a resumed run on another schedule would differ.
func TestResumeRestoresCosineSchedule(t *testing.T) {
	const N, K = 10, 6
	cfg := testTrainConfig()
	cfg.Schedule = Schedule{Peak: 3e-3, Warmup: 2, Total: N, MinRatio: 0.1, Decay: DecayCosine}
	text := syntheticText(30000)
	type stepLog struct{ loss, lr float64 }
	run := func(tr *Trainer, s *Sampler, steps int) []stepLog {
		var l []stepLog
		for range steps {
			st, err := tr.Step(context.Background(), s)
			if err != nil {
				t.Fatal(err)
			}
			l = append(l, stepLog{st.Loss, st.LR})
		}
		return l
	}
	m := testModel(t, nil)
	tr, _ := NewTrainer(m, cfg)
	defer tr.Close()
	s, _ := NewSampler(text, m.Config.SeqLen, 4)
	want := run(tr, s, N)

	m2 := testModel(t, nil)
	tr2, _ := NewTrainer(m2, cfg)
	defer tr2.Close()
	s2, _ := NewSampler(text, m2.Config.SeqLen, 4)
	got := run(tr2, s2, K)
	path := filepath.Join(t.TempDir(), "ckpt.safetensors")
	if err := tr2.Save(path, s2.State()); err != nil {
		t.Fatal(err)
	}
	ck, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	if ck.Schedule == nil || *ck.Schedule != cfg.Schedule {
		t.Fatalf("checkpoint schedule %+v, want %+v", ck.Schedule, cfg.Schedule)
	}
	resumed := cfg
	resumed.Schedule = *ck.Schedule
	tr3, err := NewTrainer(ck.Model, resumed)
	if err != nil {
		t.Fatal(err)
	}
	defer tr3.Close()
	if err := tr3.Restore(ck); err != nil {
		t.Fatal(err)
	}
	s3, _ := NewSampler(text, ck.Model.Config.SeqLen, 0)
	if err := s3.SetState(ck.Data); err != nil {
		t.Fatal(err)
	}
	got = append(got, run(tr3, s3, N-K)...)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("step %d: resumed (loss, lr) %v, uninterrupted %v", i+1, got[i], want[i])
		}
	}
	if want[N-1].lr >= want[K].lr || want[K].lr >= cfg.Schedule.Peak {
		t.Fatalf("the test's schedule does not decay across the resume: %v", want)
	}
	for i := range m.Weights.Data {
		if m.Weights.Data[i] != ck.Model.Weights.Data[i] {
			t.Fatalf("weight %d differs after resuming", i)
		}
	}
}

// Checkpoints written before schedules were saved still load, with a nil
// Schedule; a weights-only file has none either.
func TestCheckpointWithoutScheduleLoads(t *testing.T) {
	m := testModel(t, nil)
	tr, _ := NewTrainer(m, testTrainConfig())
	defer tr.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "new.safetensors")
	if err := tr.Save(path, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var sched Schedule
	if err := json.Unmarshal([]byte(f.Metadata[metaSched]), &sched); err != nil || sched != testTrainConfig().Schedule {
		t.Fatalf("saved schedule %q: %v", f.Metadata[metaSched], err)
	}
	delete(f.Metadata, metaSched)
	old := filepath.Join(dir, "old.safetensors")
	if err := safetensors.WriteFile(old, f.Tensors, f.Metadata); err != nil {
		t.Fatal(err)
	}
	ck, err := LoadCheckpoint(old)
	if err != nil {
		t.Fatal(err)
	}
	if ck.Schedule != nil || ck.Step != 0 || ck.M == nil || string(ck.Data) != "\x01\x02\x03" {
		t.Errorf("old checkpoint: schedule %v, step %d, data %v", ck.Schedule, ck.Step, ck.Data)
	}
	weights := filepath.Join(dir, "weights.safetensors")
	if err := m.Save(weights); err != nil {
		t.Fatal(err)
	}
	if ck, err := LoadCheckpoint(weights); err != nil {
		t.Error(err)
	} else if ck.Schedule != nil {
		t.Errorf("weights-only file has schedule %+v", *ck.Schedule)
	}
}
