package report

import (
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress is a progress bar over a run whose length is known either in
// steps or in wall-clock time. Its status text carries the run's live
// numbers (loss, tokens/s); the bar itself shows the elapsed time and ETA.
type Progress struct {
	bar   *progressbar.ProgressBar
	total int64
	w     io.Writer // nil when silent
}

// progressTicks is the bar's resolution: runs report a fraction of their
// length, so steps and time budgets share one bar.
const progressTicks = 1000

// NewProgress starts a bar titled desc on w (usually os.Stderr). A nil w
// gives a silent bar, for -json runs and tests.
func NewProgress(w io.Writer, desc string) *Progress {
	opts := []progressbar.Option{
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetWidth(24),
		progressbar.OptionThrottle(200 * time.Millisecond),
		progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionSetRenderBlankState(true),
	}
	if w == nil {
		opts = append(opts, progressbar.OptionSetVisibility(false))
	} else {
		opts = append(opts, progressbar.OptionSetWriter(w))
	}
	return &Progress{bar: progressbar.NewOptions64(progressTicks, opts...), total: progressTicks, w: w}
}

// Update moves the bar to fraction (0…1) of the run and sets its status.
func (p *Progress) Update(fraction float64, status string) {
	fraction = min(max(fraction, 0), 1)
	p.bar.Describe(status)
	_ = p.bar.Set64(int64(fraction * float64(p.total)))
}

// Finish completes the bar with a final status and ends its line, so that
// what is printed next starts on a line of its own. (The bar may already
// stand at 100% from Update: the line ends here, not on reaching 100%, or
// the final status would be drawn after that line break.)
func (p *Progress) Finish(status string) {
	p.bar.Describe(status)
	_ = p.bar.Finish()
	if p.w != nil {
		_, _ = io.WriteString(p.w, "\n")
	}
}
