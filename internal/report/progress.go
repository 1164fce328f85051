package report

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress is a progress bar over a run whose length is known either in
// steps or in wall-clock time. Its status text carries the run's live
// numbers (loss, tokens/s); the bar itself shows the elapsed time and ETA.
// On a terminal the bar redraws in place; written anywhere else (a file, a
// pipe, a CI log) it prints a plain line every plainInterval (5 s) instead, and
// one when it finishes, so a log holds lines, not carriage-return redraws.
type Progress struct {
	bar   *progressbar.ProgressBar // nil when plain
	total int64
	w     io.Writer // nil when silent

	// Plain lines.
	desc     string
	fraction float64
	status   string
	start    time.Time
	printed  time.Time // when the last plain line was printed
	now      func() time.Time
}

// progressTicks is the bar's resolution: runs report a fraction of their
// length, so steps and time budgets share one bar.
const progressTicks = 1000

// plainInterval is how often a progress bar that is not on a terminal
// prints a line.
const plainInterval = 5 * time.Second

// NewProgress starts a bar titled desc on w (usually os.Stderr). A nil w
// gives a silent bar, for -json runs and tests. When w is not a terminal
// the bar prints plain lines (see Progress).
func NewProgress(w io.Writer, desc string) *Progress {
	if w != nil && !IsTerminal(w) {
		return newPlainProgress(w, desc, time.Now)
	}
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

func newPlainProgress(w io.Writer, desc string, now func() time.Time) *Progress {
	t := now()
	return &Progress{w: w, desc: desc, start: t, printed: t, now: now}
}

// IsTerminal reports whether f, a reader or writer, is an *os.File on a
// character device (a terminal) rather than a pipe, a file or a buffer.
func IsTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	st, err := file.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// ClearLine erases the current line of w when w is a terminal, so that a
// message printed next starts at the left margin rather than after an
// unfinished progress bar (a run that fails mid-bar never calls Finish).
// Elsewhere it writes nothing: plain progress lines end in a newline.
func ClearLine(w io.Writer) {
	if IsTerminal(w) {
		fmt.Fprint(w, "\r\x1b[K")
	}
}

// Update moves the bar to fraction (0…1) of the run and sets its status.
func (p *Progress) Update(fraction float64, status string) {
	fraction = min(max(fraction, 0), 1)
	if p.bar == nil {
		p.fraction, p.status = fraction, status
		if t := p.now(); t.Sub(p.printed) >= plainInterval {
			p.printed = t
			p.line(false)
		}
		return
	}
	p.bar.Describe(status)
	_ = p.bar.Set64(int64(fraction * float64(p.total)))
}

// line prints the plain progress line: the title, the fraction, the status
// and the time elapsed (and, before the end, the estimated time left).
func (p *Progress) line(done bool) {
	elapsed := p.now().Sub(p.start)
	eta := ""
	if !done && p.fraction > 0 && p.fraction < 1 {
		left := time.Duration(float64(elapsed) * (1 - p.fraction) / p.fraction)
		eta = fmt.Sprintf(", about %s left", left.Round(time.Second))
	}
	status := ""
	if p.status != "" {
		status = " " + p.status
	}
	fmt.Fprintf(p.w, "%s: %3.0f%%%s [%s%s]\n", p.desc, 100*p.fraction, status, elapsed.Round(time.Second), eta)
}

// Finish completes the bar with a final status and ends its line, so that
// what is printed next starts on a line of its own. (The bar may already
// stand at 100% from Update: the line ends here, not on reaching 100%, or
// the final status would be drawn after that line break.)
func (p *Progress) Finish(status string) {
	if p.bar == nil {
		p.status = status
		p.line(true)
		return
	}
	p.bar.Describe(status)
	_ = p.bar.Finish()
	if p.w != nil {
		_, _ = io.WriteString(p.w, "\n")
	}
}
