package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
)

// result is everything the tour measured; -json prints it.
type result struct {
	Attention attentionResult `json:"attention"`
	Pretrain  pretrainResult  `json:"pretrain"`
	Quant     quantResult     `json:"quant"`
	LoRA      loraResult      `json:"lora"`
	Table     []tableRow      `json:"table"`
	Out       string          `json:"out,omitempty"`
}

// tableRow is one line of the before/after table.
type tableRow struct {
	Technique string  `json:"technique"`
	Metric    string  `json:"metric"`
	Before    string  `json:"before"`
	After     string  `json:"after"`
	Ratio     float64 `json:"after_over_before"`
}

func table(r *result) []tableRow {
	a, p, q, l := r.Attention, r.Pretrain, r.Quant, r.LoRA
	return []tableRow{
		{"FlashAttention", fmt.Sprintf("causal fwd+bwd time, T=%d", a.T), ms(a.NaiveMS), ms(a.FlashMS), a.FlashMS / a.NaiveMS},
		{"FlashAttention", fmt.Sprintf("heap allocated per pass, T=%d", a.T), size(int64(a.NaiveBytes)), size(int64(a.FlashBytes)), float64(a.FlashBytes) / float64(max(1, a.NaiveBytes))},
		{"data parallel", "pretraining tokens/s (1 → 2 workers)", fmt.Sprintf("%.0f", p.OneWorkerTokS), fmt.Sprintf("%.0f", p.TokS), p.TokS / p.OneWorkerTokS},
		{"int8 quantization", "checkpoint size", size(q.FloatBytes), size(q.Int8Bytes), float64(q.Int8Bytes) / float64(q.FloatBytes)},
		{"int8 quantization", "validation bits/byte", bpb(q.FloatBPB), bpb(q.Int8BPB), q.Int8BPB / q.FloatBPB},
		{"LoRA", "trainable parameters", fmt.Sprint(l.FullParams), fmt.Sprint(l.AdapterParams), float64(l.AdapterParams) / float64(l.FullParams)},
		{"LoRA", "file to deploy (checkpoint → adapter)", size(l.CheckpointBytes), size(l.AdapterBytes), float64(l.AdapterBytes) / float64(l.CheckpointBytes)},
		{"LoRA", strings.TrimSuffix(l.Domain, "/") + " bits/byte (base → adapted)", bpb(l.BaseBPB), bpb(l.AdaptedBPB), l.AdaptedBPB / l.BaseBPB},
	}
}

func printTable(w io.Writer, rows []tableRow) {
	tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "technique\tmetric\tbefore\tafter\tafter/before")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.3g\n", r.Technique, r.Metric, r.Before, r.After, r.Ratio)
	}
	tw.Flush()
}

func ms(v float64) string    { return fmt.Sprintf("%.1f ms", v) }
func bpb(v float64) string   { return fmt.Sprintf("%.3f", v) }
func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }

// size formats a byte count in the largest binary unit it reaches.
func size(b int64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

func fileSize(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
